"""VP8 payload descriptor (src/vp8.c, RFC 7741) and the per-consumer
forwarding state: temporal-layer filtering and continuous PictureID /
TL0PICIDX, on real libvpx streams captured with GStreamer
(tests/fixtures/capture_vpx.py says how)."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest

from sfu._fastpath import _codec_hooks as c

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def read_rtp(name: str) -> list[dict]:
    """The capture's packets, RTP header read here with struct."""
    data = (FIXTURES / name).read_bytes()
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("!H", data, i)
        pkt = data[i + 2:i + 2 + n]
        i += 2 + n
        b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", pkt)
        assert b0 >> 6 == 2
        off = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            (words,) = struct.unpack_from("!H", pkt, off + 2)
            off += 4 + 4 * words
        end = len(pkt) - (pkt[-1] if b0 & 0x20 else 0)
        out.append({"marker": b1 >> 7, "pt": b1 & 0x7F, "seq": seq, "ts": ts, "ssrc": ssrc, "payload": pkt[off:end]})
    return out


L1T3 = read_rtp("vp8_l1t3_15bit.rtp")
L1T3_B = read_rtp("vp8_l1t3_b.rtp")
SEVEN = read_rtp("vp8_7bit.rtp")


def frames(packets):
    """[(first descriptor, [packets])] in order, split on picture id."""
    out = []
    for p in packets:
        d = c.vp8_parse(p["payload"])
        if not out or out[-1][0]["picture_id"] != d["picture_id"]:
            out.append((d, []))
        out[-1][1].append(p)
    return out


def run(fwd, packets, target_tid, switch_first=False):
    """Feeds the packets; returns [(input descriptor, output descriptor)]
    of the forwarded ones and the number dropped."""
    sent, dropped = [], 0
    for k, p in enumerate(packets):
        rc, out = fwd.packet(p["payload"], target_tid, stream_switched=switch_first and k == 0)
        assert rc in (0, 1)
        if rc:
            assert len(out) == len(p["payload"])
            # only the picture id / TL0PICIDX bytes change
            d_in = c.vp8_parse(p["payload"])
            d_out = c.vp8_parse(out)
            assert out[d_in["descriptor_len"]:] == p["payload"][d_in["descriptor_len"]:]
            assert {**d_in, "picture_id": 0, "tl0picidx": 0} == {**d_out, "picture_id": 0, "tl0picidx": 0}
            sent.append((d_in, d_out))
        else:
            dropped += 1
    return sent, dropped


def output_frames(sent):
    """[(input descriptor, output descriptor)] per forwarded frame."""
    out = []
    for d_in, d_out in sent:
        if not out or out[-1][0]["picture_id"] != d_in["picture_id"]:
            out.append((d_in, d_out))
    return out


def test_parse_real_l1t3_stream_matches_the_encoder_settings():
    fr = frames(L1T3)
    assert len(fr) == 60  # num-buffers=60
    for n, (d, pkts) in enumerate(fr):
        # rtpvp8pay picture-id-mode=15-bit picture-id-offset=1000
        assert d["picture_id"] == 1000 + n and d["picture_id_bits"] == 15
        assert d["picture_id_offset"] == 2 and d["tl0picidx_offset"] == 4 and d["descriptor_len"] == 6
        # layer ids <0,2,1,2>; one TL0PICIDX step per TL0 frame
        assert d["tid"] == [0, 2, 1, 2][n % 4]
        assert d["tl0picidx"] == n // 4
        # keyframe-max-dist=12
        assert d["keyframe"] == (n % 12 == 0)
        # sync flags <false,true,true,false> (the payloader marks key frames Y too)
        assert d["layer_sync"] == (n % 12 == 0 or n % 4 in (1, 2))
        assert d["start_of_partition"] and d["partition_id"] == 0 and d["extended"]
        for k, p in enumerate(pkts):
            dk = c.vp8_parse(p["payload"])
            assert (dk["picture_id"], dk["tid"], dk["tl0picidx"]) == (d["picture_id"], d["tid"], d["tl0picidx"])
            assert dk["start_of_partition"] == (k == 0)
            assert dk["keyframe"] == (k == 0 and d["keyframe"])
            assert p["marker"] == (k == len(pkts) - 1)
        if d["keyframe"]:
            # the VP8 key frame start code after the 3-byte frame tag
            body = pkts[0]["payload"][d["descriptor_len"]:]
            assert body[3:6] == b"\x9d\x01\x2a"
            w, h = struct.unpack_from("<HH", body, 6)
            assert (w & 0x3FFF, h & 0x3FFF) == (320, 240)
    assert any(len(pkts) > 1 for _, pkts in fr)  # key frames span packets at MTU 400


