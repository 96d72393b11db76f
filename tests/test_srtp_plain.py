"""SRTP over plain transports, checked against pylibsrtp's Python API on the
client side (an independent path into libsrtp from the engine's C calls)."""

from __future__ import annotations

import asyncio
import base64
import os

import pylibsrtp
import pytest

import sfu
from conftest import build_rtp, read_rtp, settle

OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}
VP8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}

SUITES = {
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AEAD_AES_256_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
}


class SrtpClient:
    """The remote side: protects with its own key, unprotects with the SFU's."""

    def __init__(self, suite: str, sfu_params: dict) -> None:
        profile, length = SUITES[suite]
        self.key = os.urandom(length)
        self.params = {"cryptoSuite": suite, "keyBase64": base64.b64encode(self.key).decode()}
        self.tx = pylibsrtp.Session(pylibsrtp.Policy(key=self.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                     srtp_profile=profile))
        self.rx = pylibsrtp.Session(pylibsrtp.Policy(key=base64.b64decode(sfu_params["keyBase64"]),
                                                     ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                                     srtp_profile=profile))


@pytest.mark.parametrize("suite", list(SUITES))
async def test_srtp_end_to_end_with_pylibsrtp_clients(worker, router, peers, suite):
    pub_peer, sub_peer = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite=suite)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite=suite)
    assert tp.srtp_parameters["cryptoSuite"] == suite
    pub, sub = SrtpClient(suite, tp.srtp_parameters), SrtpClient(suite, tc.srtp_parameters)
    await tp.connect(ip="127.0.0.1", port=pub_peer.port, srtp_parameters=pub.params)
    await tc.connect(ip="127.0.0.1", port=sub_peer.port, srtp_parameters=sub.params)
    producer = await tp.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 0x1111}]})
    consumer = await tc.consume(producer.id, router.rtp_capabilities)

    # the first packet starts a VP8 keyframe (a new consumer's video starts at one)
    payloads = [(b"\x10\x00" if i == 0 else b"\x00\x01") + os.urandom(1100) for i in range(30)]
    for i, payload in enumerate(payloads):
        pub_peer.send(pub.tx.protect(build_rtp(96, 100 + i, 9000 * i, 0x1111, payload)), tp.tuple["localPort"])
    # A tampered packet fails authentication and is dropped.
    bad = bytearray(pub.tx.protect(build_rtp(96, 200, 1, 0x1111, b"tampered" * 10)))
    bad[20] ^= 0xFF
    pub_peer.send(bytes(bad), tp.tuple["localPort"])
    # Plain RTP on an SRTP transport is dropped too.
    pub_peer.send(build_rtp(96, 201, 1, 0x1111, b"cleartext" * 10), tp.tuple["localPort"])

    await sub_peer.wait_for(30)
    await settle(0.1)
    media = [d for d in sub_peer.received if not 192 <= d[1] <= 223]  # reports are SRTCP
    assert len(media) == 30
    got = [read_rtp(sub.rx.unprotect(d)) for d in media]
    assert [r.payload for r in got] == payloads
    assert {r.ssrc for r in got} == {consumer.rtp_parameters["encodings"][0]["ssrc"]}
    seqs = [r.seq for r in got]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
    # What went over the wire was encrypted.
    assert all(p not in d for p, d in zip(payloads, media))
    counters = await worker.get_counters()
    assert counters["drop_srtp"] == 2


async def test_srtp_suite_follows_remote_and_parameters_are_validated(router, peers):
    peer = peers()
    t = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True)
    with pytest.raises(sfu.InvalidParametersError, match="srtp_parameters: required"):
        await t.connect(ip="127.0.0.1", port=peer.port)
    with pytest.raises(sfu.InvalidParametersError, match="keyBase64"):
        await t.connect(ip="127.0.0.1", port=peer.port,
                        srtp_parameters={"cryptoSuite": "AEAD_AES_128_GCM", "keyBase64": "c2hvcnQ="})
    with pytest.raises(sfu.UnsupportedError, match="NULL_CIPHER"):
        await t.connect(ip="127.0.0.1", port=peer.port,
                        srtp_parameters={"cryptoSuite": "NULL_CIPHER", "keyBase64": "AAAA"})
    client = SrtpClient("AEAD_AES_128_GCM", {"keyBase64": base64.b64encode(b"\0" * 28).decode()})
    await t.connect(ip="127.0.0.1", port=peer.port, srtp_parameters=client.params)
    # The transport switched to the remote's suite with a fresh key of the right size.
    assert t.srtp_parameters["cryptoSuite"] == "AEAD_AES_128_GCM"
    assert len(base64.b64decode(t.srtp_parameters["keyBase64"])) == 28
    plain = await router.create_plain_transport(listen_ip="127.0.0.1")
    with pytest.raises(sfu.InvalidParametersError, match="not enabled"):
        await plain.connect(ip="127.0.0.1", port=peer.port, srtp_parameters=client.params)
    with pytest.raises(sfu.UnsupportedError, match="ROT13"):
        await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite="ROT13")


