"""VP9 payload descriptor (src/vp9.c, RFC 9628) and the per-consumer SVC
layer filter.

Real packets: a libvpx VP9 stream captured with GStreamer 1.22's vp9enc +
rtpvp9pay (tests/fixtures/vp9_15bit.rtp, see capture_vpx.py). That
payloader writes no layer indices and no encoder here gives a spatial SVC
stream through an RTP payloader (vp9enc has no spatial layer settings), so
the SVC streams below are descriptors built by hand from RFC 9628's layout
(non-flexible mode, L3T3 with the 0,2,1,2 temporal pattern), each followed
by a few payload bytes of the real stream."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest

from sfu._fastpath import _codec_hooks as c

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def read_rtp(name: str) -> list[dict]:
    data = (FIXTURES / name).read_bytes()
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("!H", data, i)
        pkt = data[i + 2:i + 2 + n]
        i += 2 + n
        b0, b1 = pkt[0], pkt[1]
        assert b0 >> 6 == 2 and not b0 & 0x3F  # no CSRC, extension, padding
        out.append({"marker": b1 >> 7, "payload": pkt[12:]})
    return out


REAL = read_rtp("vp9_15bit.rtp")
BODY = REAL[1]["payload"][3:13]  # 10 bytes of a real inter frame, after its 3-byte descriptor


def desc(pid, *, p, b, e, tid=None, u=0, sid=0, d=0, tl0=0, ss=None, flexible=False, refs=()):
    """A VP9 payload descriptor (RFC 9628 section 4.2) + BODY."""
    layer = tid is not None
    v = ss is not None
    out = bytes([0x80 | p << 6 | layer << 5 | flexible << 4 | b << 3 | e << 2 | v << 1])
    out += struct.pack("!H", 0x8000 | pid)
    if layer:
        out += bytes([tid << 5 | u << 4 | sid << 1 | d])
        if not flexible:
            out += bytes([tl0])
    if flexible and p:
        for k, r in enumerate(refs):
            out += bytes([r << 1 | (k < len(refs) - 1)])
    if v:
        out += ss
    return out + BODY


# SS of a 3-layer stream: N_S=2, Y=1, G=1; 320x180, 640x360, 1280x720; a
# group of 4 pictures (TID 0,2,1,2; U on the TID 1/2 pictures; one P_DIFF each)
SS_L3 = bytes([2 << 5 | 1 << 4 | 1 << 3]) + struct.pack("!6H", 320, 180, 640, 360, 1280, 720) + bytes(
    [4, 0 << 5 | 1 << 2, 4, 2 << 5 | 1 << 4 | 1 << 2, 1, 1 << 5 | 1 << 4 | 1 << 2, 2, 2 << 5 | 1 << 2, 1])

TIDS = [0, 2, 1, 2]


def svc_stream(npictures, *, ksvc=False, key_every=16, intra_upper=()):
    """[(payload, marker, picture, sid, tid)]: L3T3, each layer frame in 2
    packets. Full SVC: upper layers D=1 (and P=1 outside key pictures);
    K-SVC: upper layers D=1 only on key pictures. `intra_upper`:
    (picture, sid) layer frames sent with P=0 (not inter-picture predicted)."""
    out = []
    for n in range(npictures):
        key = n % key_every == 0
        tid = 0 if key else TIDS[n % 4]
        u = int(tid > 0)
        for sid in range(3):
            p = 0 if key or (n, sid) in intra_upper else 1
            dep = int(sid > 0 and (key or not ksvc))
            for k in range(2):
                b, e = int(k == 0), int(k == 1)
                ss = SS_L3 if key and sid == 0 and k == 0 else None
                out.append((desc(n + 100, p=p, b=b, e=e, tid=tid, u=u, sid=sid, d=dep, tl0=n // 4 % 256, ss=ss),
                            int(sid == 2 and e == 1), n, sid, tid))
    return out


def test_parse_real_vp9_stream():
    pictures = []
    for p in REAL:
        d = c.vp9_parse(p["payload"])
        assert d["picture_id_bits"] == 15 and not d["flexible"] and not d["has_layer_indices"]
        assert d["end_of_frame"] == p["marker"]  # one layer: end of frame = end of picture
        if d["begin_of_frame"]:
            pictures.append(d)
    assert len(pictures) == 24  # num-buffers=24
    ids = [d["picture_id"] for d in pictures]
    assert [(b - a) % 32768 for a, b in itertools.pairwise(ids)] == [1] * 23
    keys = [n for n, d in enumerate(pictures) if d["keyframe"]]
    assert keys == [0, 12]  # keyframe-max-dist=12
    for n, d in enumerate(pictures):
        assert d["inter_picture_predicted"] == (n not in keys)
        if n in keys:
            # the payloader's SS: one spatial layer at the encoded size, a 1-picture group
            assert d["ss"] == {"spatial_layers": 1, "resolutions": [(320, 240)], "group_size": 1}
            assert d["descriptor_len"] == 11
        else:
            assert d["ss"] is None and d["descriptor_len"] == 3


def test_real_stream_through_the_filter_is_all_forwarded_with_its_markers():
    f = c.Vp9Filter()
    for p in REAL:
        rc, marker = f.packet(p["payload"], 0, 0)
        assert rc == 1
        assert marker == p["marker"]
    # the SS said one layer: a higher target still marks the top layer's frame ends
    f = c.Vp9Filter()
    for p in REAL:
        rc, marker = f.packet(p["payload"], 2, 2)
        assert rc == 1 and marker == p["marker"]


def test_parse_hand_built_layered_descriptors():
    d = c.vp9_parse(desc(300, p=0, b=1, e=0, tid=0, sid=0, tl0=7, ss=SS_L3))
    assert d["picture_id"] == 300 and d["keyframe"] and d["tl0picidx"] == 7
    assert d["ss"] == {"spatial_layers": 3, "resolutions": [(320, 180), (640, 360), (1280, 720)], "group_size": 4}
    assert d["descriptor_len"] == 5 + len(SS_L3)
    d = c.vp9_parse(desc(301, p=1, b=1, e=1, tid=2, u=1, sid=2, d=1, tl0=7))
    assert (d["tid"], d["switching_up_point"], d["sid"], d["inter_layer_dependency"]) == (2, 1, 2, 1)
    assert not d["keyframe"] and d["descriptor_len"] == 5
    # flexible mode: TL0PICIDX absent, reference indices read
    d = c.vp9_parse(desc(302, p=1, b=1, e=1, tid=1, sid=0, flexible=True, refs=(1, 2, 127)))
    assert d["flexible"] and d["tl0picidx"] is None and d["p_diff"] == [1, 2, 127]
    assert d["descriptor_len"] == 1 + 2 + 1 + 3
    # upper layer of a key picture: P=0, B=1 but SID 1 is not a key frame
    d = c.vp9_parse(desc(303, p=0, b=1, e=1, tid=0, sid=1, d=1))
    assert not d["keyframe"]


def test_malformed_and_truncated_descriptors_are_refused():
    samples = [desc(300, p=0, b=1, e=0, tid=0, sid=0, tl0=7, ss=SS_L3),
               desc(302, p=1, b=1, e=1, tid=1, sid=0, flexible=True, refs=(1, 2, 3)),
               REAL[0]["payload"]]
    for s in samples:
        n = c.vp9_parse(s)["descriptor_len"]
        for k in range(n):
            with pytest.raises(c.CodecError) as e:
                c.vp9_parse(s[:k])
            assert e.value.code == c.VP9_ETRUNCATED, k
        with pytest.raises(c.CodecError) as e:
            c.vp9_parse(s[:n])  # no payload after the descriptor
        assert e.value.code == c.VP9_EINVALID
    # a fourth reference index announced (N=1 on the third)
    bad = bytes([0xF8]) + b"\x81\x02" + bytes([1 << 5]) + b"\x03\x05\x07\x09" + BODY
    with pytest.raises(c.CodecError) as e:
        c.vp9_parse(bad)
    assert e.value.code == c.VP9_ETRUNCATED
    # an SS whose picture group announces more P_DIFFs than there are bytes
    ss = bytes([0 << 5 | 1 << 3, 1, 3 << 2, 1])  # N_G=1, R=3, one P_DIFF
    with pytest.raises(c.CodecError):
        c.vp9_parse(bytes([0x8E]) + b"\x81\x02" + ss)


def forward(stream, targets, ksvc=False):
    """targets(picture) -> (sid, tid). Returns [(picture, sid, tid, marker)]
    of the forwarded packets and the filter."""
    f = c.Vp9Filter()
    sent = []
    for payload, marker, n, sid, tid in stream:
        ts, tt = targets(n)
        rc, set_marker = f.packet(payload, ts, tt, ksvc)
        assert rc in (0, 1)
        if rc:
            sent.append((n, sid, tid, int(marker or set_marker)))
    return sent, f


@pytest.mark.parametrize("ksvc", [False, True])
@pytest.mark.parametrize("tsid,ttid", [(0, 0), (1, 1), (2, 2), (1, 2), (2, 0)])
def test_filter_keeps_only_the_wanted_layers_and_marks_picture_ends(ksvc, tsid, ttid):
    stream = svc_stream(32, ksvc=ksvc)
    sent, f = forward(stream, lambda n: (tsid, ttid), ksvc)
    assert (f.sid, f.tid) == (tsid, ttid)
    want = [(n, sid, tid) for _, _, n, sid, tid in stream if sid <= tsid and tid <= ttid]
    assert [(n, sid, tid) for n, sid, tid, _ in sent] == want
    # exactly one marker per forwarded picture, on the last packet of its top layer
    by_picture = {}
    for n, sid, tid, m in sent:
        by_picture.setdefault(n, []).append((sid, m))
    assert by_picture
    for n, pkts in by_picture.items():
        assert [m for _, m in pkts] == [0] * (len(pkts) - 1) + [1], n
        assert pkts[-1][0] == tsid


def test_nothing_is_forwarded_before_the_first_key_picture():
    stream = svc_stream(20)
    late = [s for s in stream if s[2] >= 3]  # join at picture 3; next key picture is 16
    sent, _f = forward(late, lambda n: (2, 2))
    assert sent and min(n for n, *_ in sent) == 16


def test_spatial_down_at_the_next_picture_up_at_a_key_picture_ksvc():
    stream = svc_stream(40, ksvc=True)
    # S2 until picture 5; S0 asked from the middle of picture 5 (its SID 1
    # frame on): picture 5 still gets all its layers, picture 6 only S0;
    # S2 again from picture 9: K-SVC waits for the key picture 16
    sent, f = [], c.Vp9Filter()
    for payload, marker, n, sid, tid in stream:
        tsid = 2 if n < 5 or (n == 5 and sid == 0) or n >= 9 else 0
        rc, m = f.packet(payload, tsid, 2, True)
        if rc:
            sent.append((n, sid, int(marker or m)))
    layers = {}
    for n, sid, _ in sent:
        layers.setdefault(n, set()).add(sid)
    assert all(layers[n] == {0, 1, 2} for n in range(6))
    assert all(layers[n] == {0} for n in range(6, 16))
    assert all(layers[n] == {0, 1, 2} for n in range(16, 40))
    # picture 5: one marker (on S2); pictures 6..15: on S0's last packet
    assert [m for n, sid, m in sent if n == 5] == [0] * 5 + [1]
    for n in range(6, 16):
        assert [(sid, m) for k, sid, m in sent if k == n] == [(0, 0), (0, 1)]


def test_full_svc_spatial_up_at_a_frame_not_inter_picture_predicted():
    """Full SVC: picture 6's SID 1 frame and picture 7's SID 2 frame are
    sent with P=0 (they depend only on the lower layers of their picture):
    the filter moves up one layer at each; K-SVC mode would not."""
    stream = svc_stream(12, intra_upper={(6, 1), (7, 2)})
    targets = lambda n: (0, 2) if n < 3 else (2, 2)
    sent, _f = forward(stream, targets)
    layers = {}
    for n, sid, _, _ in sent:
        layers.setdefault(n, set()).add(sid)
    assert layers[5] == {0}
    assert layers[6] == {0, 1}
    assert all(layers[n] == {0, 1, 2} for n in range(7, 12))
    # picture 6's marker moved to its S1 frame end
    assert [m for n, sid, _, m in sent if n == 6] == [0, 1, 0, 1]
    sent_k, _ = forward(stream, targets, ksvc=True)
    assert {sid for n, sid, _, _ in sent_k if 3 <= n < 12} == {0}


def test_temporal_up_at_a_switching_up_point_down_at_any_picture():
    stream = svc_stream(24)
    # T0 until picture 4, then T2. U=1 on a TID t frame promises that later
    # pictures above t do not reference pictures above t before it; this
    # stream sets U only on its TID 1/2 frames, which are dropped at T0 (the
    # promise says nothing about the frame itself), so the filter stays at
    # T0 until the next key picture (16).
    sent, f = forward(stream, lambda n: (0, 0) if n < 4 else (0, 2))
    assert f.tid == 2
    tids = {n: tid for n, _, tid, _ in sent}
    assert sorted(n for n in tids if n < 16) == [0, 4, 8, 12]
    assert sorted(n for n in tids if n >= 16) == list(range(16, 24))
    # from T1: picture 6 (TID 1, U=1) is forwarded and opens T2 from picture 7
    sent, _ = forward(stream, lambda n: (0, 1) if n < 6 else (0, 2))
    got = sorted({n for n, *_ in sent})
    assert got == [0, 2, 4] + list(range(6, 24))
    # down at the next picture
    sent, _f = forward(stream, lambda n: (0, 2) if n < 9 else (0, 0))
    got = sorted({n for n, *_ in sent})
    assert got == list(range(9)) + [12, 16, 20]
