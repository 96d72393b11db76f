"""DirectTransport: a router's media to Python in batches, and RTP from
Python into the router, over a real worker subprocess and real UDP peers."""

from __future__ import annotations

import asyncio
import os
import random
import struct

import pytest

import sfu
from conftest import build_rtp, settle
from sfu.errors import InvalidParametersError, InvalidStateError

VP8 = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}
VP8_KEY = b"\x10\x00"
VP8_DELTA = b"\x00\x01"


def is_rtp(d: bytes) -> bool:
    return len(d) >= 12 and not (192 <= d[1] <= 223)


def rtp_payload(d: bytes) -> bytes:
    off = 12 + 4 * (d[0] & 0x0F)
    if d[0] & 0x10:
        off += 4 + 4 * struct.unpack_from("!H", d, off + 2)[0]
    return d[off:]


async def plain_publisher(router, peers):
    peer = peers()
    t = await router.create_plain_transport(listen_ip="127.0.0.1")
    await t.connect(ip="127.0.0.1", port=peer.port)
    ssrc = random.getrandbits(32)
    producer = await t.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": ssrc}]})
    return peer, t, producer, ssrc


async def wait_until(pred, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_direct_transport_receives_a_plain_publisher_in_batches(router, peers):
    peer, t, producer, ssrc = await plain_publisher(router, peers)
    direct = await router.create_direct_transport()
    consumer = await direct.consume(producer.id, router.rtp_capabilities)
    out_ssrc = consumer.rtp_parameters["encodings"][0]["ssrc"]
    batches: list[list[bytes]] = []
    direct.on_batch = batches.append
    port = t.tuple["localPort"]
    n = 400
    payloads = []
    for i in range(n):
        payload = (VP8_KEY if i == 0 else VP8_DELTA) + f"p{i}-".encode() + os.urandom(300)
        payloads.append(payload)
        peer.send(build_rtp(96, 5000 + i, 1000 + (i // 4) * 3000, ssrc, payload, marker=(i % 4 == 3)), port)
        if i % 20 == 19:
            await asyncio.sleep(0.01)
    await wait_until(lambda: sum(1 for b in batches for d in b if is_rtp(d)) >= n)
    await settle(0.1)
    rtp = [d for b in batches for d in b if is_rtp(d)]
    assert len(rtp) == n
    assert {struct.unpack_from("!I", d, 8)[0] for d in rtp} == {out_ssrc}
    seqs = [struct.unpack_from("!H", d, 2)[0] for d in rtp]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), "sequence numbers not continuous"
    assert [rtp_payload(d) for d in rtp] == payloads
    # batched: far fewer deliveries than packets
    assert 1 <= len(batches) < n // 4, f"{len(batches)} batches for {n} packets"
    stats = await consumer.get_stats()
    assert stats[0]["packetCount"] == n


async def test_direct_transport_async_iterator_and_close_ends_it(router, peers):
    peer, t, producer, ssrc = await plain_publisher(router, peers)
    direct = await router.create_direct_transport()
    await direct.consume(producer.id, router.rtp_capabilities)
    got: list[bytes] = []

    async def reader() -> None:
        async for batch in direct:
            got.extend(d for d in batch if is_rtp(d))

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    for i in range(50):
        peer.send(build_rtp(96, i, i * 3000, ssrc, (VP8_KEY if i == 0 else VP8_DELTA) + b"x" * 100, True),
                  t.tuple["localPort"])
    await wait_until(lambda: len(got) >= 50)
    direct.close()
    await asyncio.wait_for(task, 5)
    assert len(got) == 50


async def test_full_queue_drops_and_counts_without_blocking_forwarding(worker, router, peers):
    peer, t, producer, ssrc = await plain_publisher(router, peers)
    viewer = peers()
    vt = await router.create_plain_transport(listen_ip="127.0.0.1")
    await vt.connect(ip="127.0.0.1", port=viewer.port)
    await vt.consume(producer.id, router.rtp_capabilities)
    direct = await router.create_direct_transport(max_queue_bytes=8192)  # room for ~7 packets
    await direct.consume(producer.id, router.rtp_capabilities)
    received: list[bytes] = []
    direct.on_batch = lambda b: received.extend(d for d in b if is_rtp(d))
    before = (await worker.get_counters())["drop_direct_full"]
    n = 300
    for i in range(n):  # a burst: far more than 8 kB arrives within one 20 ms pump
        peer.send(build_rtp(96, i, i * 3000, ssrc, (VP8_KEY if i == 0 else VP8_DELTA) + os.urandom(1000), True),
                  t.tuple["localPort"])
    await viewer.wait_for(n, timeout=10)
    await settle(0.3)
    assert viewer.count() == n  # the plain viewer got everything
    dropped = (await worker.get_counters())["drop_direct_full"] - before
    assert dropped > 0
    assert len(received) + dropped == n
    stats = await direct.get_stats()
    assert stats[0]["type"] == "direct-transport"
    assert stats[0]["queueDrops"] == dropped


async def test_direct_produce_send_reaches_a_plain_consumer(router, peers):
    direct = await router.create_direct_transport()
    ssrc = random.getrandbits(32)
    producer = await direct.produce("video", {"codecs": [VP8], "encodings": [{"ssrc": ssrc}]})
    viewer = peers()
    vt = await router.create_plain_transport(listen_ip="127.0.0.1")
    await vt.connect(ip="127.0.0.1", port=viewer.port)
    consumer = await vt.consume(producer.id, router.rtp_capabilities)
    out_ssrc = consumer.rtp_parameters["encodings"][0]["ssrc"]
    pkts = [build_rtp(96, 100 + i, i * 3000, ssrc, (VP8_KEY if i == 0 else VP8_DELTA) + bytes([i]) * 50, True)
            for i in range(60)]
    direct.send(pkts[:30])
    for p in pkts[30:]:
        direct.send(p)
    await viewer.wait_for(60, timeout=10)
    got = viewer.rtp()
    assert [r.ssrc for r in got] == [out_ssrc] * 60
    assert [r.payload for r in got] == [p[12:] for p in pkts]
    with pytest.raises(InvalidParametersError):
        direct.send(b"short")


async def test_close_frees_the_engine_objects(worker, router, peers):
    peer, t, producer, ssrc = await plain_publisher(router, peers)
    for _ in range(30):
        d = await router.create_direct_transport()
        await d.consume(producer.id, router.rtp_capabilities)
        d.close()
    dump = await worker.dump()
    assert dump["transportIds"] == [t.id]
    assert dump["consumerIds"] == []
    # forwarding still works and nothing is queued for the closed transports
    before = (await worker.get_counters())["drop_direct_full"]
    for i in range(20):
        peer.send(build_rtp(96, i, i * 3000, ssrc, VP8_KEY + b"y" * 100, True), t.tuple["localPort"])
    await settle(0.3)
    assert (await worker.get_counters())["drop_direct_full"] == before
    d = await router.create_direct_transport()
    d.close()
    with pytest.raises(InvalidStateError):
        d.send(b"\x80" * 20)
    with pytest.raises(InvalidParametersError):
        await router.create_direct_transport(max_queue_bytes=10)


def count_pli(peer) -> int:
    n = 0
    for d in peer.received:
        pos = 0
        while len(d) >= 4 and 192 <= d[1] <= 223 and pos + 4 <= len(d):
            first, pt, length = struct.unpack_from("!BBH", d, pos)
            if pt == 206 and first & 0x1F in (1, 4):  # PLI or FIR
                n += 1
            pos += 4 * (length + 1)
    return n


async def test_consumer_request_key_frame_reaches_the_publisher(router, peers):
    peer, t, producer, ssrc = await plain_publisher(router, peers)
    direct = await router.create_direct_transport()
    consumer = await direct.consume(producer.id, router.rtp_capabilities)
    got: list[bytes] = []
    direct.on_batch = got.extend
    peer.send(build_rtp(96, 1, 0, ssrc, VP8_KEY + b"k" * 100, True), t.tuple["localPort"])
    await wait_until(lambda: any(is_rtp(d) for d in got))
    await asyncio.sleep(1.2)  # past the keyframe request interval
    before = count_pli(peer)
    await consumer.request_key_frame()
    await wait_until(lambda: count_pli(peer) > before, timeout=5)
    consumer.close()
    with pytest.raises(InvalidStateError):
        await consumer.request_key_frame()