async def test_reconnect_loop_with_srtp_media_flowing_keeps_the_worker_alive(worker, router, peers):
    """Control calls against the real I/O thread with SRTP media flowing:
    every cycle the publisher's transport is connected again with its other
    key (the engine makes a new inbound context and frees the old one under
    its lock; when Python owned the contexts this crashed the worker with
    SIGSEGV within a few hundred reconnects) and the viewer's with the same
    key (its contexts stay); every 10th cycle the producer and the consumer
    are paused and resumed, every 50th the consumer is closed and made again
    (its SRTP stream state freed while packets flow). A smaller count of the
    100,000-cycle run reported in the notes; tests/test_sanitizers.py runs
    it under ASan."""
    import threading

    suite = "AEAD_AES_128_GCM"
    pub_peer, sub_peer = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite=suite)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite=suite)
    pubs = [SrtpClient(suite, tp.srtp_parameters), SrtpClient(suite, tp.srtp_parameters)]  # two publisher keys
    sub = SrtpClient(suite, tc.srtp_parameters)
    await tp.connect(ip="127.0.0.1", port=pub_peer.port, srtp_parameters=pubs[0].params)
    await tc.connect(ip="127.0.0.1", port=sub_peer.port, srtp_parameters=sub.params)
    producer = await tp.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": 0x2222}]})
    consumer = await tc.consume(producer.id, router.rtp_capabilities)
    died: list[object] = []
    worker.on("died", lambda *a: died.append(a))

    stop = threading.Event()
    sent = [0]
    current = [0]  # the publisher key the SFU was last given
    port = tp.tuple["localPort"]

    cycles = int(os.environ.get("SFU_RECONNECT_CYCLES", "1500"))

    def blast() -> None:  # bounded: stops when told, or after its deadline / packet budget
        import time as _time
        deadline = _time.monotonic() + 60 + cycles / 100
        seq = 0
        # below the first sequence-number wrap: a fresh inbound context
        # assumes rollover counter 0 (RFC 3711 3.3.1)
        while not stop.is_set() and _time.monotonic() < deadline and seq < 60_000:
            head = b"\x10\x00" if seq % 50 == 0 else b"\x00\x01"
            pkt = pubs[current[0]].tx.protect(build_rtp(96, seq, 3000 * (seq // 3), 0x2222, head + bytes(300)))
            pub_peer.sock.sendto(pkt, ("127.0.0.1", port))
            seq += 1
            sent[0] = seq
            if seq % 8 == 0:
                _time.sleep(0.001)

    th = threading.Thread(target=blast, daemon=True)
    th.start()
    try:
        for i in range(cycles):
            current[0] = (i + 1) % 2
            await tp.connect(ip="127.0.0.1", port=pub_peer.port, srtp_parameters=pubs[current[0]].params)
            await tc.connect(ip="127.0.0.1", port=sub_peer.port, srtp_parameters=sub.params)
            if i % 10 == 0:
                await producer.pause()
                await consumer.pause()
                await consumer.resume()
                await producer.resume()
            if i % 50 == 25:
                consumer.close()
                consumer = await tc.consume(producer.id, router.rtp_capabilities)
            assert not died, f"worker died after {i} reconnects"
    finally:
        stop.set()
        th.join(10)
    assert not died and sent[0] > 1000
    # the worker still answers and still forwards
    before = len(sub_peer.received)
    counters = await worker.get_counters()
    assert counters["rx_rtp"] > 0
    for i in range(20):
        head = b"\x10\x00" if i == 0 else b"\x00\x01"
        seq = sent[0] + i  # onward from the blaster's last (an older index is a replay)
        pub_peer.send(pubs[current[0]].tx.protect(build_rtp(96, seq, 3000 * seq, 0x2222, head + bytes(100))), port)
    for _ in range(100):
        if len(sub_peer.received) > before:
            break
        await asyncio.sleep(0.05)
    assert len(sub_peer.received) > before


async def test_consumers_on_one_srtp_transport_through_closes_and_rekeys(worker, router, peers):
    """Several consumers on one SRTP transport (one engine context, a stream
    state per SSRC): the viewer decrypts all of them with the one key its
    transport announced; a consumer closed while media flows leaves the
    others flowing; connect() again with the same suite keeps the key and
    with another suite moves every consumer to the new key, with media
    flowing throughout."""
    import threading

    pub_peer, sub_peer = peers(), peers()
    suite = "AEAD_AES_128_GCM"
    tp = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite=suite)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite=suite)
    pub, sub = SrtpClient(suite, tp.srtp_parameters), SrtpClient(suite, tc.srtp_parameters)
    await tp.connect(ip="127.0.0.1", port=pub_peer.port, srtp_parameters=pub.params)
    await tc.connect(ip="127.0.0.1", port=sub_peer.port, srtp_parameters=sub.params)
    sources = {0x3001: ("video", VP8), 0x3002: ("video", VP8), 0x3003: ("audio", OPUS)}
    consumers = {}
    for ssrc, (kind, codec) in sources.items():
        producer = await tp.produce(kind, {"codecs": [codec], "encodings": [{"ssrc": ssrc}]})
        consumers[ssrc] = await tc.consume(producer.id, router.rtp_capabilities)
    out_ssrc = {ssrc: c.rtp_parameters["encodings"][0]["ssrc"] for ssrc, c in consumers.items()}
    assert len(set(out_ssrc.values())) == 3
    died: list[object] = []
    worker.on("died", lambda *a: died.append(a))

    stop = threading.Event()
    port = tp.tuple["localPort"]

    def blast() -> None:  # bounded: stops when told or after its deadline
        import time as _time
        deadline = _time.monotonic() + 240
        i = 0
        while not stop.is_set() and _time.monotonic() < deadline:
            for ssrc, (kind, codec) in sources.items():
                head = (b"\x10\x00" if i % 30 == 0 else b"\x00\x01") if kind == "video" else b""
                pkt = build_rtp(codec["payloadType"], i & 0xFFFF, 3000 * i, ssrc, head + bytes(200))
                pub_peer.sock.sendto(pub.tx.protect(pkt), ("127.0.0.1", port))
            i += 1
            if i % 8 == 0:
                _time.sleep(0.002)

    # Received media in arrival order, each packet decrypted with the first of
    # the viewer's keys (in the order they were announced) that authenticates
    # it; per SSRC, never with a key older than the one its previous packet
    # used.
    rx_sessions = [sub.rx]
    decrypted: list[tuple[int, int]] = []  # (key index, ssrc)
    last_key: dict[int, int] = {}
    done = [0]

    def decrypt_new() -> None:
        media = [d for d in sub_peer.received if not 192 <= d[1] <= 223]
        for d in media[done[0]:]:
            ssrc = int.from_bytes(d[8:12], "big")
            for k in range(last_key.get(ssrc, 0), len(rx_sessions)):
                try:
                    rtp = read_rtp(rx_sessions[k].unprotect(d))
                except pylibsrtp.Error:
                    continue
                assert rtp.ssrc == ssrc
                decrypted.append((k, ssrc))
                last_key[ssrc] = k
                break
            else:
                raise AssertionError(f"packet {len(decrypted)} (ssrc {ssrc:#x}) decrypts with none of the "
                                     f"viewer's keys {last_key.get(ssrc, 0)}..{len(rx_sessions) - 1}")
        done[0] = len(media)

    async def wait_for_media(key: int, ssrcs: set[int], each: int = 20) -> None:
        """Until each of ssrcs has `each` more packets decrypted with key `key`."""
        decrypt_new()
        mark = len(decrypted)
        for _ in range(1200):  # up to 60 s
            decrypt_new()
            got = {s: sum(1 for k, x in decrypted[mark:] if k == key and x == s) for s in ssrcs}
            if all(n >= each for n in got.values()):
                return
            assert not died, "the worker died"
            await asyncio.sleep(0.05)
        raise AssertionError(f"media with key {key}: {got} packets of {ssrcs} (wanted {each} each)")

    th = threading.Thread(target=blast, daemon=True)
    th.start()
    try:
        await wait_for_media(0, set(out_ssrc.values()))

        # A consumer closed while media flows: the others keep flowing.
        consumers[0x3001].close()
        await worker.get_counters()  # the close is processed
        await wait_for_media(0, {out_ssrc[0x3002], out_ssrc[0x3003]}, each=50)
        assert not died

        # connect() again with the same suite: the key is unchanged.
        key0 = tc.srtp_parameters["keyBase64"]
        await tc.connect(ip="127.0.0.1", port=sub_peer.port, srtp_parameters=sub.params)
        assert tc.srtp_parameters["keyBase64"] == key0
        await wait_for_media(0, {out_ssrc[0x3002], out_ssrc[0x3003]}, each=50)

        # Re-keys to another suite and back, several consumers flowing: each
        # new outbound key replaces every consumer's session.
        for n, new_suite in enumerate(["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_32"]):
            client = SrtpClient(new_suite, {"keyBase64": base64.b64encode(b"\0" * SUITES[new_suite][1]).decode()})
            await tc.connect(ip="127.0.0.1", port=sub_peer.port, srtp_parameters=client.params)
            assert tc.srtp_parameters["cryptoSuite"] == new_suite
            rx_sessions.append(pylibsrtp.Session(pylibsrtp.Policy(
                key=base64.b64decode(tc.srtp_parameters["keyBase64"]),
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=SUITES[new_suite][0])))
            await wait_for_media(n + 1, {out_ssrc[0x3002], out_ssrc[0x3003]})
            assert not died, f"the worker died after re-key {n + 1}"
    finally:
        stop.set()
        th.join(10)
    decrypt_new()
    # The closed consumer's packets stopped at its close (it sent with key 0 only).
    assert {k for k, s in decrypted if s == out_ssrc[0x3001]} == {0}
    assert not died


async def test_connect_again_with_the_same_key_keeps_the_rollover_counter(router, peers):
    """connect() again with an unchanged suite and key keeps the engine's
    SRTP contexts: after the publisher's sequence numbers wrapped (rollover
    counter 1), a fresh receiver context would assume 0 and refuse every
    packet (RFC 3711 3.3.1)."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    pub_peer, sub_peer = peers(), peers()
    tp = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite=suite)
    tc = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True, srtp_crypto_suite=suite)
    pub, sub = SrtpClient(suite, tp.srtp_parameters), SrtpClient(suite, tc.srtp_parameters)
    await tp.connect(ip="127.0.0.1", port=pub_peer.port, srtp_parameters=pub.params)
    await tc.connect(ip="127.0.0.1", port=sub_peer.port, srtp_parameters=sub.params)
    producer = await tp.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 0x4444}]})
    await tc.consume(producer.id, router.rtp_capabilities)
    port = tp.tuple["localPort"]

    def send(seqs) -> None:
        for n, seq in enumerate(seqs):
            pub_peer.send(pub.tx.protect(build_rtp(111, seq & 0xFFFF, 960 * n, 0x4444, b"opus")), port)

    send(range(65530, 65536 + 6))            # across the wrap
    await sub_peer.wait_for(12)
    assert len(sub_peer.rtp()) == 12
    ours = tp.srtp_parameters
    await tp.connect(ip="127.0.0.1", port=pub_peer.port, srtp_parameters=pub.params)
    await tc.connect(ip="127.0.0.1", port=sub_peer.port, srtp_parameters=sub.params)
    assert tp.srtp_parameters == ours  # our key is unchanged too
    send(range(65536 + 6, 65536 + 16))       # rollover counter 1 on the publisher's side
    await sub_peer.wait_for(22)
    assert len(sub_peer.rtp()) == 22
    stats = (await tp.get_stats())[0]
    assert stats["packetsDiscarded"] == 0, stats