def test_parse_7bit_picture_id_wraps():
    fr = frames(SEVEN)
    assert len(fr) == 40
    for n, (d, _) in enumerate(fr):
        assert d["picture_id_bits"] == 7 and d["picture_id"] == (100 + n) % 128
        assert d["tid"] is None and d["tl0picidx"] is None and d["descriptor_len"] == 3
        assert d["keyframe"] == (n % 12 == 0)


@pytest.mark.parametrize("target", [0, 1, 2])
def test_temporal_filtering_keeps_picture_id_and_tl0picidx_continuous(target):
    fwd = c.Vp8Forwarder()
    sent, dropped = run(fwd, L1T3, target)
    out = output_frames(sent)
    expected = [d for d, _ in frames(L1T3) if d["tid"] <= target]
    assert [d_in["picture_id"] for d_in, _ in out] == [d["picture_id"] for d in expected]
    assert {d_in["tid"] for d_in, _ in out} == set(range(target + 1))
    assert dropped == sum(len(p) for d, p in frames(L1T3) if d["tid"] > target)
    assert (dropped == 0) == (target == 2)
    # +1 per forwarded frame from the first frame's own id
    assert [d_out["picture_id"] for _, d_out in out] == [1000 + k for k in range(len(out))]
    # TL0PICIDX unchanged (no TL0 frame is ever dropped): +1 at each TL0 frame
    for (a_in, a_out), (b_in, b_out) in itertools.pairwise(out):
        assert b_out["tl0picidx"] == (a_out["tl0picidx"] + (b_in["tid"] == 0)) % 256
    assert fwd.tid == target


def test_temporal_up_switch_waits_for_a_layer_sync_frame_and_down_is_immediate():
    fwd = c.Vp8Forwarder()
    fr = frames(L1T3)
    tids_out = []
    for n, (d, pkts) in enumerate(fr):
        # T0 for frames 0..4, then ask for T2 (frame 5: TID 2, Y=1 -> up to 2);
        # frames 18.. ask for T0 again, frames 26.. for T1 (frame 26: TID 1, Y=1)
        target = 0 if n < 5 else 2 if n < 18 else 0 if n < 25 else 1
        decisions = {fwd.packet(p["payload"], target)[0] for p in pkts}
        assert len(decisions) == 1
        if decisions == {1}:
            tids_out.append((n, d["tid"]))
    got = dict(tids_out)
    assert [n for n in got if n < 5] == [0, 4]
    assert 5 in got and got[5] == 2 and fr[5][0]["layer_sync"]
    assert all(n in got for n in range(5, 18))  # everything at T2
    assert [n for n in got if 18 <= n < 25] == [20, 24]  # down to T0 at frame 18 at once
    # frame 25 (TID 2) dropped; 26 (TID 1, Y=1) switches to T1; TID 2 stays dropped
    assert [n for n in got if n >= 25] == [n for n in range(26, 60) if fr[n][0]["tid"] <= 1]


def test_decisions_paired_with_the_seqmgr_keep_rtp_sequence_contiguous():
    """The caller's side (vp8.h): forwarded -> sfu_seqmgr_input, dropped ->
    sfu_seqmgr_drop; with a stream switch (sfu_seqmgr_sync) in the middle."""
    fwd = c.Vp8Forwarder()
    seq = c.SeqManager(500)
    fb = frames(L1T3_B)
    a_part = [p for _, pkts in frames(L1T3)[:30] for p in pkts]
    b_part = [p for _, pkts in fb[12:] for p in pkts]  # from B's key frame 12
    out = []
    for k, p in enumerate(a_part + b_part):
        switched = k == len(a_part)
        if switched:
            seq.sync((p["seq"] - 1) & 0xFFFF)
        rc, payload = fwd.packet(p["payload"], 1, stream_switched=switched)
        if rc == 1:
            o = seq.input(p["seq"])
            assert o is not None
            out.append((o, p["marker"], c.vp8_parse(payload)))
        else:
            seq.drop(p["seq"])
    assert len(out) < len(a_part) + len(b_part)  # TID 2 dropped
    assert [o for o, _, _ in out] == [(out[0][0] + k) & 0xFFFF for k in range(len(out))]
    # each forwarded frame still ends with the marker on its last packet
    for (_, m, d), (_, _, d_next) in itertools.pairwise(out):
        assert m == (d["picture_id"] != d_next["picture_id"])
    assert out[-1][1] == 1


