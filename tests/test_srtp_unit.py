"""The engine's SRTP unit (sfu/_fastpath/src/srtp.c) through its test hooks,
with libsrtp (pylibsrtp, configured as sfu/srtp.py does) as the oracle:
byte-identical SRTP/SRTCP for the same packets in all four profiles, each
side unprotecting the other's, rollover across sequence wraps, replay
windows, tampered and truncated packets, and thousands of SSRCs in one
context."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest

from sfu._fastpath import _srtp_hooks as H
from sfu.srtp import CRYPTO_SUITES

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": H.AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": H.AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": H.AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": H.AEAD_AES_256_GCM,
}
NAMES = list(PROFILES)
LIBSRTP_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
RTP_TAG = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4,
           "AEAD_AES_128_GCM": 16, "AEAD_AES_256_GCM": 16}
RTCP_ADD = {n: 4 + (16 if "GCM" in n else 10) for n in NAMES}


# ----------------------------------------------------------------- packets

def rtp(seq: int, ssrc: int = 0x1A2B3C4D, payload: bytes | None = None, *, pt: int = 96, marker: bool = False,
        ts: int | None = None, csrcs: tuple[int, ...] = (), ext: tuple[int, bytes] | None = None,
        padding: int = 0) -> bytes:
    """An RTP packet (RFC 3550): CSRCs, a header extension (profile, data
    padded to 32 bits) and padding as asked."""
    if payload is None:
        payload = bytes((seq * 7 + i) & 0xFF for i in range(160))
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if ext else 0) | len(csrcs)
    h = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF,
                    (ts if ts is not None else seq * 3000) & 0xFFFFFFFF, ssrc)
    h += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext:
        profile, data = ext
        data = data + bytes(-len(data) % 4)
        h += struct.pack("!HH", profile, len(data) // 4) + data
    pad = (bytes(padding - 1) + bytes([padding])) if padding else b""
    return h + payload + pad


def one_byte_ext() -> tuple[int, bytes]:
    # RFC 8285: abs-send-time (id 3, 3 bytes), transport-wide seq (id 5, 2 bytes), MID "0" (id 9)
    return 0xBEDE, bytes([0x32, 0x12, 0x34, 0x56, 0x51, 0x00, 0x2A, 0x90, ord("0")])


def two_byte_ext() -> tuple[int, bytes]:
    # RFC 8285 two-byte form: id 12 with 20 bytes, id 1 with 0 bytes
    return 0x1000, bytes([12, 20]) + bytes(range(20)) + bytes([1, 0])


def sender_report(ssrc: int, n: int = 0) -> bytes:
    """SR (RFC 3550 §6.4.1) with no report block, followed by an SDES CNAME:
    a compound RTCP packet."""
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0xE6A1B2C3, n * 1000, n * 90000, n, n * 1200)
    cname = b"sfu-test"
    item = bytes([1, len(cname)]) + cname
    chunk = struct.pack("!I", ssrc) + item + bytes(4 - (len(item) % 4))
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes


def receiver_report(ssrc: int, media_ssrc: int) -> bytes:
    block = struct.pack("!IIIIII", media_ssrc, 0x01000005, 70000, 12, 0, 0)
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block


def variety(ssrcs=(0x1A2B3C4D, 0x0BADCAFE, 0x7E57AB1E)) -> list[bytes]:
    """Packets of several SSRCs interleaved with every header shape."""
    out = []
    for i in range(12):
        ssrc = ssrcs[i % len(ssrcs)]
        seq = 1000 + i // len(ssrcs)
        shape = i % 6
        if shape == 0:
            out.append(rtp(seq, ssrc))
        elif shape == 1:
            out.append(rtp(seq, ssrc, csrcs=(0x11111111, 0x22222222), marker=True))
        elif shape == 2:
            out.append(rtp(seq, ssrc, ext=one_byte_ext()))
        elif shape == 3:
            out.append(rtp(seq, ssrc, ext=two_byte_ext(), csrcs=(0x33333333,)))
        elif shape == 4:
            out.append(rtp(seq, ssrc, payload=bytes(range(37)), padding=3))
        else:
            out.append(rtp(seq, ssrc, payload=b"", ext=one_byte_ext()))  # header only
    return out


# ----------------------------------------------------------------- contexts

def keys(name: str) -> bytes:
    return os.urandom(CRYPTO_SUITES[name].master_length)


def libsrtp(name: str, key: bytes, outbound: bool) -> pylibsrtp.Session:
    """A libsrtp session configured as the engine configured its sessions
    before it had contexts of its own (any SSRC; repeats allowed outbound)."""
    policy = pylibsrtp.Policy(key=key, srtp_profile=LIBSRTP_PROFILES[name],
                              ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
                              else pylibsrtp.Policy.SSRC_ANY_INBOUND)
    if outbound:
        policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy=policy)


def ours(name: str, key: bytes, outbound: bool) -> H.SrtpContext:
    return H.SrtpContext(PROFILES[name], key, outbound)


def error(fn, *args) -> int:
    with pytest.raises(H.SrtpError) as e:
        fn(*args)
    return e.value.code


def wrap_sequence(start: int = 65000, ssrc: int = 0x1A2B3C4D) -> list[bytes]:
    """Sequence numbers through two wraps (ROC 0 -> 1 -> 2) in steps a sender
    may take, with packets reordered across each wrap (0 after 1, 65535
    after 0) and a late one from before the wrap."""
    seqs = [start, 65534, 65535, 1, 0, 2, 65533, 3, 20000, 40000, 60000, 65535, 4, 65534, 5, 30000]
    return [rtp(s, ssrc, payload=bytes([i]) * 50) for i, s in enumerate(seqs)]


# ----------------------------------------------------------------- differential

@pytest.mark.parametrize("name", NAMES)
def test_protect_is_byte_identical_to_libsrtp_and_libsrtp_unprotects_it(name):
    key = keys(name)
    mine, theirs, peer = ours(name, key, True), libsrtp(name, key, True), libsrtp(name, key, False)
    for p in variety() + wrap_sequence() + wrap_sequence(ssrc=0x55555555):
        a = mine.protect(p)
        assert a == theirs.protect(p), p.hex()
        assert len(a) == len(p) + RTP_TAG[name]
        assert peer.unprotect(a) == p
    # RTCP: per-SSRC SRTCP index progression, compound packets
    for i in range(5):
        for ssrc in (0x1A2B3C4D, 0x0BADCAFE):
            for p in (sender_report(ssrc, i), receiver_report(ssrc, 0x1A2B3C4D)):
                a = mine.protect_rtcp(p)
                assert a == theirs.protect_rtcp(p), p.hex()
                assert len(a) == len(p) + RTCP_ADD[name]
                assert peer.unprotect_rtcp(a) == p


@pytest.mark.parametrize("name", NAMES)
def test_unprotects_what_libsrtp_protects(name):
    key = keys(name)
    mine, theirs = ours(name, key, False), libsrtp(name, key, True)
    for p in variety() + wrap_sequence() + wrap_sequence(start=100, ssrc=0x66666666):
        assert mine.unprotect(theirs.protect(p)) == p
    for i in range(5):
        for ssrc in (0x1A2B3C4D, 0x0BADCAFE, 0x12345678):
            p = sender_report(ssrc, i)
            assert mine.unprotect_rtcp(theirs.protect_rtcp(p)) == p
    assert mine.stream_count == 5


@pytest.mark.parametrize("name", NAMES)
def test_srtcp_trailer_carries_e_flag_and_per_ssrc_index_from_1(name):
    mine = ours(name, keys(name), True)
    for i in range(1, 4):
        for ssrc in (1, 2):
            a = mine.protect_rtcp(sender_report(ssrc, i))
            trailer_at = len(a) - 4 if "GCM" in name else len(a) - 14  # GCM: tag then trailer
            assert struct.unpack_from("!I", a, trailer_at)[0] == 0x80000000 | i


@pytest.mark.parametrize("name", NAMES)
def test_rollover_counter_follows_wraps_on_both_sides(name):
    """A sender's ROC: 65535 -> 0 increments it, a packet from before the
    wrap sent after it (a retransmission) uses the old ROC; the receiver's
    estimate matches (RFC 3711 Appendix A)."""
    key = keys(name)
    tx, rx, lib_rx = ours(name, key, True), ours(name, key, False), libsrtp(name, key, False)
    stream = [rtp(s) for s in (65534, 65535, 0, 1)]
    sent = [tx.protect(p) for p in stream]
    retransmission = tx.protect(stream[1])  # seq 65535 again, after the wrap: ROC 0
    assert retransmission == sent[1]
    for a, p in zip(sent, stream):
        assert rx.unprotect(a) == p and lib_rx.unprotect(a) == p
    # ROC 1 -> 2 through steps below 2^15
    for s in (20000, 45000, 65000, 100, 101):
        p = rtp(s)
        a = tx.protect(p)
        assert rx.unprotect(a) == p and lib_rx.unprotect(a) == p
    # a late packet from ROC 1, 117 behind the highest (ROC 2, 101): in the window
    late = rtp(65520)
    assert rx.unprotect(tx.protect(late)) == late
    assert error(rx.unprotect, tx.protect(rtp(65400))) == H.E_REPLAY  # 237 behind


# ----------------------------------------------------------------- tampering, replay, truncation

@pytest.mark.parametrize("name", NAMES)
def test_flipped_bit_anywhere_fails_and_leaves_state_unchanged(name):
    key = keys(name)
    tx, rx = ours(name, key, True), ours(name, key, False)
    first = rtp(1000, ext=one_byte_ext(), csrcs=(7,), payload=bytes(range(40)))
    assert rx.unprotect(tx.protect(first)) == first
    nxt = rtp(1001, ext=one_byte_ext(), csrcs=(7,), payload=bytes(range(40)))
    good = tx.protect(nxt)
    for pos in range(len(good)):
        for bit in range(8):
            bad = bytearray(good)
            bad[pos] ^= 1 << bit
            code = error(rx.unprotect, bytes(bad))
            if pos >= 12 and pos not in (18, 19):  # CSRC, extension, payload, tag: authentication
                assert code == H.E_AUTH, (pos, bit, code)
            else:  # version, CC, X, sequence number, SSRC, extension length bits may also make it malformed or old
                assert code in (H.E_AUTH, H.E_MALFORMED, H.E_REPLAY), (pos, bit, code)
    assert rx.stream_count == 1  # no forged SSRC created a stream
    assert rx.unprotect(good) == nxt  # the window did not move
    # RTCP
    r1 = tx.protect_rtcp(sender_report(0x1A2B3C4D, 1))
    r2 = tx.protect_rtcp(sender_report(0x1A2B3C4D, 2))
    assert rx.unprotect_rtcp(r1) == sender_report(0x1A2B3C4D, 1)
    for pos in range(len(r2)):
        bad = bytearray(r2)
        bad[pos] ^= 0x10
        code = error(rx.unprotect_rtcp, bytes(bad))
        assert code in (H.E_AUTH, H.E_REPLAY), (pos, code)
    assert rx.stream_count == 1
    assert rx.unprotect_rtcp(r2) == sender_report(0x1A2B3C4D, 2)


@pytest.mark.parametrize("name", NAMES)
def test_replayed_and_too_old_packets_are_refused(name):
    key = keys(name)
    tx, rx = ours(name, key, True), ours(name, key, False)
    sent = {s: tx.protect(rtp(s)) for s in range(100, 400)}
    for s in range(100, 400, 2):  # even first, then odd: reordering inside the window
        rx.unprotect(sent[s])
    assert error(rx.unprotect, sent[398]) == H.E_REPLAY
    assert rx.unprotect(sent[399]) == rtp(399)
    assert rx.unprotect(sent[301]) == rtp(301)  # 98 back: inside the 128 window, not seen
    assert error(rx.unprotect, sent[301]) == H.E_REPLAY
    assert error(rx.unprotect, sent[271]) == H.E_REPLAY  # 128 back: outside the window
    assert error(rx.unprotect, sent[101]) == H.E_REPLAY
    # RTCP
    r = [tx.protect_rtcp(sender_report(5, i)) for i in range(200)]
    for i in (0, 2, 199):
        rx.unprotect_rtcp(r[i])
    assert error(rx.unprotect_rtcp, r[2]) == H.E_REPLAY
    assert error(rx.unprotect_rtcp, r[0]) == H.E_REPLAY  # index 1, 198 back
    assert rx.unprotect_rtcp(r[150]) == sender_report(5, 150)
    assert error(rx.unprotect_rtcp, r[150]) == H.E_REPLAY


@pytest.mark.parametrize("name", NAMES)
def test_truncated_packets_of_every_length_fail_cleanly(name):
    key = keys(name)
    tx, rx = ours(name, key, True), ours(name, key, False)
    p = rtp(5, csrcs=(1, 2), ext=two_byte_ext(), payload=bytes(30))
    a = tx.protect(p)
    for n in range(len(a)):
        assert error(rx.unprotect, a[:n]) in (H.E_MALFORMED, H.E_AUTH), n
    r = tx.protect_rtcp(sender_report(9))
    for n in range(len(r)):
        assert error(rx.unprotect_rtcp, r[:n]) in (H.E_MALFORMED, H.E_AUTH), n
    assert rx.stream_count == 0
    assert rx.unprotect(a) == p and rx.unprotect_rtcp(r) == sender_report(9)
    # plain packets cut short are refused before any crypto
    header = 12 + 8 + 4 + 24  # fixed header, 2 CSRCs, extension header and its 24 bytes
    for n in range(len(p)):
        if n < header:
            assert error(tx.protect, p[:n]) == H.E_MALFORMED, n
        else:
            assert len(tx.protect(p[:n])) == n + RTP_TAG[name]
    for n in range(8):
        assert error(tx.protect_rtcp, sender_report(9)[:n]) == H.E_MALFORMED


@pytest.mark.parametrize("name", NAMES)
def test_protect_needs_room_for_the_tag(name):
    tx = ours(name, keys(name), True)
    p = rtp(1)
    assert error(tx.protect, p, len(p) + RTP_TAG[name] - 1) == H.E_NO_ROOM
    assert len(tx.protect(p, len(p) + RTP_TAG[name])) == len(p) + RTP_TAG[name]
    r = sender_report(1)
    assert error(tx.protect_rtcp, r, len(r) + RTCP_ADD[name] - 1) == H.E_NO_ROOM
    assert len(tx.protect_rtcp(r, len(r) + RTCP_ADD[name])) == len(r) + RTCP_ADD[name]
    assert H.max_overhead() >= max(RTCP_ADD.values())


def test_profile_numbers_are_the_control_planes():
    for name in NAMES:
        assert PROFILES[name] == CRYPTO_SUITES[name].profile == LIBSRTP_PROFILES[name]


def test_bad_profile_or_key_length_is_refused():
    for name in NAMES:
        n = CRYPTO_SUITES[name].master_length
        for bad in (0, n - 1, n + 1, 16):
            with pytest.raises(ValueError):
                H.SrtpContext(PROFILES[name], bytes(bad), True)
    for profile in (0, 3, 4, 5, 6, 9, -1):
        with pytest.raises(ValueError):
            H.SrtpContext(profile, bytes(30), False)


def test_each_context_works_in_its_own_direction_only():
    key = keys("AEAD_AES_128_GCM")
    tx, rx = ours("AEAD_AES_128_GCM", key, True), ours("AEAD_AES_128_GCM", key, False)
    assert error(rx.protect, rtp(1)) == H.E_DIRECTION
    assert error(rx.protect_rtcp, sender_report(1)) == H.E_DIRECTION
    assert error(tx.unprotect, tx.protect(rtp(1))) == H.E_DIRECTION
    assert error(tx.unprotect_rtcp, tx.protect_rtcp(sender_report(1))) == H.E_DIRECTION


def test_wrong_key_fails_authentication_for_every_profile():
    for name in NAMES:
        a = ours(name, keys(name), True).protect(rtp(1))
        rx = ours(name, keys(name), False)
        assert error(rx.unprotect, a) == H.E_AUTH
        assert rx.stream_count == 0


# ----------------------------------------------------------------- many streams

@pytest.mark.parametrize("name", ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"])
def test_thousands_of_ssrcs_in_one_context(name):
    key = keys(name)
    tx, rx, lib_tx, lib_rx = ours(name, key, True), ours(name, key, False), libsrtp(name, key, True), libsrtp(name, key, False)
    ssrcs = [0x10000000 + i * 7919 for i in range(2000)]
    for rnd in range(2):
        for s in ssrcs:
            p = rtp(60000 + rnd, s, payload=bytes(20))
            a = tx.protect(p)
            assert a == lib_tx.protect(p)
            assert rx.unprotect(a) == p and lib_rx.unprotect(a) == p
    assert tx.stream_count == rx.stream_count == 2000
    # the state of each SSRC is its own: a replay of the first round is refused for all of them
    for s in ssrcs[::97]:
        assert error(rx.unprotect, lib_tx.protect(rtp(60000, s, payload=bytes(20)))) == H.E_REPLAY
    # removal keeps the others reachable (backward-shift deletion)
    for s in ssrcs[::2]:
        assert rx.remove_stream(s)
    assert not rx.remove_stream(ssrcs[0])
    assert rx.stream_count == 1000
    for s in ssrcs[1::2]:
        assert error(rx.unprotect, lib_tx.protect(rtp(60001, s, payload=bytes(20)))) == H.E_REPLAY
        p = rtp(60002, s, payload=bytes(20))
        assert rx.unprotect(lib_tx.protect(p)) == p


def test_stream_cap_refuses_a_new_ssrc_until_one_is_removed():
    name = "AEAD_AES_128_GCM"
    key = keys(name)
    tx, rx = ours(name, key, True), ours(name, key, False)
    for s in range(1, H.MAX_STREAMS + 1):
        rx.unprotect(tx.protect(rtp(1, s, payload=b"")))
    assert rx.stream_count == tx.stream_count == H.MAX_STREAMS
    assert error(tx.protect, rtp(1, 0xFFFF0000)) == H.E_TOO_MANY_STREAMS
    assert error(tx.protect_rtcp, sender_report(0xFFFF0000)) == H.E_TOO_MANY_STREAMS
    extra = ours(name, key, True).protect(rtp(1, 0xFFFF0000))
    assert error(rx.unprotect, extra) == H.E_TOO_MANY_STREAMS
    assert rx.unprotect(tx.protect(rtp(2, 77, payload=b""))) == rtp(2, 77, payload=b"")  # known SSRCs still work
    assert rx.remove_stream(77) and tx.remove_stream(77)
    assert rx.unprotect(extra) == rtp(1, 0xFFFF0000)


# ----------------------------------------------------------------- unencrypted SRTCP (E=0)

def _session_keys(name: str, master: bytes) -> tuple[bytes, bytes, bytes]:
    """SRTCP session key, salt and auth key by RFC 3711 §4.3 (AES-CM PRF,
    kdr 0), written here independently of the C unit; the GCM profiles'
    12-byte master salt is padded with two zero bytes."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    suite = CRYPTO_SUITES[name]
    key, salt = master[:suite.key_length], master[suite.key_length:]

    def prf(label: int, n: int) -> bytes:
        iv = bytearray(salt.ljust(14, b"\0") + b"\0\0")
        iv[7] ^= label
        return Cipher(algorithms.AES(key), modes.CTR(bytes(iv))).encryptor().update(bytes(n))

    return prf(3, suite.key_length), prf(5, suite.salt_length), prf(4, 20)


