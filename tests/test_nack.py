"""NACK generator (src/nack.h), table-driven in virtual time.

Each scenario is a list of steps run from several start sequence numbers
straddling the 16-bit wrap (so +17 from 65534 is 15). Sequence numbers in
the steps are offsets from the start:

    ("rx", off, t, new[, recovered])   on_packet(start+off) must return `new`
    ("poll", t, rtt, [offs])           poll() must return exactly these
    ("missing", [offs])                the missing list, oldest first
    ("kf", bool)                       keyframe_needed() (read-and-clear)
    ("deadline", rtt, t_or_None)       next_deadline()
    ("count", name, value)             a counter
"""

from __future__ import annotations

import pytest

from sfu._fastpath import _testhooks

STARTS = [0, 1, 32767, 32768, 65534, 65535]
M = 0xFFFF


def first17(t=0):
    return [("rx", i, t, True) for i in range(17)]


SCENARIOS = {
    "in order: nothing to NACK": [
        *[("rx", i, i, True) for i in range(100)],
        ("poll", 100, 50, []),
        ("missing", []),
        ("deadline", 50, None),
    ],
    "hole at 17: NACKed at once, then after each RTT, recovered by RTX": [
        *first17(),
        ("rx", 18, 1000, True),
        ("missing", [17]),
        ("deadline", 50, 1000),
        ("poll", 1000, 50, [17]),
        ("poll", 1000, 50, []),
        ("deadline", 50, 1050),
        ("poll", 1049, 50, []),
        ("poll", 1050, 50, [17]),
        ("poll", 1080, 50, []),
        ("poll", 1100, 50, [17]),
        ("count", "nacked", 3),
        ("rx", 17, 1110, True, True),
        ("missing", []),
        ("poll", 1200, 50, []),
        ("count", "recovered", 1),
        ("count", "gave_up", 0),
        ("rx", 17, 1120, False, True),  # a second RTX copy is a duplicate
    ],
    "late original removes the entry (counted late, not recovered)": [
        ("rx", 0, 0, True),
        ("rx", 3, 1, True),
        ("missing", [1, 2]),
        ("rx", 2, 2, True),
        ("missing", [1]),
        ("poll", 3, 0, [1]),
        ("rx", 1, 4, True),
        ("count", "late", 2),
        ("count", "recovered", 0),
    ],
    "reordering fixed before the poll: no NACK": [
        ("rx", 0, 0, True),
        ("rx", 2, 1, True),
        ("rx", 1, 2, True),
        ("poll", 3, 100, []),
        ("count", "nacked", 0),
    ],
    "give up after SFU_NACK_MAX_RETRIES NACKs": [
        ("rx", 0, 0, True),
        ("rx", 2, 0, True),
        *[("poll", 50 * i, 50, [1]) for i in range(10)],
        ("poll", 500, 50, []),
        ("missing", []),
        ("count", "nacked", 10),
        ("count", "gave_up", 1),
        ("kf", True),  # the frame of the lost packet cannot be decoded
        ("kf", False),
        ("rx", 1, 510, False),  # too late: no longer tracked
    ],
    "out of retries on a short RTT: kept until SFU_NACK_MIN_GIVE_UP_MS": [
        ("rx", 0, 0, True),
        ("rx", 2, 0, True),
        *[("poll", 10 * i, 10, [1]) for i in range(10)],
        ("poll", 100, 10, []),       # out of retries: asked no more...
        ("missing", [1]),
        ("deadline", 10, 400),
        ("poll", 399, 10, []),
        ("missing", [1]),            # ...but a busy publisher's RTX may still come
        ("kf", False),
        ("poll", 400, 10, []),
        ("missing", []),
        ("count", "gave_up", 1),
        ("kf", True),
    ],
    "give up after SFU_NACK_MAX_AGE_MS": [
        ("rx", 0, 0, True),
        ("rx", 2, 0, True),
        ("poll", 0, 300, [1]),
        ("poll", 300, 300, [1]),
        ("poll", 600, 300, [1]),
        ("poll", 900, 300, [1]),
        ("deadline", 300, 1001),  # the age limit comes before the next retry
        ("poll", 1000, 300, []),
        ("missing", [1]),
        ("kf", False),
        ("poll", 1001, 300, []),
        ("missing", []),
        ("kf", True),
        ("count", "gave_up", 1),
        ("count", "nacked", 4),
    ],
    "rtt 0 means 100 ms, tiny rtt is raised to 10 ms": [
        ("rx", 0, 0, True),
        ("rx", 2, 0, True),
        ("poll", 0, 0, [1]),
        ("poll", 99, 0, []),
        ("poll", 100, 0, [1]),
        ("poll", 105, 1, []),
        ("poll", 110, 1, [1]),
    ],
    "huge jump: keyframe needed, no huge list": [
        *[("rx", i, 0, True) for i in range(5)],
        ("rx", 6, 0, True),
        ("missing", [5]),
        ("rx", 6 + 1001, 10, True),
        ("missing", []),
        ("kf", True),
        ("kf", False),  # read-and-clear
        ("poll", 10, 50, []),
        ("count", "gave_up", 1),
        ("rx", 6 + 1002, 11, True),
        ("poll", 11, 50, []),
    ],
    "jump of 300: newest SFU_NACK_MAX_LIST listed, keyframe needed": [
        ("rx", 0, 0, True),
        ("rx", 301, 0, True),
        ("missing", list(range(301 - 256, 301))),
        ("kf", True),
        ("count", "gave_up", 300 - 256),
    ],
    "list overflow drops the oldest and asks for a keyframe": [
        ("rx", 0, 0, True),
        ("rx", 201, 0, True),   # 200 missing
        ("kf", False),
        ("rx", 302, 1, True),   # +100 missing -> 44 oldest dropped
        ("missing", list(range(45, 201)) + list(range(202, 302))),
        ("kf", True),
        ("count", "gave_up", 44),
    ],
    "duplicates and old packets": [
        ("rx", 10, 0, True),
        ("rx", 10, 0, False),
        ("rx", 9, 0, False),
        ("rx", 11, 0, True),
        ("rx", 11, 0, False),
        ("rx", 10 - 20000, 0, False),
        ("rx", 13, 0, True),
        ("rx", 13, 0, False),
        ("missing", [12]),
    ],
    "poll limit: the rest stays due": [
        ("rx", 0, 0, True),
        ("rx", 5, 0, True),
        ("poll", 0, 100, [1, 2]),  # limit 2 (see run())
        ("poll", 0, 100, [3, 4]),
        ("poll", 0, 100, []),
        ("poll", 100, 100, [1, 2]),
    ],
    "several holes, each on its own schedule": [
        ("rx", 0, 0, True),
        ("rx", 2, 0, True),
        ("poll", 0, 100, [1]),
        ("rx", 4, 40, True),
        ("poll", 40, 100, [3]),
        ("deadline", 100, 100),
        ("poll", 100, 100, [1]),
        ("poll", 140, 100, [3]),
        ("rx", 1, 150, True, True),
        ("poll", 240, 100, [3]),
        ("missing", [3]),
    ],
}


