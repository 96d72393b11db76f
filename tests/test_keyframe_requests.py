"""PLI/FIR from viewers reach the publisher as one throttled PLI (sans-IO)."""

from __future__ import annotations

import struct

from sfu._fastpath import _testhooks

PUB = ("127.0.0.1", 5000)
SUB = ("127.0.0.1", 6000)
SUB2 = ("127.0.0.1", 6001)


def rig():
    e = _testhooks.SansIOEngine()
    s_in, s_out, s_out2 = e.add_socket(-1), e.add_socket(-1), e.add_socket(-1)
    t_in, t_out, t_out2 = e.add_transport(s_in), e.add_transport(s_out), e.add_transport(s_out2)
    e.connect_transport(t_in, PUB)
    e.connect_transport(t_out, SUB)
    e.connect_transport(t_out2, SUB2)
    p = e.add_producer(t_in, True, [(0xAAAA, 0)], {96: 101}, {})
    c1 = e.add_consumer(t_out, p, 0xC1, 0, 90000, {101: 101}, {})
    c2 = e.add_consumer(t_out2, p, 0xC2, 0, 90000, {101: 101}, {})
    return e, (s_in, s_out, s_out2), (t_in, t_out, t_out2), p, (c1, c2)


def pli(sender: int, media: int) -> bytes:
    return struct.pack("!BBHII", 0x81, 206, 2, sender, media)


def fir(sender: int, media: int) -> bytes:
    return struct.pack("!BBHIIIBxxx", 0x84, 206, 4, sender, 0, media, 7)


def plis_to_publisher(out, s_in):
    """The PLIs among what was sent to the publisher (reports may go there too)."""
    return [struct.unpack("!BBHII", d) for sock, addr, d in out
            if sock == s_in and addr == PUB and len(d) == 12 and d[1] == 206 and d[0] & 0x1F == 1]


def test_viewer_pli_becomes_one_pli_to_the_publisher_for_its_stream():
    e, (s_in, s_out, s_out2), _, p, _ = rig()
    e.receive(s_out, SUB, pli(0x1234, 0xC1), 1000)
    assert plis_to_publisher(e.take_outbox(), s_in) == [(0x81, 206, 2, 1, 0xAAAA)]
    # A second viewer asking within the interval is coalesced into the first request.
    e.receive(s_out2, SUB2, fir(0x5678, 0xC2), 1200)
    assert plis_to_publisher(e.take_outbox(), s_in) == []
    # After the interval a new request goes out.
    e.receive(s_out2, SUB2, fir(0x5678, 0xC2), 1600)
    assert plis_to_publisher(e.take_outbox(), s_in) == [(0x81, 206, 2, 1, 0xAAAA)]
    c = e.counters()
    assert (c["rx_pli"], c["rx_fir"], c["tx_pli"]) == (1, 2, 2)
    assert e.producer_stats(p)[0]["keyframeRequests"] == 2


def test_pli_for_an_unknown_ssrc_or_from_the_wrong_transport_is_ignored():
    e, (s_in, s_out, s_out2), _, _, _ = rig()
    e.receive(s_out, SUB, pli(1, 0xDEAD), 1000)      # no such consumer
    e.receive(s_out, SUB, pli(1, 0xC2), 1000)        # c2 is not on this transport
    assert plis_to_publisher(e.take_outbox(), s_in) == []
    assert e.counters()["tx_pli"] == 0


def test_new_or_resumed_consumer_requests_a_keyframe():
    e, (s_in, s_out, _), (_, t_out, _), p, (c1, _) = rig()
    e.request_keyframe(c1, 5000)
    assert plis_to_publisher(e.take_outbox(), s_in) == [(0x81, 206, 2, 1, 0xAAAA)]


def test_audio_producers_get_no_pli():
    e = _testhooks.SansIOEngine()
    s_in, s_out = e.add_socket(-1), e.add_socket(-1)
    t_in, t_out = e.add_transport(s_in), e.add_transport(s_out)
    e.connect_transport(t_in, PUB)
    e.connect_transport(t_out, SUB)
    p = e.add_producer(t_in, False, [(0xB, 0)], {111: 100}, {})
    c = e.add_consumer(t_out, p, 0xC, 0, 48000, {100: 100}, {})
    e.request_keyframe(c, 1000)
    e.receive(s_out, SUB, pli(1, 0xC), 1000)
    assert e.take_outbox() == []


def test_a_request_inside_the_interval_is_sent_when_the_interval_ends():
    """A viewer that joins just after a keyframe went by must not wait for the
    publisher's own schedule: its throttled request is deferred, not dropped."""
    e, (s_in, s_out, s_out2), _, p, _ = rig()
    e.receive(s_out, SUB, pli(1, 0xC1), 1000)
    assert len(plis_to_publisher(e.take_outbox(), s_in)) == 1
    e.receive(s_out2, SUB2, pli(2, 0xC2), 1100)
    e.receive(s_out, SUB, pli(1, 0xC1), 1200)   # coalesced with the one above
    assert plis_to_publisher(e.take_outbox(), s_in) == []
    assert 0 < e.tick(1300) <= 200               # due at 1500 (periodic work may come sooner)
    assert plis_to_publisher(e.take_outbox(), s_in) == []
    e.tick(1500)
    assert plis_to_publisher(e.take_outbox(), s_in) == [(0x81, 206, 2, 1, 0xAAAA)]
    e.tick(2500)
    assert plis_to_publisher(e.take_outbox(), s_in) == []
    assert e.producer_stats(p)[0]["keyframeRequests"] == 2