def _srtcp(name: str, master: bytes, rtcp_packet: bytes, index: int, encrypt: bool) -> bytes:
    """An SRTCP packet built with the `cryptography` package (RFC 3711 §3.4,
    RFC 7714 §9)."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    k, salt, auth = _session_keys(name, master)
    ssrc = rtcp_packet[4:8]
    trailer = struct.pack("!I", (0x80000000 if encrypt else 0) | index)
    if "GCM" in name:
        iv = bytes(a ^ b for a, b in zip(b"\0\0" + ssrc + b"\0\0" + struct.pack("!I", index), salt))
        if encrypt:
            sealed = AESGCM(k).encrypt(iv, rtcp_packet[8:], rtcp_packet[:8] + trailer)
            return rtcp_packet[:8] + sealed + trailer
        return rtcp_packet + AESGCM(k).encrypt(iv, b"", rtcp_packet + trailer) + trailer
    iv = bytearray(salt + b"\0\0")
    for i in range(4):
        iv[4 + i] ^= ssrc[i]
    for i, b in enumerate(struct.pack("!Q", index)[2:]):
        iv[8 + i] ^= b
    body = rtcp_packet[:8] + (Cipher(algorithms.AES(k), modes.CTR(bytes(iv))).encryptor().update(rtcp_packet[8:])
                              if encrypt else rtcp_packet[8:])
    return body + trailer + hmac.new(auth, body + trailer, hashlib.sha1).digest()[:10]


@pytest.mark.parametrize("name", NAMES)
def test_unencrypted_srtcp_is_authenticated_and_accepted(name):
    master = keys(name)
    p = sender_report(0x0BADCAFE, 3)
    # the independent construction agrees with libsrtp for E=1 ...
    assert _srtcp(name, master, p, 1, True) == libsrtp(name, master, True).protect_rtcp(p)
    # ... and an E=0 packet (payload in clear, still authenticated) is accepted
    rx = ours(name, master, False)
    clear = _srtcp(name, master, p, 1, False)
    assert clear[8:len(p)] == p[8:]
    for pos in (0, 9, len(p) - 1, len(clear) - 1):
        bad = bytearray(clear)
        bad[pos] ^= 0x01
        assert error(rx.unprotect_rtcp, bytes(bad)) == H.E_AUTH, pos
    assert rx.unprotect_rtcp(clear) == p
    assert error(rx.unprotect_rtcp, clear) == H.E_REPLAY
    assert rx.unprotect_rtcp(_srtcp(name, master, p, 2, True)) == p
