"""Differential tests: the compiled packet core against the pure-Python
reference (sfu._fastpath._reference) on random, mutated and structured
inputs. Same result or the same ValueError text, always; the C code must
survive any bytes."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sfu._fastpath import _testhooks as C
from sfu._fastpath import _reference as R

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.bin"))
FIXTURE_BYTES = [p.read_bytes() for p in FIXTURES]
RTP_FIXTURES = [p.read_bytes() for p in FIXTURES if p.name.startswith("rtp_")]
RTCP_FIXTURES = [p.read_bytes() for p in FIXTURES if p.name.startswith("rtcp_")]

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ValueError as e:
        return ("ValueError", str(e))


def same(name: str, *args):
    c = outcome(getattr(C, name), *args)
    r = outcome(getattr(R, name), *args)
    assert c == r, f"{name}{args!r}: compiled {c!r} != reference {r!r}"
    return c


def check_all_rtp(data: bytes, mapping: dict | None = None):
    same("classify", data)
    parsed = same("parse_rtp", data)
    same("rtp_extensions", data)
    same("map_extensions", data, mapping if mapping is not None else {})
    # a consumer writing its own MID (id 1 here, or a two-byte id)
    same("rewrite_extensions", data, mapping if mapping is not None else {}, 1, b"video0")
    same("rewrite_extensions", data, mapping if mapping is not None else {}, 200, b"m")
    same("rewrite_extensions", data, mapping if mapping is not None else {}, 0, b"")
    return parsed


# ----------------------------------------------------------------- strategies


@st.composite
def mutated(draw, base):
    """`base` with random truncation, bit flips and byte overwrites."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[i] ^= 1 << draw(st.integers(0, 7))
        else:
            data[i] = draw(st.integers(0, 255))
    if data and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def one_byte_block(draw):
    out = bytearray()
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["elem", "elem", "elem", "pad", "raw", "id15"]))
        if kind == "elem":
            n = draw(st.integers(1, 16))
            out.append((draw(st.integers(1, 14)) << 4) | (n - 1))
            out += draw(st.binary(min_size=n, max_size=n))
        elif kind == "pad":
            out.append(draw(st.integers(0, 15)))  # id 0 with any length nibble
        elif kind == "raw":
            out.append(draw(st.integers(0, 255)))
        else:
            out.append(0xF0 | draw(st.integers(0, 15)))
    return bytes(out)


@st.composite
def two_byte_block(draw):
    out = bytearray()
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["elem", "elem", "elem", "pad", "raw"]))
        if kind == "elem":
            n = draw(st.integers(0, 40))
            out += bytes((draw(st.integers(1, 255)), n))
            out += draw(st.binary(min_size=n, max_size=n))
        elif kind == "pad":
            out.append(0)
        else:
            out.append(draw(st.integers(0, 255)))
    return bytes(out)


@st.composite
def rtp_packets(draw):
    """Mostly well-formed RTP with random CSRCs, extensions and padding."""
    ncsrc = draw(st.integers(0, 15))
    kind = draw(st.sampled_from(["none", "one", "one", "two", "two", "opaque", "many"]))
    first = 0x80 | ncsrc
    ext = b""
    if kind != "none":
        first |= 0x10
        if kind == "one":
            profile, block = 0xBEDE, draw(one_byte_block())
        elif kind == "two":
            profile, block = 0x1000 | draw(st.integers(0, 15)), draw(two_byte_block())
        elif kind == "many":  # around the 32-element limit
            n = draw(st.integers(28, 36))
            profile, block = 0xBEDE, b"".join(bytes(((1 + i % 14) << 4, i)) for i in range(n))
        else:
            profile, block = draw(st.integers(0, 0xFFFF)), draw(st.binary(max_size=16))
        fill = -len(block) % 4
        block += bytes(fill) if draw(st.booleans()) else draw(st.binary(min_size=fill, max_size=fill))
        ext = struct.pack("!HH", profile, len(block) // 4) + block
    payload = draw(st.binary(max_size=64)) if draw(st.booleans()) else b""
    pad = b""
    if draw(st.booleans()):
        first |= 0x20
        n = draw(st.integers(1, 40))
        pad = draw(st.binary(min_size=n - 1, max_size=n - 1)) + bytes((n,))
    head = struct.pack("!BBHII", first, draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFF)),
                       draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
    csrcs = b"".join(struct.pack("!I", draw(st.integers(0, 2**32 - 1))) for _ in range(ncsrc))
    return head + csrcs + ext + payload + pad


