"""SQLite persistence of call sessions and participants (stdlib ``sqlite3``).

A *call* is named by its call id (the ``:callId`` of the REST API). Each time
a call starts, a new *session* row is created for it; ending the call sets
``ended_at`` and ``end_reason`` and keeps the row as history. So at most one
session per call id is in progress (``ended_at IS NULL``, enforced by a
unique partial index), and the same call id can be started again, as a fresh
session, once the previous one ended. Participants belong to one session.

Restarts: media state cannot survive the process (workers, routers,
transports and their ICE/DTLS state are gone), so on start-up
:meth:`CallStore.recover_after_restart` ends every session still in progress
with ``end_reason='server-restart'`` and marks its participants left. Clients
see their connection drop, reconnect and join again, which starts a new
session under the same call id.

The schema is versioned with ``PRAGMA user_version`` and migrated forward
on open; a database written by a newer version is refused. Calls are few and
the transactions short, so the API is synchronous (one connection, a lock,
WAL journal for file databases); keep it off per-packet paths.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence

logger = logging.getLogger("sfu.signaling.store")

SCHEMA_VERSION = 1
MODES = ("p2p", "sfu")
ROLES = ("both", "publisher", "subscriber")
STATUSES = ("joining", "connected", "left")
RESTART_REASON = "server-restart"

# MIGRATIONS[v] takes a database from version v-1 to v.
MIGRATIONS: dict[int, Sequence[str]] = {
    1: (
        """CREATE TABLE call_sessions (
               session_id INTEGER PRIMARY KEY AUTOINCREMENT,
               call_id TEXT NOT NULL,
               mode TEXT NOT NULL CHECK (mode IN ('p2p', 'sfu')),
               router_id TEXT,
               created_at REAL NOT NULL,
               ended_at REAL,
               roles_enabled INTEGER NOT NULL DEFAULT 0,
               allow_candidates_see_each_other INTEGER NOT NULL DEFAULT 0,
               end_reason TEXT
           )""",
        "CREATE UNIQUE INDEX call_sessions_in_progress ON call_sessions (call_id) WHERE ended_at IS NULL",
        "CREATE INDEX call_sessions_by_call ON call_sessions (call_id, session_id)",
        """CREATE TABLE call_participants (
               id TEXT PRIMARY KEY,
               session_id INTEGER NOT NULL REFERENCES call_sessions (session_id),
               call_id TEXT NOT NULL,
               user_id TEXT NOT NULL,
               role TEXT NOT NULL CHECK (role IN ('both', 'publisher', 'subscriber')),
               status TEXT NOT NULL CHECK (status IN ('joining', 'connected', 'left')),
               joined_at REAL NOT NULL,
               left_at REAL,
               transport_ids TEXT NOT NULL DEFAULT '[]',
               producer_ids TEXT NOT NULL DEFAULT '[]'
           )""",
        "CREATE INDEX call_participants_by_session ON call_participants (session_id, status)",
    ),
}


class StoreError(Exception):
    """A problem with the calls database (the message names the file)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer version of the server."""


class NotFoundError(StoreError, LookupError):
    """No such call in progress, or no such participant."""


class CallExistsError(StoreError):
    """A session of this call id is already in progress."""


@dataclass
class CallSession:
    """One run of a call, from its start to its end."""

    id: str
    mode: str
    router_id: Optional[str]
    created_at: float
    ended_at: Optional[float]
    roles_enabled: bool
    allow_candidates_see_each_other: bool
    end_reason: Optional[str]
    session_id: int = 0  # row id: distinguishes sessions of the same call id

    @property
    def active(self) -> bool:
        """True while the call is in progress."""
        return self.ended_at is None


@dataclass
class CallParticipant:
    """A participant of one call session."""

    id: str
    call_id: str
    user_id: str
    role: str
    status: str
    joined_at: float
    left_at: Optional[float]
    transport_ids: list[str] = field(default_factory=list)
    producer_ids: list[str] = field(default_factory=list)
    session_id: int = 0


def _check(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _ids(values: Iterable[str], what: str) -> str:
    if isinstance(values, str):
        raise ValueError(f"{what}: must be a list of ids, not a string")
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise ValueError(f"{what}: must be a list of strings")
    return json.dumps(out)


_SESSION_COLUMNS = ("call_id, mode, router_id, created_at, ended_at, roles_enabled, "
                    "allow_candidates_see_each_other, end_reason, session_id")
_PARTICIPANT_COLUMNS = ("id, call_id, user_id, role, status, joined_at, left_at, transport_ids, producer_ids, "
                        "session_id")


def _session(row: Sequence[Any]) -> CallSession:
    return CallSession(row[0], row[1], row[2], row[3], row[4], bool(row[5]), bool(row[6]), row[7], row[8])


def _participant(row: Sequence[Any]) -> CallParticipant:
    return CallParticipant(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]),
                           json.loads(row[8]), row[9])


class CallStore:
    """Call sessions and participants in SQLite (``":memory:"`` by default;
    a file path persists them). Safe to use from several threads."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db: Optional[sqlite3.Connection] = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the calls database {path!r}: {exc}") from None
        db = self._db
        try:
            db.execute("PRAGMA foreign_keys = ON")
            self.journal_mode: str = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except StoreError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot use the calls database {path!r}: {exc}") from None

    # -- schema

    @property
    def schema_version(self) -> int:
        """The database's schema version (``PRAGMA user_version``)."""
        return int(self._query("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the calls database {self.path!r} has schema version {version}, newer than this server "
                f"understands ({SCHEMA_VERSION}): run the newer server version, or give another database path")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as db:
                for statement in MIGRATIONS[target]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {int(target)}")
            logger.info("calls database %s migrated to schema version %d", self.path, target)

    # -- plumbing

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock (BEGIN IMMEDIATE: the write
        lock is taken at once, so two writers never deadlock)."""
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError(f"the calls database {self.path!r} is closed")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            if self._db is None:
                raise StoreError(f"the calls database {self.path!r} is closed")
            return self._db.execute(sql, args).fetchall()

    @staticmethod
    def _active_session_id(db: sqlite3.Connection, call_id: str) -> int:
        row = db.execute("SELECT session_id FROM call_sessions WHERE call_id = ? AND ended_at IS NULL",
                         (call_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"call {call_id!r} is not in progress")
        return int(row[0])

    @staticmethod
    def _load_session(db: sqlite3.Connection, session_id: int) -> CallSession:
        return _session(db.execute(f"SELECT {_SESSION_COLUMNS} FROM call_sessions WHERE session_id = ?",
                                   (session_id,)).fetchone())

    @staticmethod
    def _load_participant(db: sqlite3.Connection, participant_id: str) -> CallParticipant:
        row = db.execute(f"SELECT {_PARTICIPANT_COLUMNS} FROM call_participants WHERE id = ?",
                         (participant_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"participant {participant_id!r} not found")
        return _participant(row)

    # -- calls

    def create_call(
        self,
        call_id: str,
        mode: str = "p2p",
        router_id: Optional[str] = None,
        roles_enabled: bool = False,
        allow_candidates_see_each_other: bool = False,
        created_at: Optional[float] = None,
    ) -> CallSession:
        """Starts a new session of ``call_id`` (CallExistsError if one is in
        progress; an ended one stays as history)."""
        if not isinstance(call_id, str) or not call_id:
            raise ValueError("call_id: required, a non-empty string")
        _check(mode, MODES, "mode")
        at = time.time() if created_at is None else created_at
        with self._transaction() as db:
            try:
                cur = db.execute(
                    "INSERT INTO call_sessions (call_id, mode, router_id, created_at, roles_enabled, "
                    "allow_candidates_see_each_other) VALUES (?, ?, ?, ?, ?, ?)",
                    (call_id, mode, router_id, at, int(roles_enabled), int(allow_candidates_see_each_other)))
            except sqlite3.IntegrityError:
                raise CallExistsError(f"call {call_id!r} is already in progress") from None
            return self._load_session(db, int(cur.lastrowid))  # type: ignore[arg-type]

    def get_call(self, call_id: str) -> Optional[CallSession]:
        """The latest session of ``call_id`` (in progress or ended), or None."""
        rows = self._query(f"SELECT {_SESSION_COLUMNS} FROM call_sessions WHERE call_id = ? "
                           "ORDER BY session_id DESC LIMIT 1", (call_id,))
        return _session(rows[0]) if rows else None

    def active_call(self, call_id: str) -> Optional[CallSession]:
        """The session of ``call_id`` in progress, or None."""
        rows = self._query(f"SELECT {_SESSION_COLUMNS} FROM call_sessions WHERE call_id = ? AND ended_at IS NULL",
                           (call_id,))
        return _session(rows[0]) if rows else None

    def call_history(self, call_id: str) -> list[CallSession]:
        """Every session of ``call_id``, oldest first."""
        return [_session(r) for r in self._query(
            f"SELECT {_SESSION_COLUMNS} FROM call_sessions WHERE call_id = ? ORDER BY session_id", (call_id,))]

    def active_calls(self) -> list[CallSession]:
        """The sessions in progress, oldest first."""
        return [_session(r) for r in self._query(
            f"SELECT {_SESSION_COLUMNS} FROM call_sessions WHERE ended_at IS NULL ORDER BY session_id")]

    def end_call(self, call_id: str, reason: str, at: Optional[float] = None) -> Optional[CallSession]:
        """Ends the session of ``call_id`` in progress and marks its
        participants left; returns it (None when none was in progress)."""
        at = time.time() if at is None else at
        with self._transaction() as db:
            try:
                sid = self._active_session_id(db, call_id)
            except NotFoundError:
                return None
            db.execute("UPDATE call_participants SET status = 'left', left_at = COALESCE(left_at, ?) "
                       "WHERE session_id = ? AND status != 'left'", (at, sid))
            db.execute("UPDATE call_sessions SET ended_at = ?, end_reason = ? WHERE session_id = ?",
                       (at, reason, sid))
            return self._load_session(db, sid)

    def set_mode(self, call_id: str, mode: str, router_id: Optional[str] = None) -> CallSession:
        """Records the mode (and router, in SFU mode) of the call in progress."""
        _check(mode, MODES, "mode")
        with self._transaction() as db:
            sid = self._active_session_id(db, call_id)
            db.execute("UPDATE call_sessions SET mode = ?, router_id = ? WHERE session_id = ?",
                       (mode, router_id, sid))
            return self._load_session(db, sid)

    # -- participants

    def add_participant(
        self,
        call_id: str,
        user_id: str,
        role: str = "both",
        participant_id: Optional[str] = None,
        status: str = "joining",
        joined_at: Optional[float] = None,
    ) -> CallParticipant:
        """Adds a participant to the call in progress (NotFoundError if none)."""
        _check(role, ROLES, "role")
        _check(status, STATUSES, "status")
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id: required, a non-empty string")
        pid = participant_id or secrets.token_hex(8)
        at = time.time() if joined_at is None else joined_at
        with self._transaction() as db:
            sid = self._active_session_id(db, call_id)
            try:
                db.execute("INSERT INTO call_participants (id, session_id, call_id, user_id, role, status, "
                           "joined_at, left_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (pid, sid, call_id, user_id, role, status, at, at if status == "left" else None))
            except sqlite3.IntegrityError:
                raise StoreError(f"participant id {pid!r} is already taken") from None
            return self._load_participant(db, pid)

    def get_participant(self, participant_id: str) -> Optional[CallParticipant]:
        """The participant, or None."""
        rows = self._query(f"SELECT {_PARTICIPANT_COLUMNS} FROM call_participants WHERE id = ?", (participant_id,))
        return _participant(rows[0]) if rows else None

    def update_participant(
        self,
        participant_id: str,
        *,
        status: Optional[str] = None,
        role: Optional[str] = None,
        transport_ids: Optional[Iterable[str]] = None,
        producer_ids: Optional[Iterable[str]] = None,
    ) -> CallParticipant:
        """Changes the given fields (None: unchanged); ``status='left'``
        also sets ``left_at``. NotFoundError for an unknown participant."""
        sets: list[str] = []
        args: list[Any] = []
        if status is not None:
            sets.append("status = ?")
            args.append(_check(status, STATUSES, "status"))
            if status == "left":
                sets.append("left_at = COALESCE(left_at, ?)")
                args.append(time.time())
        if role is not None:
            sets.append("role = ?")
            args.append(_check(role, ROLES, "role"))
        if transport_ids is not None:
            sets.append("transport_ids = ?")
            args.append(_ids(transport_ids, "transport_ids"))
        if producer_ids is not None:
            sets.append("producer_ids = ?")
            args.append(_ids(producer_ids, "producer_ids"))
        with self._transaction() as db:
            p = self._load_participant(db, participant_id)
            if sets:
                db.execute(f"UPDATE call_participants SET {', '.join(sets)} WHERE id = ?", (*args, p.id))
                p = self._load_participant(db, participant_id)
            return p

    def mark_left(self, participant_id: str, at: Optional[float] = None) -> CallParticipant:
        """Marks a participant left (the first ``left_at`` is kept)."""
        at = time.time() if at is None else at
        with self._transaction() as db:
            self._load_participant(db, participant_id)
            db.execute("UPDATE call_participants SET status = 'left', left_at = COALESCE(left_at, ?) WHERE id = ?",
                       (at, participant_id))
            return self._load_participant(db, participant_id)

    def active_participants(self, call_id: str) -> list[CallParticipant]:
        """Participants of the call in progress that have not left, in join
        order (empty when the call is not in progress)."""
        return [_participant(r) for r in self._query(
            f"SELECT {', '.join('p.' + c.strip() for c in _PARTICIPANT_COLUMNS.split(','))} "
            "FROM call_participants p JOIN call_sessions s ON s.session_id = p.session_id "
            "WHERE s.call_id = ? AND s.ended_at IS NULL AND p.status != 'left' ORDER BY p.joined_at, p.rowid",
            (call_id,))]

    def participants(self, session_id: int) -> list[CallParticipant]:
        """Every participant of one session (left ones too), in join order."""
        return [_participant(r) for r in self._query(
            f"SELECT {_PARTICIPANT_COLUMNS} FROM call_participants WHERE session_id = ? ORDER BY joined_at, rowid",
            (session_id,))]

    # -- restart

    def recover_after_restart(self, now: Optional[float] = None) -> list[str]:
        """Ends every call left in progress by a previous process (its media
        is gone) with ``end_reason='server-restart'`` and marks its
        participants left; returns those call ids."""
        at = time.time() if now is None else now
        with self._transaction() as db:
            ids = [r[0] for r in db.execute(
                "SELECT call_id FROM call_sessions WHERE ended_at IS NULL ORDER BY session_id").fetchall()]
            db.execute("UPDATE call_participants SET status = 'left', left_at = COALESCE(left_at, ?) "
                       "WHERE status != 'left'", (at,))
            db.execute("UPDATE call_sessions SET ended_at = ?, end_reason = ? WHERE ended_at IS NULL",
                       (at, RESTART_REASON))
        if ids:
            logger.info("ended %d call(s) left in progress by the previous run: %s", len(ids), ", ".join(ids))
        return ids

    def close(self) -> None:
        """Closes the database (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "CallStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

