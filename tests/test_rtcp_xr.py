"""RTCP XR receiver reference time (RRTR, RFC 3611 4.4) and DLRR (4.5),
src/rtcp_xr.c, and the RTT estimator fed by DLRR and by report blocks'
LSR/DLSR (RFC 3550 6.4.1), src/rtt.c, through sfu._fastpath._rtt_hooks.

Time is virtual: NTP timestamps come from sfu_ntp_from_ms of scripted
milliseconds, as the engine stamps them from its own clock."""

from __future__ import annotations

import random
import struct

import pytest

from sfu._fastpath import _rtt_hooks as X

OUR_SSRC = 1             # the RTCP sender SSRC of the engine's receiver reports
PUBLISHER = 0x5EA7C0DE   # the publisher's RTCP sender SSRC
UNITS_PER_MS = 65536 / 1000  # compact NTP: 1/65536 s


def compact_of_ms(unix_ms: int) -> int:
    return X.ntp_compact(X.ntp_from_ms(unix_ms))


def delay_units(ms: float) -> int:
    """A holding delay as the peer writes it: truncated to 1/65536 s."""
    return int(ms * UNITS_PER_MS)


def xr_header(ssrc: int, body: bytes) -> bytes:
    assert len(body) % 4 == 0
    return struct.pack("!BBHI", 0x80, 207, (8 + len(body)) // 4 - 1, ssrc) + body


def block(bt: int, payload: bytes, type_specific: int = 0) -> bytes:
    assert len(payload) % 4 == 0
    return struct.pack("!BBH", bt, type_specific, len(payload) // 4) + payload


def dlrr_block(subs) -> bytes:
    return block(5, b"".join(struct.pack("!III", *s) for s in subs))


# A VoIP metrics block (BT 7, RFC 3611 4.7) as a block of a type we do not
# read: header + 8 words.
VOIP_METRICS = block(7, bytes(range(32)))

# ------------------------------------------------------------------- RRTR


def test_rrtr_is_built_field_by_field_as_rfc3611_section_4_4():
    ntp = X.ntp_from_ms(1_764_745_047_123)  # 2025-12-03, some ms into a second
    pkt = X.build_rrtr(0x11223344, ntp)
    assert len(pkt) == X.RRTR_PACKET_SIZE == 20
    v, pt, length, ssrc = struct.unpack("!BBHI", pkt[:8])
    assert v >> 6 == 2          # version 2
    assert (v >> 5) & 1 == 0    # no padding
    assert v & 0x1F == 0        # reserved
    assert pt == 207            # XR
    assert length == 4          # 5 words - 1
    assert ssrc == 0x11223344
    bt, reserved, block_length, msw, lsw = struct.unpack("!BBHII", pkt[8:])
    assert bt == 4 and reserved == 0 and block_length == 2
    assert (msw << 32) | lsw == ntp
    assert msw == 1_764_745_047 + 2_208_988_800  # seconds since 1900
    assert pkt == xr_header(0x11223344, block(4, struct.pack("!Q", ntp)))
    parsed = X.parse_xr(pkt)
    assert parsed == dict(sender_ssrc=0x11223344, rrtr_ntp=ntp, nrrtr=1, ndlrr=0, nblocks=1, nunknown=0, dlrr=[])
    with pytest.raises(X.XrError):
        X.build_rrtr(1, ntp, cap=19)


def test_dlrr_builder_matches_the_hand_built_bytes():
    subs = [(0xAAAA0001, 0x12345678, 0x9ABC), (OUR_SSRC, 0xDEADBEEF, 0x0100)]
    assert X.build_dlrr(PUBLISHER, subs) == xr_header(PUBLISHER, dlrr_block(subs))
    with pytest.raises(X.XrError):
        X.build_dlrr(PUBLISHER, [])
    with pytest.raises(X.XrError):
        X.build_dlrr(PUBLISHER, subs, cap=35)
    # the largest DLRR that fits the 16-bit length field (3 + 3 * 21844
    # words = 65535, length 65534), and one more (65538 words) refused
    big = [(i, i + 1, i + 2) for i in range(X.MAX_DLRR_SUBS)]
    pkt = X.build_dlrr(PUBLISHER, big)
    assert struct.unpack("!H", pkt[2:4])[0] == 65534
    p = X.parse_xr(pkt, limit=X.MAX_DLRR_SUBS)
    assert p["ndlrr"] == X.MAX_DLRR_SUBS and p["dlrr"][-1] == big[-1]
    with pytest.raises(X.XrError):
        X.build_dlrr(PUBLISHER, big + [(0, 0, 0)])


# ------------------------------------------------------------------- DLRR

# An XR as a publisher would stack it after its SR: an RRTR of its own, a
# block type we do not read, and a DLRR answering three receivers (one of
# them us), then another packet of the compound (an SDES) after it.
PUBLISHER_XR = xr_header(
    PUBLISHER,
    block(4, struct.pack("!II", 0xEB7A1C3D, 0x40000000))
    + VOIP_METRICS
    + dlrr_block([(0x0BADF00D, 0x1C3D4000, 0x00010000),
                  (OUR_SSRC, 0x1C3D8000, 0x00002580),
                  (0x77777777, 0, 0)]),
)
SDES_AFTER = bytes.fromhex("81ca0003" "5ea7c0de" "01036162" "63000000")


def test_a_publishers_xr_gives_every_dlrr_sub_block_and_its_rrtr():
    p = X.parse_xr(PUBLISHER_XR + SDES_AFTER)  # the length field bounds the walk
    assert p["sender_ssrc"] == PUBLISHER
    assert p["rrtr_ntp"] == (0xEB7A1C3D << 32) | 0x40000000
    assert p["nrrtr"] == 1 and p["nblocks"] == 3 and p["nunknown"] == 1 and p["ndlrr"] == 3
    assert p["dlrr"] == [(0x0BADF00D, 0x1C3D4000, 0x00010000),
                         (OUR_SSRC, 0x1C3D8000, 0x00002580),
                         (0x77777777, 0, 0)]
    ours = [s for s in p["dlrr"] if s[0] == OUR_SSRC]
    assert ours == [(OUR_SSRC, 0x1C3D8000, 0x2580)]
    # a smaller output array: the first sub-blocks, all of them counted
    p1 = X.parse_xr(PUBLISHER_XR, limit=1)
    assert p1["dlrr"] == p["dlrr"][:1] and p1["ndlrr"] == 3
    p0 = X.parse_xr(PUBLISHER_XR, limit=0)
    assert p0["dlrr"] == [] and p0["ndlrr"] == 3


def test_padding_is_excluded_from_the_walk():
    body = block(4, struct.pack("!Q", 7))
    padded = struct.pack("!BBHI", 0xA0, 207, (8 + len(body) + 4) // 4 - 1, PUBLISHER) + body + b"\x00\x00\x00\x04"
    assert X.parse_xr(padded)["rrtr_ntp"] == 7
    # padding of 2 bytes leaves half a block header: refused
    odd = struct.pack("!BBHI", 0xA0, 207, (8 + len(body) + 4) // 4 - 1, PUBLISHER) + body + b"\x00\x00\x00\x02"
    with pytest.raises(X.XrError):
        X.parse_xr(odd)


# ---------------------------------------------------------- malformed XR


def test_every_truncation_is_refused():
    for pkt in (PUBLISHER_XR, X.build_rrtr(OUR_SSRC, 12345)):
        for n in range(len(pkt)):
            with pytest.raises(X.XrError):
                X.parse_xr(pkt[:n])


def test_a_truncation_that_rewrites_the_length_field_is_refused_unless_it_ends_on_a_block():
    """Cut at every 4-byte boundary and fix the packet length: the cut is
    accepted only where a block ends, and then gives just the blocks before it."""
    ends = {8, 20, 56, 96}  # header+SSRC, after RRTR, after VoIP metrics, after DLRR
    assert len(PUBLISHER_XR) == 96
    for cut in range(4, len(PUBLISHER_XR) + 1, 4):
        pkt = PUBLISHER_XR[:2] + struct.pack("!H", cut // 4 - 1) + PUBLISHER_XR[4:cut]
        if cut in ends:
            p = X.parse_xr(pkt)
            assert p["nblocks"] == sorted(ends).index(cut)
        else:
            with pytest.raises(X.XrError):
                X.parse_xr(pkt)


def test_block_length_overrunning_the_packet_is_refused():
    for extra in (1, 2, 100, 0xFFFF - 2):
        rrtr = struct.pack("!BBH", 4, 0, 2 + extra) + struct.pack("!Q", 1)
        with pytest.raises(X.XrError):
            X.parse_xr(xr_header(PUBLISHER, rrtr))
    # the last block of several overruns by one word
    bad_dlrr = struct.pack("!BBH", 5, 0, 6) + struct.pack("!III", OUR_SSRC, 1, 2)
    with pytest.raises(X.XrError):
        X.parse_xr(xr_header(PUBLISHER, VOIP_METRICS + bad_dlrr))


def test_zero_length_blocks_and_unknown_types_are_walked_and_skipped():
    unknown_empty = struct.pack("!BBH", 42, 0xFF, 0)  # BT 42, bare header
    dlrr_empty = struct.pack("!BBH", 5, 0, 0)          # DLRR of no sub-block
    pkt = xr_header(PUBLISHER, unknown_empty + dlrr_empty + unknown_empty
                    + block(255, b"\xff" * 12) + dlrr_block([(OUR_SSRC, 5, 6)]))
    p = X.parse_xr(pkt)
    assert p["nblocks"] == 5 and p["nunknown"] == 3 and p["dlrr"] == [(OUR_SSRC, 5, 6)]
    assert p["rrtr_ntp"] is None
    # an XR with no block at all
    assert X.parse_xr(xr_header(PUBLISHER, b""))["nblocks"] == 0


def test_known_blocks_of_the_wrong_size_are_refused():
    for words in (0, 1, 3, 4):  # RRTR must be 2
        with pytest.raises(X.XrError):
            X.parse_xr(xr_header(PUBLISHER, struct.pack("!BBH", 4, 0, words) + b"\0" * 4 * words))
    for words in (1, 2, 4, 5):  # DLRR must be 3 * n
        with pytest.raises(X.XrError):
            X.parse_xr(xr_header(PUBLISHER, struct.pack("!BBH", 5, 0, words) + b"\0" * 4 * words))


def test_not_an_xr_is_refused():
    good = X.build_rrtr(OUR_SSRC, 99)
    for bad in (b"", good[:7],
                bytes([0x40]) + good[1:],                 # version 1
                good[:1] + bytes([201]) + good[2:],       # an RR
                good[:2] + b"\x00\x05" + good[4:],        # length past the end
                good[:2] + b"\x00\x00" + good[4:]):       # no room for the SSRC
        with pytest.raises(X.XrError):
            X.parse_xr(bad)


def test_random_blocks_never_crash_and_either_parse_consistently_or_are_refused():
    rng = random.Random(3611)
    parsed = refused = 0
    for _ in range(20000):
        body = bytearray()
        for _ in range(rng.randrange(0, 6)):
            bt = rng.choice([4, 5, 7, 0, 255])
            words = rng.choice([0, 1, 2, 3, 6, rng.randrange(0, 20)])
            body += struct.pack("!BBH", bt, rng.randrange(256), words) + rng.randbytes(4 * words)
        pkt = bytearray(xr_header(rng.getrandbits(32), bytes(body)))
        if rng.random() < 0.5 and len(pkt) > 8:  # corrupt one byte
            pkt[rng.randrange(8, len(pkt))] = rng.randrange(256)
        try:
            p = X.parse_xr(bytes(pkt))
        except X.XrError:
            refused += 1
            continue
        parsed += 1
        assert p["nblocks"] >= p["nrrtr"] + p["nunknown"]
        assert len(p["dlrr"]) == min(p["ndlrr"], 64)
    assert parsed > 1000 and refused > 1000


# -------------------------------------------------------------------- RTT


def exchange(rtt: X.RttEstimator, t_send: int, forward_ms: float, hold_ms: float, back_ms: float,
             peer_clock_offset_ms: int = 123_456):
    """One RRTR -> DLRR round in virtual time, through the bytes: we build an
    RRTR at t_send, the peer (whose clock is offset) parses it, holds it,
    answers in a DLRR addressed to several receivers, we parse that and feed
    our sub-block to the estimator. Returns the estimator's answer."""
    rrtr = X.build_rrtr(OUR_SSRC, X.ntp_from_ms(t_send))
    lrr_sent = X.ntp_compact(X.parse_xr(rrtr)["rrtr_ntp"])
    rtt.rrtr_sent(lrr_sent, t_send)
    # the peer: received at its own time, answers hold_ms later
    peer_rx = X.ntp_compact(X.ntp_from_ms(int(t_send + forward_ms) + peer_clock_offset_ms))
    peer_tx = peer_rx + delay_units(hold_ms)
    dlrr = X.build_dlrr(PUBLISHER, [(0x0BADF00D, 0x1234, 5), (OUR_SSRC, lrr_sent, (peer_tx - peer_rx) & 0xFFFFFFFF)])
    t_arrival = t_send + forward_ms + hold_ms + back_ms
    sub = [s for s in X.parse_xr(dlrr)["dlrr"] if s[0] == OUR_SSRC][0]
    return rtt.on_dlrr(sub[1], sub[2], compact_of_ms(int(t_arrival)), int(t_arrival))


T0 = 1_764_745_047_000  # virtual Unix ms


def test_exact_rtt_from_a_scripted_rrtr_dlrr_exchange():
    rtt = X.RttEstimator()
    assert rtt.rtt_ms == 0 and rtt.samples == 0  # unknown
    us = exchange(rtt, T0, forward_ms=25, hold_ms=37, back_ms=25)
    assert abs(us - 50_000) <= 1000, us
    assert rtt.rtt_ms == 50 and rtt.samples == 1 and rtt.last_us == us
    # asymmetric path, long hold, sub-ms fractions of the send time
    rtt2 = X.RttEstimator()
    us = exchange(rtt2, T0 + 777, forward_ms=10, hold_ms=912, back_ms=70)
    assert abs(us - 80_000) <= 1000 and rtt2.rtt_ms == 80


def test_a_dlrr_for_an_rrtr_we_never_sent_or_without_one_gives_no_sample():
    rtt = X.RttEstimator()
    lrr = compact_of_ms(T0)
    rtt.rrtr_sent(lrr, T0)
    now = compact_of_ms(T0 + 100)
    assert rtt.on_dlrr(lrr + 1, delay_units(50), now, T0 + 100) == X.EUNKNOWN
    assert rtt.on_dlrr(0, 0, now, T0 + 100) == X.ENO_TIMESTAMP  # the peer has no RRTR of ours
    assert rtt.rtt_ms == 0 and rtt.samples == 0 and rtt.rejected == 1
    # the genuine answer, then a second answer to the same RRTR (another
    # of the peer's streams, or its next report): one sample only
    assert abs(rtt.on_dlrr(lrr, delay_units(50), now, T0 + 100) - 50_000) <= 1000
    assert rtt.on_dlrr(lrr, delay_units(60), compact_of_ms(T0 + 110), T0 + 110) == X.EDUPLICATE
    assert rtt.samples == 1 and rtt.rtt_ms == 50


def test_negative_absurd_and_stale_results_are_refused():
    rtt = X.RttEstimator()
    lrr = compact_of_ms(T0)
    rtt.rrtr_sent(lrr, T0)
    now = compact_of_ms(T0 + 100)
    # the peer claims it held the RRTR longer than it has existed
    assert rtt.on_dlrr(lrr, delay_units(150), now, T0 + 100) == X.ENEGATIVE
    # > 10 s
    assert rtt.on_dlrr(lrr, 0, compact_of_ms(T0 + 10_500), T0 + 10_500) == X.ETOO_LARGE
    # a DLRR so large it wraps the 32-bit subtraction
    assert rtt.on_dlrr(lrr, 0xF0000000, now, T0 + 100) in (X.ENEGATIVE, X.ETOO_LARGE)
    assert rtt.samples == 0 and rtt.rtt_ms == 0 and rtt.rejected == 3
    # a refusal does not consume the RRTR: the genuine answer still counts
    assert abs(rtt.on_dlrr(lrr, delay_units(60), now, T0 + 100) - 40_000) <= 1000
    # an RRTR older than the age limit, answered with a small RTT
    rtt.rrtr_sent(compact_of_ms(T0 + 1000), T0 + 1000)
    late = T0 + 1000 + X.MAX_AGE_MS + 1
    assert rtt.on_dlrr(compact_of_ms(T0 + 1000), delay_units(X.MAX_AGE_MS - 49), compact_of_ms(late), late) == X.ESTALE


def test_rounding_of_a_near_zero_path_counts_as_the_minimum_not_as_negative():
    rtt = X.RttEstimator()
    lrr = compact_of_ms(T0)
    rtt.rrtr_sent(lrr, T0)
    # arrival 20 units after the RRTR, the peer says it held it 40 units
    assert rtt.on_dlrr(lrr, 40, (lrr + 20) & 0xFFFFFFFF, T0) == 0
    assert rtt.rtt_ms == 1  # known and tiny; 0 would mean unknown


def test_the_history_matches_a_late_dlrr_until_the_rrtr_is_forgotten():
    rtt = X.RttEstimator()
    sent = []
    for k in range(X.HISTORY + 1):  # one RR round a second
        t = T0 + 1000 * k
        sent.append(compact_of_ms(t))
        rtt.rrtr_sent(sent[-1], t)
    now_ms = T0 + 1000 * X.HISTORY + 40
    now = compact_of_ms(now_ms)
    # the oldest was pushed out by the 33rd
    assert rtt.on_dlrr(sent[0], 0, now, now_ms) == X.EUNKNOWN
    # the second oldest (32 s ago), held by the peer for 32 s - 40 ms + 30 ms
    held = 1000 * (X.HISTORY - 1) + 40 - 30
    us = rtt.on_dlrr(sent[1], delay_units(held), now, now_ms)
    assert abs(us - 30_000) <= 1000


def test_smoothing_follows_a_step_change_within_three_samples_and_ignores_outliers():
    rtt = X.RttEstimator()
    t = T0
    for _ in range(10):
        exchange(rtt, t, 25, 37, 25)
        t += 1000
    assert rtt.rtt_ms == 50
    # one outlier (a report queued 800 ms in the peer) then two more: no change
    exchange(rtt, t, 25, 37, 825); t += 1000
    assert rtt.rtt_ms == 50
    exchange(rtt, t, 25, 37, 25); t += 1000
    exchange(rtt, t, 400, 37, 400); t += 1000
    assert rtt.rtt_ms == 50
    for _ in range(X.WINDOW):  # the outliers leave the window
        exchange(rtt, t, 25, 37, 25)
        t += 1000
    # a step from 50 ms to 200 ms
    n = 0
    while abs(rtt.rtt_ms - 200) > 1:
        exchange(rtt, t, 100, 37, 100)
        t += 1000
        n += 1
        assert n <= 10
    print(f"RTT step 50 -> 200 ms: rtt_ms = {rtt.rtt_ms} after {n} samples")
    assert n == 3
    # and back down
    n = 0
    while abs(rtt.rtt_ms - 50) > 1:
        exchange(rtt, t, 25, 37, 25)
        t += 1000
        n += 1
        assert n <= 10
    print(f"RTT step 200 -> 50 ms: rtt_ms = {rtt.rtt_ms} after {n} samples")
    assert n == 3


def test_the_wrap_of_the_middle_32_bits_is_handled():
    """The compact NTP time wraps every 65536 s. An RRTR sent 30 ms before
    the wrap and answered after it gives the right RTT."""
    rtt = X.RttEstimator()
    # NTP seconds with low 16 bits 0xFFFF, 30 ms before the next second:
    # its middle 32 bits are 0xFFFFxxxx, 30 ms later they wrap through 0
    ntp_send = (0xE9B0FFFF << 32) | ((970 << 32) // 1000)
    lrr = X.ntp_compact(ntp_send)
    assert lrr > 0xFFFF0000
    rtt.rrtr_sent(lrr, 5_000)
    hold = delay_units(20)
    ntp_arrival = ntp_send + ((80 << 32) // 1000)  # 80 ms later
    now = X.ntp_compact(ntp_arrival)
    assert now < 0x00010000  # wrapped
    us = rtt.on_dlrr(lrr, hold, now, 5_080)
    assert abs(us - 60_000) <= 1000 and rtt.rtt_ms == 60
    # the report-block entry point across the same wrap
    rb = X.RttEstimator()
    assert abs(rb.on_report_block(lrr, hold, now) - 60_000) <= 1000


def test_report_blocks_lsr_dlsr_give_samples_once_per_lsr():
    rtt = X.RttEstimator()
    # our SR at T0; the peer's RR about it 300 ms later after holding it 250 ms
    lsr = compact_of_ms(T0)
    now = compact_of_ms(T0 + 300)
    assert rtt.on_report_block(0, 0, now) == X.ENO_TIMESTAMP  # no SR of ours yet
    assert abs(rtt.on_report_block(lsr, delay_units(250), now) - 50_000) <= 1000
    assert rtt.rtt_ms == 50 and rtt.samples == 1
    # the next RR repeats the LSR (our next SR did not reach the peer yet)
    assert rtt.on_report_block(lsr, delay_units(1250), compact_of_ms(T0 + 1300)) == X.EDUPLICATE
    assert rtt.on_report_block(lsr + 1, delay_units(400), now) == X.ENEGATIVE
    assert rtt.on_report_block(lsr + 2, 0, compact_of_ms(T0 + 12_000)) == X.ETOO_LARGE
    assert rtt.samples == 1
    # DLRR samples and report-block samples share the window
    for k in range(1, 3):
        exchange(rtt, T0 + 1000 * k, 35, 37, 35)
    assert rtt.samples == 3 and rtt.rtt_ms == 70  # median of 50, 70, 70
