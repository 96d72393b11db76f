"""Graceful shutdown of `sfu-server` (issue #11).

The real `sfu-server` runs as a subprocess (a JWT secret, a temporary SQLite
store, a free port on 127.0.0.1, one media worker). On SIGTERM it drains:
participants get ``call:ended {reason: 'server-shutdown'}`` on Socket.IO, the
store records the calls as ended with that reason, the process exits 0. A
second signal while it drains exits at once. In-process: while draining, new
HTTP requests get 503 and room WebSockets are told ``room-closed``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import aiohttp
import jwt
import pytest
import socketio
from aiohttp.test_utils import TestClient, TestServer

from signaling.auth import AuthConfig, Authenticator
from signaling.metrics import Metrics
from signaling.server import CALLS, create_app, drain, start_rooms
from signaling.store import CallStore

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-secret-for-the-shutdown-tests-0123456789"


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command() -> list[str]:
    script = Path(sys.executable).parent / "sfu-server"
    if script.exists():
        return [str(script)]
    if os.environ.get("CI"):
        pytest.fail(f"the sfu-server script is missing next to {sys.executable} (pip install -e .)")
    return [sys.executable, "-m", "signaling.cli"]


class Server:
    """`sfu-server` in a subprocess, its output in files."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port = free_port()
        self.db = tmp / "calls.sqlite3"
        self.out = tmp / "stdout.txt"
        self.err = tmp / "stderr.txt"
        env = dict(os.environ, SFU_JWT_SECRET=SECRET)
        self.proc = subprocess.Popen(
            [*server_command(), "--listen-ip", "127.0.0.1", "--http-port", str(self.port), "--workers", "1",
             "--db", str(self.db), "--log-level", "info", *extra],
            stdout=self.out.open("w"), stderr=self.err.open("w"), env=env, cwd=ROOT)
        self.base = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    async def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, f"sfu-server exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} from sfu-server within {timeout} s:\n{self.output()[-3000:]}"
            await asyncio.sleep(0.05)

    async def wait_exit(self, timeout: float) -> Optional[int]:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.proc.poll()

    def worker_pids(self) -> list[int]:
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class Participant:
    def __init__(self, base: str, user: str) -> None:
        self.base = base
        self.token = token(user)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.disconnected = asyncio.Event()

        @self.sio.on("*")
        async def record(event: str, data: Any = None) -> None:
            self.events.append((event, data))

        @self.sio.event
        async def disconnect(*args: Any) -> None:
            self.disconnected.set()

    async def connect(self) -> "Participant":
        await self.sio.connect(self.base, auth={"token": self.token}, transports=["websocket"], wait_timeout=30)
        return self

    async def req(self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None,
                  status: int = 200) -> Any:
        async with http.request(method, self.base + path, json=body,
                                headers={"Authorization": f"Bearer {self.token}"}) as resp:
            data = await resp.json()
            assert resp.status == status, (resp.status, data)
            return data

    async def wait(self, event: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for name, data in self.events:
                if name == event:
                    return data
            assert time.monotonic() < deadline, f"no {event} within {timeout} s; got {self.events}"
            await asyncio.sleep(0.05)


def stored_calls(db: Path) -> list[tuple[str, Optional[float], Optional[str]]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT call_id, ended_at, end_reason FROM call_sessions ORDER BY session_id").fetchall()


def stored_participants(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT user_id, status FROM call_participants").fetchall()


async def test_sigterm_tells_participants_ends_calls_and_exits_0(tmp_path):
    server = Server(tmp_path)
    people: list[Participant] = []
    try:
        await server.wait_for_output("sfu-server listening on")
        workers = server.worker_pids()
        assert workers, "no media worker process"
        async with aiohttp.ClientSession() as http:
            alice, bob = Participant(server.base, "alice"), Participant(server.base, "bob")
            people = [alice, bob]
            for p in people:
                await p.connect()
            call_id = (await alice.req(http, "POST", "/api/calls", {}, status=201))["callId"]
            for p in people:
                await p.req(http, "POST", f"/api/calls/{call_id}/participants", {"socketId": p.sio.get_sid()},
                            status=201)
            await alice.wait("call:participant-joined")
            ended_before = await alice.req(http, "POST", "/api/calls", {}, status=201)  # a call nobody joined
            assert [c[2] for c in stored_calls(server.db)] == [None, None]

            server.proc.send_signal(signal.SIGTERM)
            for p in people:
                ended = await p.wait("call:ended")
                assert ended == {"callId": call_id, "reason": "server-shutdown"}
                await asyncio.wait_for(p.disconnected.wait(), 30)
            code = await server.wait_exit(60)
        assert code == 0, f"exit status {code}:\n{server.output()[-3000:]}"
        rows = stored_calls(server.db)
        assert [(r[0], r[2]) for r in rows] == [(call_id, "server-shutdown"),
                                                (ended_before["callId"], "server-shutdown")]
        assert all(r[1] is not None for r in rows)
        assert sorted(stored_participants(server.db)) == [("alice", "left"), ("bob", "left")]
        assert not any(alive(pid) for pid in workers), "a media worker outlived the server"
        out = server.output()
        assert "Traceback" not in out, out[-3000:]
        assert "ended 2 call(s)" in out
        # the next start finds nothing left in progress
        with CallStore(str(server.db)) as store:
            assert store.recover_after_restart() == []
    finally:
        for p in people:
            if p.sio.connected:
                await p.sio.disconnect()
        server.stop()


async def test_a_second_signal_exits_at_once(tmp_path):
    server = Server(tmp_path, "--drain-timeout", "300")
    try:
        await server.wait_for_output("sfu-server listening on")
        workers = server.worker_pids()
        # a request in flight that never completes (its body never arrives) keeps the drain waiting
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"POST /api/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token('slow')}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
        await writer.drain()
        async with aiohttp.ClientSession() as http:  # the slow request has reached its handler once this answers
            async with http.get(server.base + "/healthz") as resp:
                assert resp.status == 200
        server.proc.send_signal(signal.SIGTERM)
        await server.wait_for_output("draining (server-shutdown)")
        assert server.proc.poll() is None  # waiting for the request in flight (up to 300 s)
        async with aiohttp.ClientSession() as http:
            async with http.post(server.base + "/api/calls", json={},
                                 headers={"Authorization": f"Bearer {token('late')}"}) as resp:
                assert resp.status == 503 and "shutting down" in (await resp.json())["error"]
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        code = await server.wait_exit(30)
        assert code is not None, f"still running 30 s after the second signal:\n{server.output()[-3000:]}"
        assert code == 128 + signal.SIGINT, f"exit status {code}:\n{server.output()[-3000:]}"
        print(f"exited {time.monotonic() - sent:.2f} s after the second signal")
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a media worker outlived the server"
            await asyncio.sleep(0.05)
        assert "exiting at once" in server.output()
        writer.close()
    finally:
        server.stop()


async def test_while_draining_requests_get_503_and_room_websockets_are_told(tmp_path):
    rooms = await start_rooms(workers=1)
    store = CallStore(str(tmp_path / "calls.sqlite3"))
    app = create_app(rooms, auth=Authenticator(AuthConfig.from_options(secret=SECRET)), metrics=Metrics(),
                     store=store)
    http = TestClient(TestServer(app, host="127.0.0.1"))
    await http.start_server()
    try:
        h = {"Authorization": f"Bearer {token('alice')}"}
        assert (await http.post("/api/rooms/r1/create", headers=h)).status in (200, 201)
        joined = await (await http.post("/api/rooms/r1/participants", json={}, headers=h)).json()
        ws = await http.ws_connect(f"/api/rooms/r1/ws?participantId={joined['participantId']}&token={token('alice')}",
                                   headers={**h, "X-Participant-Id": joined["participantId"]})
        call_id = (await (await http.post("/api/calls", json={}, headers=h)).json())["callId"]

        await drain(app, timeout_s=10)
        closed = await ws.receive_json(timeout=30)
        assert closed == {"event": "room-closed", "data": {"roomId": "r1", "reason": "server-shutdown"}}
        assert (await ws.receive(timeout=30)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        for method, path in (("POST", "/api/calls"), ("GET", f"/api/calls/{call_id}"), ("POST", "/whip/r2"),
                             ("GET", "/")):
            resp = await http.request(method, path, headers=h)
            assert resp.status == 503 and resp.headers["Retry-After"], (method, path, resp.status)
        ready = await http.get("/readyz")
        assert ready.status == 503
        assert (await http.get("/healthz")).status == 200 and (await http.get("/metrics")).status == 200
        assert store.get_call(call_id).end_reason == "server-shutdown"
        assert app[CALLS].calls == {}
        refused = socketio.AsyncClient(reconnection=False)
        errors: list[Any] = []
        refused.on("connect_error", lambda data: errors.append(data))
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(str(http.make_url("/")), auth={"token": token("alice")},
                                  transports=["websocket"], wait_timeout=30)
        assert errors == [{"message": "server is shutting down", "data": {"status": 503}}]
    finally:
        await http.close()
        await rooms.close()
        store.close()
