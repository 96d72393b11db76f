"""SQLite persistence of calls: round trips, schema versioning, files that
outlive the store, the restart behaviour, and use from several threads."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from signaling.store import (
    RESTART_REASON,
    SCHEMA_VERSION,
    CallExistsError,
    CallParticipant,
    CallSession,
    CallStore,
    NotFoundError,
    SchemaVersionError,
    StoreError,
)


@pytest.fixture
def store():
    s = CallStore()
    yield s
    s.close()


def test_call_round_trip(store):
    created = store.create_call("c1", roles_enabled=True, allow_candidates_see_each_other=False, created_at=100.0)
    assert created == CallSession("c1", "p2p", None, 100.0, None, True, False, None, created.session_id)
    assert created.active and created.session_id > 0
    assert store.get_call("c1") == created
    assert store.active_call("c1") == created
    assert store.get_call("nope") is None and store.active_call("nope") is None

    switched = store.set_mode("c1", "sfu", "router-1")
    assert (switched.mode, switched.router_id) == ("sfu", "router-1")
    back = store.set_mode("c1", "p2p")
    assert (back.mode, back.router_id) == ("p2p", None)

    ended = store.end_call("c1", "empty", at=200.0)
    assert (ended.ended_at, ended.end_reason, ended.active) == (200.0, "empty", False)
    assert store.get_call("c1") == ended
    assert store.active_call("c1") is None
    assert store.end_call("c1", "again") is None  # nothing in progress: no-op
    assert store.get_call("c1").end_reason == "empty"


def test_participant_round_trip(store):
    store.create_call("c1")
    p = store.add_participant("c1", "alice", role="publisher", participant_id="p-a", joined_at=10.0)
    assert p == CallParticipant("p-a", "c1", "alice", "publisher", "joining", 10.0, None, [], [], p.session_id)
    assert store.get_participant("p-a") == p
    assert store.get_participant("missing") is None

    p = store.update_participant("p-a", status="connected", transport_ids=["t1", "t2"], producer_ids=["pr1"])
    assert (p.status, p.transport_ids, p.producer_ids, p.role) == ("connected", ["t1", "t2"], ["pr1"], "publisher")
    p = store.update_participant("p-a", role="both")
    assert p.role == "both" and p.transport_ids == ["t1", "t2"]  # untouched fields keep their values
    assert store.update_participant("p-a") == p

    generated = store.add_participant("c1", "bob")
    assert len(generated.id) == 16 and generated.role == "both" and generated.status == "joining"
    assert [x.id for x in store.active_participants("c1")] == ["p-a", generated.id]

    left = store.mark_left("p-a", at=50.0)
    assert (left.status, left.left_at) == ("left", 50.0)
    assert store.mark_left("p-a", at=60.0).left_at == 50.0  # the first departure time is kept
    assert [x.id for x in store.active_participants("c1")] == [generated.id]
    assert store.update_participant(generated.id, status="left").left_at is not None


def test_validation_names_the_field(store):
    with pytest.raises(ValueError, match="mode: must be one of p2p, sfu"):
        store.create_call("c1", mode="mesh")
    store.create_call("c1")
    with pytest.raises(ValueError, match="role: must be one of both, publisher, subscriber"):
        store.add_participant("c1", "u", role="admin")
    with pytest.raises(ValueError, match="status"):
        store.add_participant("c1", "u", status="dancing")
    with pytest.raises(ValueError, match="user_id"):
        store.add_participant("c1", "")
    with pytest.raises(ValueError, match="call_id"):
        store.create_call("")
    p = store.add_participant("c1", "u")
    with pytest.raises(ValueError, match="transport_ids"):
        store.update_participant(p.id, transport_ids="t1")
    with pytest.raises(ValueError, match="mode"):
        store.set_mode("c1", "x")


def test_missing_calls_and_participants_raise_not_found(store):
    with pytest.raises(NotFoundError, match="call 'c9' is not in progress"):
        store.add_participant("c9", "alice")
    with pytest.raises(NotFoundError, match="not in progress"):
        store.set_mode("c9", "sfu", "r")
    with pytest.raises(NotFoundError, match="participant 'x' not found"):
        store.update_participant("x", status="connected")
    with pytest.raises(NotFoundError):
        store.mark_left("x")
    assert store.active_participants("c9") == []


def test_one_session_in_progress_per_call_id_and_history_kept(store):
    first = store.create_call("c1", created_at=1.0)
    with pytest.raises(CallExistsError, match="already in progress"):
        store.create_call("c1")
    p = store.add_participant("c1", "alice")
    ended = store.end_call("c1", "empty", at=2.0)
    assert store.get_participant(p.id).status == "left"  # ending a call marks its participants left
    assert store.get_participant(p.id).left_at == 2.0

    second = store.create_call("c1", mode="sfu", router_id="r2", created_at=3.0)
    assert second.session_id != first.session_id
    assert store.active_call("c1") == second
    assert store.active_participants("c1") == []  # the old session's people are not in the new one
    assert store.call_history("c1") == [ended, second]
    q = store.add_participant("c1", "alice")
    assert q.session_id == second.session_id
    assert [x.id for x in store.participants(first.session_id)] == [p.id]


def test_active_calls(store):
    store.create_call("a")
    store.create_call("b")
    store.create_call("c")
    store.end_call("b", "empty")
    assert [c.id for c in store.active_calls()] == ["a", "c"]


def test_schema_version_is_set(tmp_path):
    path = tmp_path / "calls.db"
    with CallStore(str(path)) as s:
        assert s.schema_version == SCHEMA_VERSION == 1
        assert s.journal_mode == "wal"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"call_sessions", "call_participants"} <= tables
    db.close()


def test_a_database_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "calls.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(SchemaVersionError) as info:
        CallStore(str(path))
    msg = str(info.value)
    assert "schema version 7" in msg and f"({SCHEMA_VERSION})" in msg and str(path) in msg


def test_files_that_are_not_usable_are_named(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all, not even a little" * 50)
    with pytest.raises(StoreError, match="junk.db"):
        CallStore(str(junk))
    with pytest.raises(StoreError, match="no-such-dir"):
        CallStore(str(tmp_path / "no-such-dir" / "calls.db"))


def test_closed_store_refuses_use(tmp_path):
    s = CallStore(str(tmp_path / "c.db"))
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.create_call("c1")
    with pytest.raises(StoreError, match="closed"):
        s.get_call("c1")


def test_persists_across_reopening_the_file(tmp_path):
    path = str(tmp_path / "calls.db")
    with CallStore(path) as s:
        call = s.create_call("c1", roles_enabled=True, allow_candidates_see_each_other=True)
        s.set_mode("c1", "sfu", "router-9")
        p = s.add_participant("c1", "proctor", role="subscriber", status="connected")
        s.update_participant(p.id, transport_ids=["t-1"])
    with CallStore(path) as s:
        got = s.get_call("c1")
        assert (got.session_id, got.mode, got.router_id, got.roles_enabled, got.allow_candidates_see_each_other) == \
            (call.session_id, "sfu", "router-9", True, True)
        again = s.get_participant(p.id)
        assert (again.user_id, again.role, again.status, again.transport_ids) == \
            ("proctor", "subscriber", "connected", ["t-1"])


def test_recover_after_restart_ends_calls_in_progress(tmp_path):
    path = str(tmp_path / "calls.db")
    with CallStore(path) as s:
        s.create_call("done")
        s.end_call("done", "empty", at=5.0)
        s.create_call("live-1")
        s.set_mode("live-1", "sfu", "router-1")
        a = s.add_participant("live-1", "alice", status="connected")
        b = s.add_participant("live-1", "bob")
        gone = s.mark_left(s.add_participant("live-1", "carol").id, at=7.0)
        s.create_call("live-2")
        d = s.add_participant("live-2", "dave")
    # the process "restarts": a new store on the same file
    with CallStore(path) as s:
        assert s.recover_after_restart(now=100.0) == ["live-1", "live-2"]
        for call_id in ("live-1", "live-2"):
            call = s.get_call(call_id)
            assert (call.ended_at, call.end_reason) == (100.0, RESTART_REASON)
            assert s.active_participants(call_id) == []
        for pid in (a.id, b.id, d.id):
            p = s.get_participant(pid)
            assert (p.status, p.left_at) == ("left", 100.0)
        assert s.get_participant(gone.id).left_at == 7.0  # left before the restart: unchanged
        assert s.get_call("done").end_reason == "empty"  # already ended: unchanged
        assert s.active_calls() == []
        assert s.recover_after_restart(now=200.0) == []  # nothing more to do

        # clients reconnect and join again: a fresh session under the same call id
        fresh = s.create_call("live-1")
        assert fresh.active and fresh.mode == "p2p" and fresh.router_id is None
        s.add_participant("live-1", "alice")
        assert [c.end_reason for c in s.call_history("live-1")] == [RESTART_REASON, None]


def test_concurrent_use_from_threads(tmp_path):
    path = str(tmp_path / "calls.db")
    s = CallStore(path)
    calls = [f"call-{i}" for i in range(4)]
    for c in calls:
        s.create_call(c)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            start.wait()
            call = calls[n % len(calls)]
            for k in range(25):
                p = s.add_participant(call, f"user-{n}-{k}")
                s.update_participant(p.id, status="connected", transport_ids=[f"t-{n}-{k}"])
                if k % 5 == 0:
                    s.mark_left(p.id)
                s.active_participants(call)
                if n == 0 and k % 10 == 0:
                    s.set_mode(call, "sfu" if k % 20 == 0 else "p2p", None)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    total = sum(len(s.active_participants(c)) for c in calls)
    assert total == 8 * 20  # 25 joins per thread, 5 of them left
    s.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM call_participants").fetchone()[0] == 8 * 25
    assert db.execute("SELECT COUNT(*) FROM call_participants WHERE status = 'connected'").fetchone()[0] == 8 * 20
    db.close()


def test_two_stores_on_one_file_do_not_start_the_same_call_twice(tmp_path):
    path = str(tmp_path / "calls.db")
    a, b = CallStore(path), CallStore(path)
    try:
        a.create_call("c1")
        with pytest.raises(CallExistsError):
            b.create_call("c1")
        b.add_participant("c1", "alice")
        assert [p.user_id for p in a.active_participants("c1")] == ["alice"]
    finally:
        a.close()
        b.close()
