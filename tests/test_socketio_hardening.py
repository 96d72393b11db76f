"""Socket.IO hardening of the call service (issue #11): every event's payload
is validated (type, required fields, size) and answered with
``{error, status, reason, event}`` (acknowledgement, plus a ``call:error``
event) without a traceback in the log; each connection has an event rate
limit (token bucket) and is disconnected after sustained abuse; refusals are
counted in ``sfu_socketio_events_rejected_total{reason}``.

Real server (aiohttp on 127.0.0.1 with a media worker), real python-socketio
clients, every log record of the process captured."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from typing import Any, Optional

import jwt
import pytest
import socketio
from aiohttp.test_utils import TestClient, TestServer

from signaling.auth import AuthConfig, Authenticator
from signaling.calls import REJECT_REASONS, SocketLimits
from signaling.metrics import METRICS, Metrics
from signaling.server import CALLS, create_app, start_rooms

SECRET = "test-secret-for-socketio-hardening-0123456789"
FLOOD_EVENTS = 10_000
HUGE = "x" * 200_000  # over the 128 KiB event limit, under Engine.IO's 1 MB message limit


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


@pytest.fixture
async def http():
    rooms = await start_rooms(workers=1)
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    app = create_app(rooms, auth=auth, metrics=Metrics())
    assert app[CALLS].socket_limits == SocketLimits()  # the defaults: 20/s, burst 40, disconnect after 200
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await rooms.close()


class Conn:
    """A python-socketio client that records what the server sends it."""

    def __init__(self, http: TestClient, user: str) -> None:
        self.http = http
        self.user = user
        self.token = token(user)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.disconnected = asyncio.Event()
        self.changed = asyncio.Event()

        @self.sio.on("*")
        async def record(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            self.changed.set()

        @self.sio.event
        async def disconnect(*args: Any) -> None:
            self.disconnected.set()

    async def connect(self) -> "Conn":
        await self.sio.connect(str(self.http.make_url("/")), auth={"token": self.token}, transports=["websocket"],
                               wait_timeout=30)
        return self

    async def req(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = await self.http.request(method, path, json=body, headers={"Authorization": f"Bearer {self.token}"})
        data = await resp.json()
        assert resp.status == status, (resp.status, data)
        return data

    async def call(self, event: str, *args: Any) -> Any:
        """Sends ``event`` with exactly ``args`` as its arguments (python-socketio
        sends a tuple as several arguments, and None as none)."""
        if not args:
            return await self.sio.call(event, timeout=30)
        return await self.sio.call(event, args if len(args) > 1 or args[0] is None else args[0], timeout=30)

    async def emit(self, event: str, *args: Any) -> None:
        if not args:
            await self.sio.emit(event)
        else:
            await self.sio.emit(event, args if len(args) > 1 or args[0] is None else args[0])

    def seen(self, event: str) -> list[Any]:
        return [d for e, d in self.events if e == event]

    async def wait_for(self, predicate: Any, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            self.changed.clear()
            remaining = deadline - loop.time()
            assert remaining > 0, f"{self.user}: condition not met within {timeout} s; got {self.events[-5:]}"
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


def rejected(metrics_text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^sfu_socketio_events_rejected_total\{reason="([^"]+)"\} (\S+)$', metrics_text, re.M)}


def no_tracebacks(records: list[logging.LogRecord], stderr: str) -> None:
    gc.collect()  # "Task exception was never retrieved" is logged when the task is collected
    bad = [r for r in records if r.exc_info or "Traceback" in r.getMessage()
           or "exception" in r.getMessage().lower() or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.name} {r.levelname}: {r.getMessage()[:300]}" for r in bad[:5]]
    assert "Traceback" not in stderr, stderr[-3000:]


async def test_malformed_events_are_answered_with_an_error_naming_the_problem(http, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    alice, bob, mallory = Conn(http, "alice"), Conn(http, "bob"), Conn(http, "mallory")
    try:
        for c in (alice, bob, mallory):
            await c.connect()
        call_id = (await alice.req("POST", "/api/calls", {}, status=201))["callId"]
        await alice.req("POST", f"/api/calls/{call_id}/participants", {"socketId": alice.sio.get_sid()}, status=201)
        joined = await bob.req("POST", f"/api/calls/{call_id}/participants", {"socketId": bob.sio.get_sid()},
                               status=201)

        cases: list[tuple[tuple[Any, ...], int, str, str]] = [
            (("webrtc:offer",), 400, "invalid-payload", "expected one object, got 0 arguments"),
            (("webrtc:offer", None), 400, "invalid-payload", "must be an object, got null"),
            (("webrtc:answer", "v=0"), 400, "invalid-payload", "must be an object, got a string"),
            (("webrtc:offer", {"to": joined["participantId"]}), 400, "invalid-payload", "offer: required"),
            (("webrtc:offer", {"offer": [1, 2]}), 400, "invalid-payload", "offer: must be an object"),
            (("webrtc:offer", {"offer": {"sdp": 5}}), 400, "invalid-payload", "offer.sdp: must be a string"),
            (("webrtc:ice-candidate", {"to": 12, "candidate": None}), 400, "invalid-payload", "to: must be a string"),
            (("webrtc:ice-candidate", {"callId": "../x", "candidate": None}), 400, "invalid-payload", "callId:"),
            (("call:attach", 42), 400, "invalid-payload", "must be an object, got a number"),
            (("call:attach", {}), 400, "invalid-payload", "callId: required"),
            (("call:attach", {"callId": call_id, "participantId": ["p"]}), 400, "invalid-payload", "participantId:"),
            (("call:media-ready", {"mode": 7}), 400, "invalid-payload", "mode: must be 'p2p' or 'sfu'"),
            (("pause-consumer", []), 400, "invalid-payload", "must be an object, got an array"),
            (("resume-consumer", {}), 400, "invalid-payload", "consumerId or participantId: required"),
            (("resume-consumer", {"consumerId": True}), 400, "invalid-payload", "consumerId:"),
            (("webrtc:offer", {"offer": {"sdp": HUGE}}), 413, "too-large", "larger than 131072 bytes"),
            (("webrtc:offer", {"offer": {"sdp": "v=0"}}, {"extra": 1}), 400, "invalid-payload", "got 2 arguments"),
            (("no-such-event", {"a": 1}), 404, "unknown-event", "unknown event 'no-such-event'"),
            (("call:error", {}), 404, "unknown-event", "unknown event 'call:error'"),
        ]
        for args, status, reason, text in cases:
            answer = await mallory.call(*args)
            assert isinstance(answer, dict), (args[0], answer)
            assert answer["status"] == status and answer["reason"] == reason, (args[0], answer)
            assert text in answer["error"], (args[0], answer)
            assert answer["event"] == args[0]
        # each refusal is also an event, for clients that did not ask for an acknowledgement
        await mallory.wait_for(lambda: len(mallory.seen("call:error")) >= len(cases))
        assert [e["reason"] for e in mallory.seen("call:error")] == [c[2] for c in cases]

        # valid events still reach their handlers, whose errors keep the {error, status} shape
        assert await alice.call("webrtc:offer", {"offer": {"type": "offer", "sdp": "v=0 alice"}}) == {"ok": True}
        await bob.wait_for(lambda: bob.seen("webrtc:offer"))
        assert bob.seen("webrtc:offer")[0]["offer"]["sdp"] == "v=0 alice"
        assert await alice.call("webrtc:ice-candidate", {"candidate": None}) == {"ok": True}  # end of candidates
        refused = await mallory.call("webrtc:offer", {"offer": {}})
        assert refused["status"] == 403 and "attach" in refused["error"]
        assert (await mallory.call("call:attach", {"callId": "nope"}))["status"] == 404
        assert (await alice.call("call:media-ready", {"mode": "p2p"}))["ok"] is True

        text = await (await http.get("/metrics")).text()
        counts = rejected(text)
        assert counts["invalid-payload"] == sum(1 for c in cases if c[2] == "invalid-payload")
        assert counts["too-large"] == 1 and counts["unknown-event"] == 2 and counts["rate-limit"] == 0
    finally:
        for c in (alice, bob, mallory):
            await c.close()
    no_tracebacks(caplog.records, capfd.readouterr().err)


def malformed(i: int) -> tuple[Any, ...]:
    """The i-th event of the flood: no data, wrong types, unknown events, huge payloads."""
    kind = i % 6
    if kind == 0:
        return ("webrtc:offer",)
    if kind == 1:
        return ("call:attach", 42)
    if kind == 2:
        return ("call:media-ready", {"mode": ["sfu"]})
    if kind == 3:
        return (f"unknown-{i % 97}", {"x": i})
    if kind == 4:
        return ("webrtc:answer", {"answer": {"sdp": HUGE}}) if i % 60 == 4 else ("pause-consumer", "c1")
    return ("webrtc:ice-candidate", None, 1, 2)


async def test_a_flood_of_malformed_events_is_rate_limited_and_does_not_disturb_others(http, caplog, capfd):
    caplog.set_level(logging.INFO)
    alice, bob = Conn(http, "alice"), Conn(http, "bob")
    floods: list[Conn] = []
    try:
        await alice.connect()
        await bob.connect()
        call_id = (await alice.req("POST", "/api/calls", {}, status=201))["callId"]
        await alice.req("POST", f"/api/calls/{call_id}/participants", {"socketId": alice.sio.get_sid()}, status=201)
        await bob.req("POST", f"/api/calls/{call_id}/participants", {"socketId": bob.sio.get_sid()}, status=201)

        flooding = True
        answers: list[Any] = []

        async def normal_traffic() -> None:
            """alice signals bob at 5 events/s (well under the limit) during the flood."""
            n = 0
            while flooding or n < 10:
                answers.append(await alice.call("webrtc:ice-candidate",
                                                {"candidate": {"candidate": f"candidate:{n} 1 udp 1 127.0.0.1 9 typ host"}}))
                n += 1
                await asyncio.sleep(0.2)  # pacing of a well-behaved client, not synchronisation

        normal = asyncio.ensure_future(normal_traffic())
        registry = http.server.app[METRICS].registry

        def received() -> float:
            """Events the server refused so far (each malformed one that reached it)."""
            return sum(registry.get_sample_value("sfu_socketio_events_rejected_total", {"reason": r}) or 0.0
                       for r in REJECT_REASONS)

        # until 10,000 malformed events have reached the server: those in flight when the server closes
        # a flooding connection are lost with it, and the flood goes on over a new connection
        sent = disconnects = 0
        mallory: Optional[Conn] = None
        while sent % 200 or received() < FLOOD_EVENTS:
            if mallory is None or not mallory.sio.connected:
                if mallory is not None:
                    assert await asyncio.wait_for(mallory.disconnected.wait(), 30) is True
                    disconnects += 1
                mallory = await Conn(http, "mallory").connect()
                floods.append(mallory)
            try:
                await mallory.emit(*malformed(sent))
            except socketio.exceptions.SocketIOError:  # the server closed it meanwhile
                continue
            sent += 1
            await asyncio.sleep(0)  # let the server, in this process, read what was sent
        flooding = False
        await asyncio.wait_for(normal, 60)

        # the flooding connections were refused (rate limit), told so, and disconnected
        assert disconnects >= 1, "a connection over the rate limit for 10,000 events was never disconnected"
        errors = [e for c in floods for e in c.seen("call:error")]
        reasons = {e["reason"] for e in errors}
        assert {"rate-limit", "invalid-payload", "unknown-event", "too-large"} <= reasons, reasons
        limit = next(e for e in errors if e["reason"] == "rate-limit")
        assert limit["status"] == 429 and limit["limit"] == "20 events/s with a burst of 40 per connection"
        assert "rate limit exceeded" in limit["error"] and limit["retryAfterMs"] >= 1
        assert any(e.get("disconnect") for e in errors)
        # error events to the flooder are themselves bounded: no echo of the flood
        assert len(errors) < sent / 10, len(errors)

        # the well-behaved connection was answered normally throughout
        assert len(answers) >= 10 and all(a == {"ok": True} for a in answers), [a for a in answers if a != {"ok": True}][:3]
        await bob.wait_for(lambda: len(bob.seen("webrtc:ice-candidate")) == len(answers))
        assert not alice.seen("call:error") and not bob.seen("call:error")
        assert alice.sio.connected and bob.sio.connected

        text = await (await http.get("/metrics")).text()
        counts = rejected(text)
        assert counts["rate-limit"] > FLOOD_EVENTS / 2, counts
        summary = (f"flood: {sent} events sent over {len(floods)} connections ({disconnects} disconnected by the "
              f"server), refused by reason: {counts}")
        assert counts["invalid-payload"] > 0 and counts["unknown-event"] > 0 and counts["too-large"] > 0, counts
        assert sum(counts.values()) >= FLOOD_EVENTS, counts
        kicked = float(re.search(r"^sfu_socketio_abuse_disconnects_total (\S+)$", text, re.M).group(1))
        assert kicked >= disconnects
    finally:
        for c in (alice, bob, *floods):
            await c.close()
    no_tracebacks(caplog.records, capfd.readouterr().err)
    print(summary)


async def test_malformed_packets_of_a_raw_client_are_refused_without_a_traceback(http, caplog, capfd):
    """A client of its own (like the demo page's call.js) may send packets
    python-socketio's client never would: an empty event array, a name that
    is not a string, invalid JSON."""
    caplog.set_level(logging.INFO)
    ws = await http.ws_connect("/socket.io/?EIO=4&transport=websocket")
    try:
        assert (await ws.receive_str(timeout=30)).startswith("0{")
        await ws.send_str('40{"token":"%s"}' % token("raw"))
        assert (await ws.receive_str(timeout=30)).startswith("40{")
        packets = ['42[]', '42[{}]', '42[["x"]]', '42[7,{}]', '42[null]', '42"webrtc:offer"', '42{"a":1}', '42[',
                   '4x', '421[]']
        for pkt in packets:
            await ws.send_str(pkt)
        await ws.send_str('429["webrtc:offer"]')  # then a well-formed packet, acknowledged as any client's
        errors = []
        while True:
            msg = await ws.receive_str(timeout=30)
            if msg.startswith("2"):  # Engine.IO ping
                await ws.send_str("3")
                continue
            if msg.startswith("439"):
                ack = msg
                break
            assert msg.startswith('42["call:error",'), msg
            errors.append(msg)
        assert len(errors) == len(packets) + 1, errors  # one per malformed packet, one for the last event
        assert all('"reason":"invalid-payload"' in e and '"status":400' in e for e in errors)
        assert "expected one object, got 0 arguments" in ack
        text = await (await http.get("/metrics")).text()
        assert rejected(text)["invalid-payload"] == len(packets) + 1
    finally:
        await ws.close()
    no_tracebacks(caplog.records, capfd.readouterr().err)


def test_the_limits_are_options_of_sfu_server(monkeypatch):
    from signaling.cli import parse_args, socket_limits

    assert socket_limits(parse_args(["--dev-auth"])) == SocketLimits()
    args = parse_args(["--dev-auth", "--socketio-rate", "5/s:10", "--socketio-disconnect-after", "50",
                       "--socketio-max-event", "64k"])
    assert socket_limits(args) == SocketLimits(rate_per_s=5.0, burst=10, disconnect_after=50, max_event_bytes=65536)
    monkeypatch.setenv("SFU_SOCKETIO_RATE", "off")
    monkeypatch.setenv("SFU_SOCKETIO_DISCONNECT_AFTER", "0")
    limits = socket_limits(parse_args(["--dev-auth"]))
    assert limits.rate_per_s is None and limits.disconnect_after == 0 and limits.describe() == "no rate limit"
    with pytest.raises(SystemExit):
        parse_args(["--dev-auth", "--socketio-rate", "fast"])