def test_up_switch_not_at_a_non_sync_frame():
    """From T1, a TID 2 frame with Y=0 does not switch up: the stream's
    TID 2 frames with Y=0 reference the TID 1 frame before them only, but
    a receiver cannot know that; the next Y=1 frame does."""
    fwd = c.Vp8Forwarder()
    fr = frames(L1T3)
    for d, pkts in fr[:3]:  # frames 0..2 at T1
        for p in pkts:
            fwd.packet(p["payload"], 1)
    assert fwd.tid == 1
    d3, pkts3 = fr[3]
    assert d3["tid"] == 2 and not d3["layer_sync"]
    assert {fwd.packet(p["payload"], 2)[0] for p in pkts3} == {0}
    d5, pkts5 = fr[5]
    for p in fr[4][1]:
        assert fwd.packet(p["payload"], 2)[0] == 1
    assert d5["tid"] == 2 and d5["layer_sync"]
    assert {fwd.packet(p["payload"], 2)[0] for p in pkts5} == {1}
    assert fwd.tid == 2


def test_stream_switch_rebases_picture_id_and_tl0picidx():
    """Stream A (picture ids from 1000) then, at a key frame of stream B
    (ids from 32740, wrapping at 32768), B: the consumer's ids go on +1."""
    fwd = c.Vp8Forwarder()
    fa = frames(L1T3)
    fb = frames(L1T3_B)
    a_part = [p for _, pkts in fa[:22] for p in pkts]  # A up to frame 21
    key_b = [n for n, (d, _) in enumerate(fb) if d["keyframe"]][1]  # B's second key frame (frame 12)
    b_part = [p for _, pkts in fb[key_b:] for p in pkts]
    assert any(d["picture_id"] < 100 for d, _ in fb[key_b:])  # B wraps
    sent_a, _ = run(fwd, a_part, 1)
    sent_b, _ = run(fwd, b_part, 1, switch_first=True)
    out = output_frames(sent_a) + output_frames(sent_b)
    ids = [d_out["picture_id"] for _, d_out in out]
    assert ids == [1000 + k for k in range(len(out))]
    tl0 = [(d_in["tid"], d_out["tl0picidx"]) for d_in, d_out in out]
    for (_, a), (tid_b, b) in itertools.pairwise(tl0):
        assert b == (a + (tid_b == 0)) % 256
    # the switch happened at B's key frame, on the first packet after the switch
    first_b = output_frames(sent_b)[0][0]
    assert first_b["keyframe"] and first_b["picture_id"] == fb[key_b][0]["picture_id"]


def test_counter_above_127_on_a_7bit_stream_wraps_modulo_128():
    fwd = c.Vp8Forwarder()
    sent_a, _ = run(fwd, L1T3[:40], 2)  # 15-bit ids from 1000
    last = output_frames(sent_a)[-1][1]["picture_id"]
    assert last > 127
    sent_b, _ = run(fwd, SEVEN, 2, switch_first=True)
    out = output_frames(sent_b)
    assert len(out) == 40
    for k, (d_in, d_out) in enumerate(out):
        assert d_out["picture_id_bits"] == 7
        assert d_out["picture_id"] == (last + 1 + k) % 128
    assert out[0][1]["tl0picidx"] is None


def test_packets_of_one_frame_share_the_decision_and_output_id_when_reordered():
    fwd = c.Vp8Forwarder()
    fr = frames(L1T3)
    # frames 0..2 at T1 (frame 1, TID 2, dropped); key frame 0 has 2 packets: swap them
    f0 = fr[0][1]
    assert len(f0) >= 2
    outs = [fwd.packet(p["payload"], 1) for p in (f0[1], f0[0], *f0[2:])]
    assert all(rc == 1 for rc, _ in outs)
    assert {c.vp8_parse(o)["picture_id"] for _, o in outs} == {1000}
    for p in fr[1][1]:
        assert fwd.packet(p["payload"], 1)[0] == 0
    rc, o = fwd.packet(fr[2][1][0]["payload"], 1)
    assert rc == 1 and c.vp8_parse(o)["picture_id"] == 1001
    # a late duplicate (retransmission) of frame 0 keeps its id; of frame 1 stays dropped
    rc, o = fwd.packet(f0[0]["payload"], 1)
    assert rc == 1 and c.vp8_parse(o)["picture_id"] == 1000
    assert fwd.packet(fr[1][1][0]["payload"], 1)[0] == 0
    # frame 4 before frame 3 (at T2): frame 4 keeps the gap of the missing
    # frame 3; frame 3 arriving then is an old frame never seen -> dropped
    rc, o = fwd.packet(fr[4][1][0]["payload"], 2)
    assert rc == 1 and c.vp8_parse(o)["picture_id"] == 1003
    assert fwd.packet(fr[3][1][0]["payload"], 2)[0] == 0