def run(start, steps, limit):
    g = _testhooks.NackGenerator()
    for i, step in enumerate(steps):
        kind = step[0]
        where = f"start {start}, step {i} {step}"
        if kind == "rx":
            _, off, t, new, *rest = step
            rec = bool(rest and rest[0])
            assert g.on_packet((start + off) & M, rec, t) is new, where
        elif kind == "poll":
            _, t, rtt, offs = step
            assert g.poll(t, rtt, limit) == [(start + o) & M for o in offs], where
        elif kind == "missing":
            assert g.missing == [(start + o) & M for o in step[1]], where
        elif kind == "kf":
            assert g.keyframe_needed() is step[1], where
        elif kind == "deadline":
            assert g.next_deadline(step[1]) == step[2], where
        elif kind == "count":
            assert g.counters[step[1]] == step[2], where
        else:  # pragma: no cover
            raise AssertionError(kind)


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name, start):
    limit = 2 if name.startswith("poll limit") else 256
    run(start, SCENARIOS[name], limit)


def test_constants():
    assert _testhooks.NACK_MAX_LIST == 256
    assert _testhooks.NACK_MAX_RETRIES == 10
    assert _testhooks.NACK_MAX_AGE_MS == 1000
    assert _testhooks.NACK_MAX_JUMP == 1000


def test_jump_of_exactly_max_jump_is_listed():
    g = _testhooks.NackGenerator()
    g.on_packet(100, False, 0)
    g.on_packet(100 + 1000, False, 0)
    # 999 missing: more than the list holds, so the newest 256 and a keyframe
    assert len(g.missing) == 256 and g.missing[-1] == 1099
    assert g.keyframe_needed()


def test_first_packet_is_new_and_defines_highest():
    g = _testhooks.NackGenerator()
    assert g.on_packet(40000, False, 0)
    assert g.highest == 40000
    assert g.on_packet(39999, False, 0) is False  # older than the first: not tracked
    assert g.missing == []


def test_time_beyond_32_bits():
    t0 = (1 << 32) - 30  # entry times are stored as the low 32 bits
    g = _testhooks.NackGenerator()
    g.on_packet(1, False, t0)
    g.on_packet(3, False, t0)
    assert g.poll(t0, 50) == [2]
    assert g.next_deadline(50) == t0 + 50
    assert g.poll(t0 + 49, 50) == []
    assert g.poll(t0 + 50, 50) == [2]
    assert g.poll(t0 + 1001, 50) == []
    assert g.counters["gave_up"] == 1


def test_long_random_stream_keeps_invariants():
    import random

    rnd = random.Random(7)
    g = _testhooks.NackGenerator()
    seq, t, sent = 65000, 0, []
    for _ in range(20000):
        t += 1
        seq = (seq + 1) & M
        if rnd.random() < 0.05:
            continue  # lost
        g.on_packet(seq, False, t)
        if t % 20 == 0:
            for s in g.poll(t, 40):
                if rnd.random() < 0.7:
                    g.on_packet(s, True, t + 1)
        m = g.missing
        assert len(m) <= 256
        # oldest first, all behind the highest
        d = [(g.highest - s) & M for s in m]
        assert d == sorted(d, reverse=True) and all(0 < x < 2000 for x in d)
    c = g.counters
    assert c["recovered"] > 0 and c["nacked"] >= c["recovered"]
