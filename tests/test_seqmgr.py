"""Sequence number rewriting (src/seqmgr.h), table-driven in the style of
mediasoup's TestSeqManager.cpp. Each row is (input, output, sync, drop):

    sync  -> sync(input - 1) before the row (the stream resumes at `input`)
    drop  -> drop(input) and expect nothing
    else  -> input(input) must return `output` (None: reported as dropped)

Every table runs against the compiled SeqManager and the reference.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu._fastpath import _reference, _testhooks

IMPLS = [_testhooks.SeqManager, _reference.SeqManager]


@pytest.fixture(params=IMPLS, ids=["compiled", "reference"])
def SeqManager(request):
    return request.param


def validate(mgr, rows):
    for i, (inp, out, sync, drop) in enumerate(rows):
        if sync:
            mgr.sync((inp - 1) & 0xFFFF)
        if drop:
            mgr.drop(inp)
        else:
            got = mgr.input(inp)
            assert got == out, f"row {i}: input {inp} -> {got}, expected {out}"


TABLES = {
    # The tables below are mediasoup's (SeqManager<uint16_t>); our numbers agree.
    "ordered, no sync, no drop": [
        (0, 0, False, False),
        (1, 1, False, False),
        (2, 2, False, False),
        (3, 3, False, False),
        (4, 4, False, False),
        (5, 5, False, False),
        (6, 6, False, False),
        (7, 7, False, False),
        (8, 8, False, False),
        (9, 9, False, False),
        (10, 10, False, False),
        (11, 11, False, False),
    ],
    "ordered, sync, no drop": [
        (0, 0, False, False),
        (1, 1, False, False),
        (2, 2, False, False),
        (80, 3, True, False),  # sync.
        (81, 4, False, False),
        (82, 5, False, False),
        (83, 6, False, False),
        (84, 7, False, False),
    ],
    "ordered, sync, drop": [
        (0, 0, False, False),
        (1, 1, False, False),
        (2, 2, False, False),
        (3, 3, False, False),
        (4, 4, True, False),  # sync.
        (5, 5, False, False),
        (6, 6, False, False),
        (7, 7, True, False),  # sync.
        (8, 0, False, True),  # drop.
        (9, 8, False, False),
        (11, 0, False, True),  # drop.
        (10, 9, False, False),
        (12, 10, False, False),
    ],
    "ordered, wrapped": [
        (65533, 65533, False, False),
        (65534, 65534, False, False),
        (65535, 65535, False, False),
        (0, 0, False, False),
        (1, 1, False, False),
    ],
    "big jump": [
        (0, 0, False, False),
        (1, 1, False, False),
        (1000, 1000, False, False),
        (1001, 1001, False, False),
    ],
    "big jump, drop before jump": [
        (0, 0, False, False),
        (1, 0, False, True),  # drop.
        (100, 99, False, False),
        (100, 99, False, False),
        (103, 0, False, True),  # drop.
        (101, 100, False, False),
    ],
    "big jump, drop after jump": [
        (0, 0, False, False),
        (1, 1, False, False),
        (100, 0, False, True),  # drop.
        (103, 0, False, True),  # drop.
        (101, 100, False, False),
    ],
    "drop, then newer and older than the dropped one": [
        (0, 0, False, False),
        (2, 0, False, True),  # drop.
        (3, 2, False, False),
        (4, 3, False, False),
        (1, 1, False, False),
    ],
    "mixed, sync, drop": [
        (0, 0, False, False),
        (1, 1, False, False),
        (2, 2, False, False),
        (3, 3, False, False),
        (7, 7, False, False),
        (6, 0, False, True),  # drop. (older than 7: ignored)
        (8, 8, False, False),
        (10, 10, False, False),
        (9, 9, False, False),
        (11, 11, False, False),
        (0, 12, True, False),  # sync.
        (2, 14, False, False),
        (3, 15, False, False),
        (4, 16, False, False),
        (5, 17, False, False),
        (6, 18, False, False),
        (7, 19, False, False),
        (8, 20, False, False),
        (9, 21, False, False),
        (10, 22, False, False),
        (9, 0, False, True),  # drop. (older: ignored)
        (61, 23, True, False),  # sync.
        (62, 24, False, False),
        (63, 25, False, False),
        (64, 26, False, False),
        (65, 27, False, False),
        (11, 28, True, False),  # sync.
        (12, 29, False, False),
        (13, 30, False, False),
        (14, 31, False, False),
        (15, 32, False, False),
        (1, 33, True, False),  # sync.
        (2, 34, False, False),
        (3, 35, False, False),
        (4, 36, False, False),
        (5, 37, False, False),
        (65533, 38, True, False),  # sync.
        (65534, 39, False, False),
        (65535, 40, False, False),
        (0, 41, True, False),  # sync.
        (1, 42, False, False),
        (3, 0, False, True),  # drop.
        (4, 44, False, False),
        (5, 45, False, False),
        (6, 46, False, False),
        (7, 47, False, False),
    ],
    "drop many at the beginning": [
        (1, 1, False, False),
        (2, 0, False, True),  # drop.
        (3, 0, False, True),  # drop.
        (4, 0, False, True),  # drop.
        (5, 0, False, True),  # drop.
        (6, 0, False, True),  # drop.
        (7, 0, False, True),  # drop.
        (8, 0, False, True),  # drop.
        (9, 0, False, True),  # drop.
        (120, 112, False, False),
        (121, 113, False, False),
        (122, 114, False, False),
        (139, 131, False, False),
    ],
    "drop many at the beginning, high values": [
        (1, 1, False, False),
        (2, 0, False, True),  # drop.
        (3, 0, False, True),  # drop.
        (4, 0, False, True),  # drop.
        (5, 0, False, True),  # drop.
        (6, 0, False, True),  # drop.
        (7, 0, False, True),  # drop.
        (8, 0, False, True),  # drop.
        (9, 0, False, True),  # drop.
        (32768, 32760, False, False),
        (32769, 32761, False, False),
        (32780, 32772, False, False),
    ],
    "sync and drop near max value": [
        (65530, 1, True, False),  # sync.
        (65531, 2, False, False),
        (65532, 3, False, False),
        (65533, 0, False, True),  # drop.
        (65534, 0, False, True),  # drop.
        (65535, 4, False, False),
        (0, 5, False, False),
        (1, 6, False, False),
        (2, 7, False, False),
        (3, 8, False, False),
    ],
    "same output for an old input before the drop": [
        (10, 1, True, False),  # sync.
        (11, 2, False, False),
        (12, 3, False, False),
        (13, 4, False, False),
        (14, 0, False, True),  # drop.
        (15, 5, False, False),
        (12, 3, False, False),
    ],
    # Ours.
    "a dropped input stays dropped, duplicates repeat their output": [
        (100, 1, True, False),  # sync.
        (101, 2, False, False),
        (102, 0, False, True),  # drop.
        (102, None, False, False),
        (103, 3, False, False),
        (103, 3, False, False),
        (101, 2, False, False),
        (102, None, False, False),
    ],
    "repeated drops of the same input count once": [
        (0, 1, True, False),  # sync.
        (1, 0, False, True),  # drop.
        (1, 0, False, True),  # drop.
        (1, 0, False, True),  # drop.
        (2, 2, False, False),
        (3, 3, False, False),
    ],
    "dropping an input already output changes nothing": [
        (0, 1, True, False),  # sync.
        (1, 2, False, False),
        (2, 3, False, False),
        (1, 0, False, True),  # drop. (older than max input: ignored)
        (2, 0, False, True),  # drop. (equal to max input: ignored)
        (1, 2, False, False),
        (3, 4, False, False),
    ],
    "reordering around drops": [
        (0, 1, True, False),  # sync.
        (1, 2, False, False),
        (3, 4, False, False),
        (2, 3, False, False),
        (5, 0, False, True),  # drop.
        (7, 7, False, False),  # 6 not seen yet: its slot stays reserved
        (4, 5, False, False),
        (6, 0, False, True),  # drop. (older than 7: ignored, slot 6 is never sent)
        (6, 6, False, False),  # ... so a late 6 still gets it
        (8, 8, False, False),
        (9, 0, False, True),  # drop.
        (10, 0, False, True),  # drop.
        (12, 10, False, False),
        (11, 9, False, False),
        (10, None, False, False),
        (13, 11, False, False),
    ],
    "drop before anything started: next input follows max_output": [
        (50, 0, False, True),  # drop.
        (51, 1, False, False),
        (52, 2, False, False),
        (54, 0, False, True),  # drop.
        (53, 3, False, False),
        (55, 4, False, False),
    ],
    "sync right after drops discards them": [
        (0, 1, True, False),  # sync.
        (1, 0, False, True),  # drop.
        (2, 0, False, True),  # drop.
        (3, 2, False, False),
        (500, 3, True, False),  # sync.
        (1, None, False, False),  # an input from before the sync: rejected (its output slot was used before it)
        (501, 4, False, False),
    ],
    "sync backwards (new source restarting lower)": [
        (30000, 1, True, False),  # sync.
        (30001, 2, False, False),
        (5, 3, True, False),  # sync.
        (6, 4, False, False),
        (30002, 30000, False, False),  # late packet of the old source: far away
    ],
    "reordered across the wrap": [
        (65534, 1, True, False),  # sync.
        (0, 3, False, False),
        (65535, 2, False, False),
        (2, 0, False, True),  # drop.
        (1, 4, False, False),
        (3, 5, False, False),
    ],
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_table(SeqManager, name):
    validate(SeqManager(0), TABLES[name])


def test_initial_output_is_where_the_first_sync_starts(SeqManager):
    validate(SeqManager(1000), [
        (7777, 1001, True, False),  # sync.
        (7778, 1002, False, False),
        (7780, 0, False, True),  # drop.
        (7779, 1003, False, False),
        (7781, 1004, False, False),
    ])
    validate(SeqManager(65535), [
        (10, 0, True, False),  # sync.
        (11, 1, False, False),
    ])


def test_initial_output_without_sync(SeqManager):
    # Without a sync the first input maps to itself (the engine always syncs
    # first); a drop before it moves base so the next input follows
    # initial_output instead.
    validate(SeqManager(1000), [(7, 7, False, False), (8, 8, False, False)])
    validate(SeqManager(1000), [(7, 0, False, True), (8, 1001, False, False)])  # drop.


def test_max_output(SeqManager):
    m = SeqManager(400)
    assert m.max_output == 400
    m.sync(9)
    assert m.max_output == 400
    assert [m.input(i) for i in (10, 12, 11)] == [401, 403, 402]
    assert m.max_output == 403
    m.sync(99)
    assert m.input(100) == 404 and m.max_output == 404


def test_values_are_16_bit(SeqManager):
    m = SeqManager(65536 + 5)  # truncated like the C uint16_t
    m.sync(-1)  # == 65535
    assert m.input(0) == 6
    assert m.input(65536 + 1) == 7


# ----------------------------------------------------------------- folding


def test_more_than_64_drops_fold_into_base(SeqManager):
    rows = [(0, 0, False, False)]
    rows += [(i, 0, False, True) for i in range(1, 71)]  # drop. x70 (6 folded)
    rows += [
        (71, 1, False, False),
        (72, 2, False, False),
        (10, None, False, False),  # still in the list of 64: [7..70]
        (70, None, False, False),
        (6, 0, False, False),  # folded: 6 + base (-6), like any input older than the list
        (73, 3, False, False),
    ]
    validate(SeqManager(0), rows)


def test_interleaved_drops_over_many_folds(SeqManager):
    rows = [(0, 1, True, False)]  # sync.
    out = 1
    for i in range(1, 1000):
        if i % 2:
            rows.append((i, 0, False, True))  # drop.
        else:
            out += 1
            rows.append((i, out, False, False))
    validate(SeqManager(0), rows)


def test_drops_older_than_the_fold_distance_are_folded(SeqManager):
    m = SeqManager(0)
    m.sync(65535)
    assert m.input(0) == 1
    m.drop(1)
    assert m.input(2) == 2
    assert m.input(1) is None
    assert m.input(4097) == 4097  # 4096 ahead of the drop: folded now
    assert m.input(1) == 1  # so no longer reported as dropped (collides with 0's slot +1)
    assert m.input(4098) == 4098


@pytest.mark.parametrize("only_inputs_after_drop", [1, 3, 64])
def test_long_run_after_drops_stays_contiguous(SeqManager, only_inputs_after_drop):
    """A stream that drops a few packets and then never again: outputs stay
    contiguous through two wraps and a dropped number is not reported as
    dropped again 65536 packets later (regression: entries were only folded
    in drop(), so input() kept comparing against them forever)."""
    m = SeqManager(0)
    m.sync(65535)
    prev = m.input(0)
    for i in range(1, 1 + only_inputs_after_drop):
        m.drop(i)
    for k in range(1 + only_inputs_after_drop, 140_000):
        out = m.input(k & 0xFFFF)
        assert out == (prev + 1) & 0xFFFF, f"input {k & 0xFFFF} (#{k})"
        prev = out


# ----------------------------------------------------------------- wrap-around sweeps

STARTS = [0, 1, 127, 32767, 32768, 65534, 65535]


def sweep_rows(start: int, initial: int) -> list:
    """A stream from `start` for 600 packets with a drop every 7th, a
    pause/resume (sync) that jumps the input by 3000 half-way, and adjacent
    pairs delivered swapped every 50th; outputs counted independently."""
    ordered = []  # (input, expected output or None for a drop, sync)
    out = initial
    seq = start
    for k in range(600):
        sync = k == 0 or k == 300
        if k == 300:
            seq = (seq + 3000) & 0xFFFF
        if not sync and k % 7 == 3:
            ordered.append((seq, None, False))
        else:
            out = (out + 1) & 0xFFFF
            ordered.append((seq, out, sync))
        seq = (seq + 1) & 0xFFFF
    for k in range(10, 600, 50):
        a, b = ordered[k], ordered[k + 1]
        if a[1] is not None and b[1] is not None and not a[2] and not b[2]:
            ordered[k], ordered[k + 1] = b, a
    return [(inp, 0 if exp is None else exp, sync, exp is None) for inp, exp, sync in ordered]


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("initial", [0, 65535, 1000])
def test_wraparound_sweep(SeqManager, start, initial):
    validate(SeqManager(initial), sweep_rows(start, initial))


@pytest.mark.parametrize("start", STARTS)
def test_wraparound_consecutive_drops(SeqManager, start):
    rows = [(start, 1, True, False)]  # sync.
    rows += [((start + i) & 0xFFFF, 0, False, True) for i in range(1, 100)]  # drop. x99
    rows += [((start + 100 + i) & 0xFFFF, 2 + i, False, False) for i in range(5)]
    rows += [((start + 50) & 0xFFFF, None, False, False)]  # still known as dropped
    validate(SeqManager(0), rows)


# ----------------------------------------------------------------- property


@st.composite
def streams(draw):
    """An in-order stream with drops, resumes and local reordering."""
    start = draw(st.integers(0, 0xFFFF))
    n = draw(st.integers(1, 300))
    events = draw(st.lists(st.sampled_from("iiiiiiidds"), min_size=n, max_size=n))
    swaps = draw(st.lists(st.integers(0, n), max_size=10))
    return start, events, swaps


@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(0, 0xFFFF))
def test_property_outputs_contiguous(start_events_swaps, initial):
    start, events, swaps = start_events_swaps
    ordered = []
    out = initial
    seq = start
    for k, ev in enumerate(events):
        sync = k == 0 or ev == "s"
        if sync and k:
            seq = (seq + 1000) & 0xFFFF
        if ev == "d" and not sync:
            ordered.append((seq, 0, False, True))
        else:
            out = (out + 1) & 0xFFFF
            ordered.append((seq, out, sync, False))
        seq = (seq + 1) & 0xFFFF
    for k in swaps:
        if k + 1 < len(ordered):
            a, b = ordered[k], ordered[k + 1]
            if not (a[2] or a[3] or b[2] or b[3]):
                ordered[k], ordered[k + 1] = b, a
    for impl in IMPLS:
        validate(impl(initial), ordered)


def test_late_inputs_from_before_a_sync_do_not_reuse_outputs(SeqManager):
    """After a resume (sync), a straggler from before it would map onto an
    output number already sent; it is rejected instead."""
    m = SeqManager(100)
    validate(m, [(10, 101, True, False), (11, 102, False, False)])
    m.sync(499)
    assert m.input(500) == 103
    assert m.input(499) is None and m.input(498) is None
    assert m.input(501) == 104
    # far enough past the sync point the guard lifts (no effect on newer inputs)
    assert m.input((500 + 16384) & 0xFFFF) == (103 + 16384) & 0xFFFF