@pytest.mark.parametrize("target", [1, 2])
def test_a_frame_lost_upstream_keeps_its_gap_in_the_output(target):
    """Frames dropped here leave no gap; a frame that never arrived does (the
    receiver must still see it missing)."""
    fr = frames(L1T3)
    lost = 6  # TID 1: forwarded at T1 and T2
    assert fr[lost][0]["tid"] == 1
    fwd = c.Vp8Forwarder()
    sent, _ = run(fwd, [p for n, (_, pkts) in enumerate(fr) if n != lost for p in pkts], target)
    out = output_frames(sent)
    ids = [d_out["picture_id"] for _, d_out in out]
    steps = [b - a for a, b in itertools.pairwise(ids)]
    k = [d_in["picture_id"] for d_in, _ in out].index(1000 + lost + 1 if target == 2 else 1000 + lost + 2)
    assert steps[k - 1] == 2
    assert all(s == 1 for i, s in enumerate(steps) if i != k - 1)


def test_packets_without_picture_id_are_forwarded_untouched():
    fwd = c.Vp8Forwarder()
    body = SEVEN[0]["payload"][3:]
    payload = bytes([0x10]) + body  # X=0, S=1, PID 0: the key frame's partition start
    d = c.vp8_parse(payload)
    assert d["picture_id"] is None and d["keyframe"] and d["descriptor_len"] == 1
    rc, out = fwd.packet(payload, 0)
    assert rc == 1 and out == payload


def test_truncated_and_malformed_descriptors_are_refused():
    p = L1T3[0]["payload"]
    d = c.vp8_parse(p)
    with pytest.raises(c.CodecError) as e:
        c.vp8_parse(b"")
    assert e.value.code == c.VP8_ETRUNCATED
    for n in range(1, d["descriptor_len"]):
        with pytest.raises(c.CodecError) as e:
            c.vp8_parse(p[:n])
        assert e.value.code == c.VP8_ETRUNCATED, n
    with pytest.raises(c.CodecError) as e:
        c.vp8_parse(p[:d["descriptor_len"]])  # a descriptor and no VP8 payload
    assert e.value.code == c.VP8_EINVALID
    # I set with M=1 and only one picture id byte
    with pytest.raises(c.CodecError) as e:
        c.vp8_parse(bytes([0x90, 0x80, 0x85]))
    assert e.value.code == c.VP8_ETRUNCATED
    # an out buffer shorter than the descriptor
    rc, _ = c.Vp8Forwarder().packet(p, 2, out_len=d["descriptor_len"] - 1)
    assert rc == c.VP8_EINVALID


def test_a_frame_recovered_late_goes_into_the_gap_it_left():
    """A frame whose packets all come after a newer frame's (lost upstream,
    recovered by NACK/RTX after the next frame passed) is forwarded into the
    output slot its loss left, when the frames on both sides were forwarded
    with the input's spacing: it used to be dropped, so every receiver lost
    it for good (a single-packet frame in particular) and waited for a
    keyframe."""
    fr = frames(L1T3)
    fwd = c.Vp8Forwarder()
    out_ids = {}
    for n in (0, 1, 2, 4, 5):
        for p in fr[n][1]:
            rc, o = fwd.packet(p["payload"], 2)
            assert rc == 1
            out_ids[n] = c.vp8_parse(o)["picture_id"]
    assert out_ids[4] - out_ids[2] == 2  # the gap of frame 3
    for p in fr[3][1]:  # frame 3 now, late
        rc, o = fwd.packet(p["payload"], 2)
        assert rc == 1 and c.vp8_parse(o)["picture_id"] == out_ids[2] + 1
    # but not where frames were dropped here between its neighbours (the
    # output spacing no longer says where its slot is): at T1 frames 1 and 3
    # (TID 2) are dropped; frame 2 (TID 1) comes after frame 4
    fwd = c.Vp8Forwarder()
    for n in (0, 1, 3, 4):
        for p in fr[n][1]:
            assert fwd.packet(p["payload"], 1)[0] == (1 if fr[n][0]["tid"] <= 1 else 0)
    assert all(fwd.packet(p["payload"], 1)[0] == 0 for p in fr[2][1])
