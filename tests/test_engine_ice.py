"""Engine side of ICE transports (sans-IO): tuple routing and no media before keys."""

from __future__ import annotations

import struct

import pylibsrtp

from sfu import srtp
from sfu._fastpath import _testhooks

PUB = ("127.0.0.1", 5000)
VIEWER = ("127.0.0.1", 7000)
STRANGER = ("127.0.0.1", 7001)


def rtp(seq: int, ssrc: int = 0xAAAA) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, ssrc) + b"x" * 50


def test_no_media_leaves_an_ice_transport_before_its_srtp_keys_are_installed():
    e = _testhooks.SansIOEngine()
    s_pub, s_shared = e.add_socket(-1), e.add_socket(-1)
    t_pub = e.add_transport(s_pub)
    e.connect_transport(t_pub, PUB)
    t_view = e.add_transport(s_shared, ice=True)
    e.bind_tuple(s_shared, VIEWER, t_view)
    e.connect_transport(t_view, VIEWER)        # ICE selected the tuple...
    p = e.add_producer(t_pub, True, [(0xAAAA, 0)], {96: 101}, {})
    e.add_consumer(t_view, p, 0xC1, 0, 90000, {101: 101}, {})
    e.receive(s_pub, PUB, rtp(1), 1000)
    assert e.take_outbox() == []               # ...but DTLS has not keyed SRTP: nothing, never cleartext
    suite = srtp.crypto_suite("AEAD_AES_128_GCM")
    key_out, key_in = srtp.generate_key(suite), srtp.generate_key(suite)
    e.set_transport_srtp(t_view, suite.profile, in_key=key_in, out_key=key_out)
    e.receive(s_pub, PUB, rtp(2), 1020)
    (sock, addr, data), = e.take_outbox()
    assert (sock, addr) == (s_shared, VIEWER)
    viewer = pylibsrtp.Session(pylibsrtp.Policy(key=key_out, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                                srtp_profile=suite.profile))
    clear = viewer.unprotect(data)
    assert struct.unpack_from("!I", clear, 8)[0] == 0xC1 and clear.endswith(b"x" * 50)


def test_shared_socket_routes_media_by_bound_tuple_only():
    e = _testhooks.SansIOEngine()
    s_shared = e.add_socket(-1)
    t1 = e.add_transport(s_shared, ice=True)
    t2 = e.add_transport(s_shared, ice=True)
    e.bind_tuple(s_shared, VIEWER, t1)
    e.add_producer(t1, True, [(0xAAAA, 0)], {96: 101}, {})
    e.add_producer(t2, True, [(0xBBBB, 0)], {96: 101}, {})
    e.receive(s_shared, STRANGER, rtp(1, 0xBBBB), 1000)   # unbound tuple: no transport
    e.receive(s_shared, VIEWER, rtp(1, 0xBBBB), 1000)     # t1's tuple, t2's SSRC: not routed to t2
    c = e.counters()
    assert c["drop_no_transport"] == 1
    # t1 requires SRTP and has no keys yet: dropped as SRTP, never parsed as t2's
    assert c["drop_srtp"] == 1 and c["drop_unknown_ssrc"] == 0
    # STUN from an unknown tuple goes up with no transport; from a bound one, with its transport
    stun = bytes.fromhex("0001 0000 2112a442") + bytes(12)
    e.receive(s_shared, STRANGER, stun, 1000)
    e.receive(s_shared, VIEWER, stun, 1000)
    ups = e.poll_upcalls()
    assert [(u[2], u[4]) for u in ups] == [(0, STRANGER), (t1, VIEWER)]
    assert e.unbind_tuple(s_shared, VIEWER)
    e.receive(s_shared, VIEWER, stun, 1000)
    assert e.poll_upcalls()[0][2] == 0


def stun_request(ufrag: bytes = b"nobody:x", tid: bytes = b"\x00" * 12) -> bytes:
    """A STUN binding request with a USERNAME attribute (RFC 5389)."""
    attr = struct.pack("!HH", 0x0006, len(ufrag)) + ufrag + b"\x00" * (-len(ufrag) % 4)
    return struct.pack("!HHI", 0x0001, len(attr), 0x2112A442) + tid + attr


def test_unvalidated_stun_flood_never_crowds_out_a_live_transports_checks():
    """STUN from tuples ICE has not bound (a flood of unknown ufrags, or new
    candidates) holds at most a quarter of the upcall queue and is rate
    limited; checks from a bound tuple always go up."""
    e = _testhooks.SansIOEngine()
    s = e.add_socket(-1)
    t = e.add_transport(s, ice=True)
    e.bind_tuple(s, VIEWER, t)
    now = 50_000
    for i in range(10_000):
        e.receive(s, ("127.0.0.1", 20000 + i % 30000), stun_request(), now)
    e.receive(s, VIEWER, stun_request(b"live:peer"), now)   # consent check of the live transport
    ups = e.poll_upcalls()
    live = [u for u in ups if u[4] == VIEWER]
    assert len(live) == 1 and live[0][2] == t
    burst = len(ups) - 1
    assert burst == 2048                                      # the queue share (= the burst)
    assert e.counters()["drop_stun_unvalidated"] == 10_000 - 2048
    # the queue is drained: the bucket refills at 4000 per second
    for i in range(5000):
        e.receive(s, ("127.0.0.1", 20000 + i), stun_request(), now + 250)
    assert len(e.poll_upcalls()) == 1000
    # a bound tuple is never limited, even with the bucket empty
    for _ in range(3000):
        e.receive(s, VIEWER, stun_request(b"live:peer"), now + 250)
    assert len(e.poll_upcalls()) == 3000