def id_maps():
    """Random id mappings, biased to the one-byte range and the top of the
    two-byte range; out-of-range entries now and then."""
    ids = st.one_of(st.integers(0, 16), st.integers(0, 255))
    in_range = st.dictionaries(ids, st.one_of(st.integers(0, 16), st.integers(250, 255), st.integers(0, 255)),
                               max_size=12)
    anything = st.dictionaries(st.integers(-2, 258), st.integers(-2, 258), max_size=4)
    identity = st.just({i: i for i in range(1, 256)})
    return st.one_of(in_range, in_range, identity, anything)


@st.composite
def rtcp_compounds(draw):
    out = bytearray()
    if draw(st.integers(0, 9)) == 0:  # around the 64-packet limit
        out += b"\x80\xca\x00\x00" * draw(st.integers(62, 65))
    for i in range(draw(st.integers(1, 8))):
        pt = draw(st.one_of(st.sampled_from([200, 201, 202, 203, 204, 205, 206, 207]), st.integers(188, 227)))
        count = draw(st.integers(0, 31)) if draw(st.booleans()) else draw(st.integers(0, 2))
        body_words = draw(st.integers(0, 14))
        padded = draw(st.integers(0, 7)) == 0
        version = 2 if draw(st.integers(0, 30)) else draw(st.integers(0, 3))
        body = bytearray(draw(st.binary(min_size=4 * body_words, max_size=4 * body_words)))
        if padded and body:
            body[-1] = draw(st.integers(0, 4 * body_words + 4))
        length = body_words if draw(st.integers(0, 20)) else draw(st.integers(0, 0xFFFF))
        out += struct.pack("!BBH", (version << 6) | (0x20 if padded else 0) | count, pt, length) + body
    return bytes(out)


# ----------------------------------------------------------------- RTP


@FAST
@given(st.binary(max_size=120))
def test_random_bytes(data):
    check_all_rtp(data)
    same("parse_rtcp", data)


@FAST
@given(st.builds(lambda a, b: bytes((a,)) + b, st.integers(0x80, 0xBF), st.binary(max_size=100)))
def test_random_bytes_with_rtp_version(data):
    check_all_rtp(data, {1: 2, 2: 1, 3: 15})


@FAST
@given(mutated(st.sampled_from(FIXTURE_BYTES)), id_maps())
def test_mutated_fixtures(data, mapping):
    check_all_rtp(data, mapping)
    same("parse_rtcp", data)


@FAST
@given(rtp_packets(), id_maps())
def test_structured_rtp(data, mapping):
    check_all_rtp(data, mapping)


@FAST
@given(rtp_packets(), st.data())
def test_structured_rtp_mapping_present_ids(data, draw):
    """Mappings over the ids the packet actually carries, to targets around
    the one-byte/two-byte boundaries."""
    try:
        ids = sorted({i for i, _ in R.rtp_extensions(data)})
    except ValueError:
        ids = []
    keys = st.sampled_from(ids) if ids else st.integers(1, 14)
    mapping = draw.draw(st.dictionaries(keys, st.sampled_from([0, 1, 2, 7, 13, 14, 15, 16, 100, 254, 255])))
    check_all_rtp(data, mapping)


@FAST
@given(mutated(rtp_packets()), id_maps())
def test_mutated_structured_rtp(data, mapping):
    check_all_rtp(data, mapping)


@FAST
@given(rtp_packets(), id_maps())
def test_map_extensions_properties(data, mapping):
    """Beyond agreeing: the rewrite keeps everything but the block, and the
    elements are exactly the mapped input elements."""
    assume(all(0 <= k < 256 and 0 <= v < 256 for k, v in mapping.items()))
    try:
        before = C.parse_rtp(data)
        elems = C.rtp_extensions(data)
    except ValueError:
        return
    out = C.map_extensions(data, mapping)
    after = C.parse_rtp(out)
    for key in ("marker", "payload_type", "sequence_number", "timestamp", "ssrc", "csrcs", "payload",
                "padding", "padding_length"):
        assert after[key] == before[key], key
    assert out.endswith(data[before["header_length"]:])
    if elems:
        table = {k: v for k, v in mapping.items() if k}
        expected = [(table[i], v) for i, v in elems if table.get(i)]
        assert C.rtp_extensions(out) == expected
        assert after["extension"] == bool(expected)
        if expected:
            one_byte = all(i <= 14 and 1 <= len(v) <= 16 for i, v in expected)
            assert after["extension_profile"] == (0xBEDE if one_byte else 0x1000)
        # Mapping the result again with the identity changes nothing.
        assert C.map_extensions(out, {i: i for i in range(1, 256)}) == out
    else:
        assert out == data