def test_deferred_request_of_a_removed_producer_is_dropped():
    e, (s_in, s_out, _), _, p, _ = rig()
    e.receive(s_out, SUB, pli(1, 0xC1), 1000)
    e.receive(s_out, SUB, pli(1, 0xC1), 1100)
    e.take_outbox()
    e.remove_producer(p)
    e.tick(2000)
    assert plis_to_publisher(e.take_outbox(), s_in) == []


def test_the_keyframe_request_interval_is_configurable():
    e, (s_in, s_out, s_out2), _, p, _ = rig()
    e.set_keyframe_request_interval(0)           # no throttle: every request goes out
    e.receive(s_out, SUB, pli(1, 0xC1), 1000)
    e.receive(s_out2, SUB2, pli(2, 0xC2), 1001)
    assert len(plis_to_publisher(e.take_outbox(), s_in)) == 2
    e.set_keyframe_request_interval(2000)
    e.receive(s_out, SUB, pli(1, 0xC1), 1500)    # inside 2 s of the last one (1001): deferred
    assert plis_to_publisher(e.take_outbox(), s_in) == []
    e.tick(2900)
    assert plis_to_publisher(e.take_outbox(), s_in) == []
    e.tick(3001)                                 # the window ends
    assert len(plis_to_publisher(e.take_outbox(), s_in)) == 1


def one_viewer(paused: bool = False):
    """A VP8 publisher (SSRC 0xAAAA) and one viewer, on virtual sockets."""
    e = _testhooks.SansIOEngine()
    s_in, s_out = e.add_socket(-1), e.add_socket(-1)
    t_in, t_out = e.add_transport(s_in), e.add_transport(s_out)
    e.connect_transport(t_in, PUB)
    e.connect_transport(t_out, SUB)
    p = e.add_producer(t_in, True, [(0xAAAA, 0)], {96: 101}, {}, codecs={101: "vp8"})
    c = e.add_consumer(t_out, p, 0xC1, 0, 90000, {101: 101}, {}, paused=paused)
    return e, s_in, p, c, s_out


def vp8_rtp(seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0xAAAA) + payload


def test_a_consumer_still_waiting_for_a_keyframe_asks_again():
    """The PLI or the keyframe may be lost on the way, and a viewer that has
    received no video never sends a PLI itself: the SFU asks again every
    second until the waiting consumer gets its keyframe, then stops."""
    from test_keyframe_detection import VP8_DELTA, VP8_KEY_MIN

    e, s_in, p, c, s_out = one_viewer()
    rtp = vp8_rtp

    e.tick(1000)                                     # the engine asks for the new consumer
    assert len(plis_to_publisher(e.take_outbox(), s_in)) == 1  # and this PLI is "lost"
    now, seq, plis = 1000, 1, []
    while now < 3500:                                # delta frames only: the consumer waits
        now += 20
        seq += 1
        e.receive(s_in, PUB, rtp(seq, VP8_DELTA), now)
        e.tick(now)
        plis += [now for _ in plis_to_publisher(e.take_outbox(), s_in)]
    assert plis and all(1980 <= t <= 2060 or 2980 <= t <= 3060 for t in plis), plis
    assert len(plis) == 2
    assert e.consumer_stats(c)["packetCount"] == 0
    e.receive(s_in, PUB, rtp(seq + 1, VP8_KEY_MIN), now + 20)
    forwarded = [d for sock, addr, d in e.take_outbox() if sock == s_out and d[1] & 0x7F == 101]
    assert len(forwarded) == 1
    for k in range(1, 150):                          # synced: no more requests
        e.tick(now + 20 + 20 * k)
    assert plis_to_publisher(e.take_outbox(), s_in) == []
    assert e.counters()["keyframe_retries"] == 2


def test_a_request_right_after_a_keyframe_is_retried_after_one_interval():
    """An encoder may ignore a PLI that comes right after a keyframe of its
    own (Chromium does, within ~300 ms): such a first request is retried one
    request interval later, not after the usual second."""
    from test_keyframe_detection import VP8_DELTA, VP8_KEY_MIN

    e, s_in, p, c, _ = one_viewer(paused=True)
    rtp = vp8_rtp

    e.receive(s_in, PUB, rtp(1, VP8_KEY_MIN), 1000)      # the publisher's first keyframe: the viewer is paused
    e.tick(1000)
    e.take_outbox()
    e.set_consumer_paused(c, False)                   # resumed 100 ms later: it asks for a keyframe
    e.tick(1100)
    assert len(plis_to_publisher(e.take_outbox(), s_in)) == 1
    plis, now, seq = [], 1100, 1
    while now < 2400:                                 # deltas only: that PLI was ignored
        now += 20
        seq += 1
        e.receive(s_in, PUB, rtp(seq, VP8_DELTA), now)
        e.tick(now)
        plis += [now for _ in plis_to_publisher(e.take_outbox(), s_in)]
    assert plis == [1600], plis                       # 1100 + the 500 ms interval; the next at 2600