@FAST
@given(rtp_packets(), id_maps(), st.integers(1, 255), st.binary(min_size=1, max_size=16))
def test_rewrite_extensions_writes_the_consumers_mid(data, mapping, add_id, value):
    """The consumer's MID element is present exactly once with its value,
    every other mapped element is kept, the payload is untouched."""
    assume(all(0 <= k < 256 and 0 <= v < 256 for k, v in mapping.items()))
    try:
        before = C.parse_rtp(data)
        elems = C.rtp_extensions(data)
    except ValueError:
        return
    opaque = before["extension"] and before["extension_profile"] != 0xBEDE and (
        before["extension_profile"] & 0xFFF0) != 0x1000
    out = C.rewrite_extensions(data, mapping, add_id, value)
    if opaque:
        assert out == data
        return
    after = C.parse_rtp(out)
    for key in ("marker", "payload_type", "sequence_number", "timestamp", "ssrc", "csrcs", "payload",
                "padding_length"):
        assert after[key] == before[key], key
    table = {k: v for k, v in mapping.items() if k}
    expected = [(table[i], v) for i, v in elems if table.get(i) and table[i] != add_id]
    if len(expected) < 32:  # the parser's limit: a full block gains nothing
        expected.append((add_id, value))
    assert C.rtp_extensions(out) == expected


def test_large_packets():
    big = R.build_rtp(extensions=[(1, b"a"), (2, b"bb")], payload=bytes(range(256)) * 300, padding=200)
    check_all_rtp(big, {1: 20, 2: 2})
    many = b"\x90\x60" + bytes(10) + b"\x10\x00\xff\xff" + bytes(4 * 0xFFFF) + b"tail"
    check_all_rtp(many, {1: 1})


# ----------------------------------------------------------------- RTCP


@FAST
@given(rtcp_compounds())
def test_structured_rtcp(data):
    same("parse_rtcp", data)
    same("classify", data)


@FAST
@given(mutated(rtcp_compounds()))
def test_mutated_rtcp(data):
    same("parse_rtcp", data)


@FAST
@given(mutated(st.lists(st.sampled_from(RTCP_FIXTURES), min_size=1, max_size=5).map(b"".join)))
def test_mutated_rtcp_fixture_compounds(data):
    same("parse_rtcp", data)


# ----------------------------------------------------------------- classify


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3))
def test_classify(data):
    same("classify", data)


# ----------------------------------------------------------------- SeqManager


OPS = ["input"] * 6 + ["drop"] * 3 + ["sync"]
STEPS = list(range(-3, 6)) + [1, 1, 1, 2, 2, 100, -100, 4096, -4096, 32767, 32768, 40000]


@st.composite
def seq_ops(draw, max_ops=200):
    """Operations around a moving cursor: mostly forward steps, some
    reordering, occasional big jumps."""
    cursor = draw(st.integers(0, 0xFFFF))
    pairs = draw(st.lists(st.tuples(st.integers(0, len(OPS) - 1), st.integers(0, len(STEPS) - 1)),
                          min_size=1, max_size=max_ops))
    ops = []
    for op, step in pairs:
        cursor = (cursor + STEPS[step]) & 0xFFFF
        ops.append((OPS[op], cursor))
    return ops


def run_ops(cls, initial, ops):
    m = cls(initial)
    trace = []
    for op, value in ops:
        result = getattr(m, op)(value)
        trace.append((op, value, result, m.max_output))
    return trace


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), seq_ops())
def test_seqmgr_random_ops(initial, ops):
    assert run_ops(C.SeqManager, initial, ops) == run_ops(R.SeqManager, initial, ops)


@st.composite
def seq_runs(draw):
    """Long sequential runs with drops in bursts: exercises folding (64
    entries, 4096 distance) and wrap-around."""
    cursor = draw(st.integers(0, 0xFFFF))
    ops = [("sync", (cursor - 1) & 0xFFFF)]
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["inputs", "drops", "mixed", "jump"]))
        n = draw(st.integers(1, 5000 if kind == "inputs" else 120))
        for i in range(n):
            if kind == "jump":
                cursor = (cursor + draw(st.integers(-100, 9000))) & 0xFFFF
                ops.append((draw(st.sampled_from(["input", "drop", "sync"])), cursor))
                break
            op = "drop" if kind == "drops" or (kind == "mixed" and i % 3 == 0) else "input"
            ops.append((op, cursor))
            cursor = (cursor + 1) & 0xFFFF
        # a few late inputs
        for back in draw(st.lists(st.integers(1, 5000), max_size=3)):
            ops.append(("input", (cursor - back) & 0xFFFF))
    return ops


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(0, 0xFFFF), seq_runs())
def test_seqmgr_long_runs(initial, ops):
    assert run_ops(C.SeqManager, initial, ops) == run_ops(R.SeqManager, initial, ops)
