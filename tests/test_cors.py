"""CORS on /api, /whip and /whep (signaling/server.py `cors_middleware`),
sfu-server's --cors-origin / SFU_CORS_ORIGINS, and the rooms of the demos
that `sfu-server --dev-auth` prints.

Two levels: aiohttp's client against the real app (real media worker,
real JWTs, aiortc's SDP offers for WHIP/WHEP) for every kind of answer; and
headless Chromium (Debian's, in a loopback-only network namespace through
tests/test_chromium.py `run_browser_script`), where a page of *another
origin* creates and joins a room and publishes with WHIP through fetch():
it works when its origin is allowed and fetch rejects with a TypeError when
it is not.

The browser part runs as this file's `__main__` (`python tests/test_cors.py
browser`) inside the namespace and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script by run_browser_script
    sys.path.insert(0, str(ROOT))

from signaling.auth import AuthConfig, Authenticator  # noqa: E402
from signaling.server import CorsPolicy, create_app, normalize_origin, start_rooms  # noqa: E402

SECRET = "cors-test-secret-0123456789abcdef0123456789"
ALLOWED = "http://app.example:8443"
OTHER = "http://elsewhere.example"
EXPOSED = {"location", "link", "etag", "x-sfu-participant-id"}


def token(user: str, ttl: float = 600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + int(ttl)}, SECRET, algorithm="HS256")


def bearer(user: str = "alice", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}", **extra}


def _need(module: str) -> None:
    """A missing test prerequisite: skip, but fail in CI."""
    try:
        __import__(module)
    except ImportError:
        msg = f"the {module} package is missing (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


# ----------------------------------------------------------- unit level



async def serve(rooms, origins: Optional[list[str]] = None, **kw: Any):
    from aiohttp.test_utils import TestClient, TestServer

    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    cors = CorsPolicy.parse(origins) if origins is not None else None
    client = TestClient(TestServer(create_app(rooms, auth=auth, cors=cors, **kw), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def http(rooms):
    client = await serve(rooms, [ALLOWED])
    try:
        yield client
    finally:
        await client.close()


async def sdp_offer(video: bool = True, audio: bool = False, direction: str = "sendonly") -> str:
    """An SDP offer of aiortc's RTCPeerConnection (closed again: only its
    text is needed)."""
    _need("aiortc")
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if audio:
            pc.addTransceiver(AudioStreamTrack() if direction == "sendonly" else "audio", direction=direction)
        if video:
            pc.addTransceiver(VideoStreamTrack() if direction == "sendonly" else "video", direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


@pytest.fixture
def loopback_ice(monkeypatch):
    _need("aiortc")
    from aiortc_peer import pin_loopback

    pin_loopback(monkeypatch)


def preflight_headers(origin: str, method: str = "POST", headers: str = "authorization,content-type") -> dict:
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return h


def vary(resp) -> set[str]:
    return {v.strip().lower() for v in resp.headers.get("Vary", "").split(",") if v.strip()}


def exposed(resp) -> set[str]:
    return {v.strip().lower() for v in resp.headers.get("Access-Control-Expose-Headers", "").split(",") if v.strip()}


def assert_cors_for(resp, origin: str) -> None:
    assert resp.headers.get("Access-Control-Allow-Origin") == origin, dict(resp.headers)
    assert "origin" in vary(resp)
    assert EXPOSED <= exposed(resp), resp.headers.get("Access-Control-Expose-Headers")
    assert "Access-Control-Allow-Credentials" not in resp.headers


def assert_no_cors(resp) -> None:
    assert "Access-Control-Allow-Origin" not in resp.headers, dict(resp.headers)
    assert "Access-Control-Expose-Headers" not in resp.headers, dict(resp.headers)


def test_origins_are_parsed_as_browsers_send_them():
    assert normalize_origin("HTTPS://App.Example.com:443/") == "https://app.example.com"
    assert normalize_origin("http://127.0.0.2:8080") == "http://127.0.0.2:8080"
    assert normalize_origin("http://[::1]:80") == "http://[::1]"
    policy = CorsPolicy.parse(["https://a.example, http://b.example:81", "none", ""])
    assert policy.origins == {"https://a.example", "http://b.example:81"} and not policy.any_origin
    assert policy.allows("https://a.example") and not policy.allows("https://c.example")
    assert not policy.allows(None) and not policy.allows("")
    assert CorsPolicy.parse(["*"]).allows("https://anything.example")
    assert not CorsPolicy.parse(["*"]).allows("null")  # sandboxed frames and file: pages
    assert not CorsPolicy().enabled and not CorsPolicy.parse(["none"]).enabled
    for bad in ("app.example.com", "https://a.example/path", "https://a.example?q=1", "https://u@a.example",
                "null", "https://a.example:99999"):
        with pytest.raises(ValueError, match="not an origin"):
            CorsPolicy.parse([bad])


def test_sfu_server_cors_options(monkeypatch):
    from signaling.cli import parse_args

    secret = ["--jwt-secret", SECRET]
    monkeypatch.delenv("SFU_CORS_ORIGINS", raising=False)
    monkeypatch.delenv("SFU_DEV_AUTH", raising=False)
    assert parse_args(secret).cors == CorsPolicy()  # default: same-origin only
    args = parse_args(secret + ["--cors-origin", "https://a.example", "--cors-origin", "http://b.example:81/"])
    assert args.cors.origins == {"https://a.example", "http://b.example:81"}
    assert parse_args(secret + ["--cors-origin", "*"]).cors.any_origin
    assert parse_args(["--dev-auth"]).cors.any_origin  # development: any origin unless told
    assert parse_args(["--dev-auth", "--cors-origin", "none"]).cors == CorsPolicy()
    monkeypatch.setenv("SFU_CORS_ORIGINS", "https://a.example,https://c.example")
    assert parse_args(secret).cors.origins == {"https://a.example", "https://c.example"}
    assert parse_args(["--dev-auth"]).cors.origins == {"https://a.example", "https://c.example"}
    assert parse_args(secret + ["--cors-origin", "https://d.example"]).cors.origins == {"https://d.example"}
    monkeypatch.setenv("SFU_CORS_ORIGINS", "app.example")
    with pytest.raises(SystemExit):
        parse_args(secret)


async def test_preflight_from_an_allowed_origin_needs_no_token(http):
    for method, path in (("POST", "/api/rooms/r1/create"), ("POST", "/api/calls"), ("GET", "/api/calls/c1"),
                         ("POST", "/whip/r1"), ("POST", "/whep/r1"), ("DELETE", "/whip/r1/session"),
                         ("PATCH", "/whip/r1/session")):
        resp = await http.options(path, headers=preflight_headers(
            ALLOWED, method, "authorization,content-type,if-match" if method == "PATCH" else "authorization,content-type"))
        assert resp.status == 204, (path, resp.status, await resp.text())
        h = resp.headers
        assert h["Access-Control-Allow-Origin"] == ALLOWED
        assert "origin" in vary(resp)
        assert method in {m.strip() for m in h["Access-Control-Allow-Methods"].split(",")}
        assert {"authorization", "content-type", "if-match", "x-participant-id"} <= {
            x.strip().lower() for x in h["Access-Control-Allow-Headers"].split(",")}
        assert int(h["Access-Control-Max-Age"]) > 0
        assert "Access-Control-Allow-Credentials" not in h
    # an OPTIONS that is not a preflight still needs a token (it reaches whip.py's handler)
    resp = await http.options("/whip/r1")
    assert resp.status == 401


async def test_preflight_from_another_origin_is_refused_naming_the_problem(http, rooms):
    resp = await http.options("/api/rooms/r1/create", headers=preflight_headers(OTHER))
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    body = await resp.json()
    assert OTHER in body["error"] and "CORS" in body["error"] and "--cors-origin" in body["error"]
    resp = await http.options("/whip/r1", headers=preflight_headers(ALLOWED, "PUT"))
    assert resp.status == 403 and "PUT" in (await resp.json())["error"]
    resp = await http.options("/whip/r1", headers=preflight_headers(ALLOWED, "POST", "authorization,x-custom"))
    assert resp.status == 403 and "x-custom" in (await resp.json())["error"]
    # a server that allows no other origin (create_app's default) answers 403 too, not 401
    client = await serve(rooms, None)
    try:
        resp = await client.options("/api/rooms/r1/create", headers=preflight_headers(ALLOWED))
        assert resp.status == 403 and "no other origin" in (await resp.json())["error"]
        assert "Access-Control-Allow-Origin" not in resp.headers
    finally:
        await client.close()


async def test_answers_to_an_allowed_origin_carry_cors_headers_errors_included(http):
    o = {"Origin": ALLOWED}
    resp = await http.post("/api/rooms/r1/create", headers=bearer(**o))
    assert resp.status == 201
    assert_cors_for(resp, ALLOWED)
    resp = await http.post("/api/rooms/r1/participants", headers=bearer(**o))
    assert resp.status == 201
    assert_cors_for(resp, ALLOWED)
    pid = (await resp.json())["participantId"]
    # 401 from the auth middleware: readable by the page (WWW-Authenticate kept)
    resp = await http.post("/api/rooms/r1/create", headers=o)
    assert resp.status == 401 and "WWW-Authenticate" in resp.headers
    assert_cors_for(resp, ALLOWED)
    # 400 from the error middleware
    resp = await http.post("/api/rooms/r1/transports", json={}, headers=bearer(**o, **{"X-Participant-Id": pid}))
    assert resp.status == 400 and "direction" in (await resp.json())["error"]
    assert_cors_for(resp, ALLOWED)
    # 404 of a path no route has (aiohttp raises it)
    resp = await http.get("/api/no-such-thing", headers=bearer(**o))
    assert resp.status == 404
    assert_cors_for(resp, ALLOWED)
    # 403 of the room API
    resp = await http.post(f"/api/rooms/r1/participants/{pid}/leave", headers=bearer("bob", **o))
    assert resp.status == 403
    assert_cors_for(resp, ALLOWED)


async def test_another_origin_gets_no_cors_headers(http, rooms):
    o = {"Origin": OTHER}
    resp = await http.post("/api/rooms/r2/create", headers=bearer(**o))
    assert resp.status == 201  # served (same-origin requests carry an Origin too); the browser withholds it
    assert_no_cors(resp)
    assert "origin" in vary(resp)
    resp = await http.post("/api/rooms/r2/create", headers=o)
    assert resp.status == 401
    assert_no_cors(resp)
    resp = await http.post("/api/rooms/r2/create", headers=bearer("alice", Origin="null"))
    assert_no_cors(resp)
    # no Origin (not a browser, or same-origin GET): no CORS headers
    resp = await http.post("/api/rooms/r2/create", headers=bearer())
    assert resp.status == 200
    assert_no_cors(resp)
    # pages and probes are not CORS paths
    for path in ("/", "/healthz"):
        resp = await http.get(path, headers=o)
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
        resp = await http.get(path, headers={"Origin": ALLOWED})
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_whip_and_whep_answers_expose_location_to_an_allowed_origin(http, loopback_ice):
    o = {"Origin": ALLOWED}
    resp = await http.post("/whip/live", data=await sdp_offer(audio=True),
                           headers=bearer(**o, **{"Content-Type": "application/sdp"}))
    assert resp.status == 201, await resp.text()
    assert_cors_for(resp, ALLOWED)
    location = resp.headers["Location"]
    assert location.startswith("/whip/live/") and resp.headers["X-Sfu-Participant-Id"]
    # the middleware's list replaced whip.py's own header (one header, the full list)
    assert len(resp.headers.getall("Access-Control-Expose-Headers")) == 1
    resp = await http.post("/whep/live", data=await sdp_offer(audio=True, direction="recvonly"),
                           headers=bearer("bob", **o, **{"Content-Type": "application/sdp"}))
    assert resp.status == 201, await resp.text()
    assert_cors_for(resp, ALLOWED)
    viewer = resp.headers["Location"]
    # a WHIP error (415) and the sessions' DELETEs
    resp = await http.post("/whip/live", data="x", headers=bearer(**o, **{"Content-Type": "text/plain"}))
    assert resp.status == 415
    assert_cors_for(resp, ALLOWED)
    for url in (viewer, location):
        resp = await http.delete(url, headers=bearer(**o))
        assert resp.status == 200
        assert_cors_for(resp, ALLOWED)
    resp = await http.post("/whip/live", data=await sdp_offer(), headers=bearer(
        Origin=OTHER, **{"Content-Type": "application/sdp"}))
    assert resp.status == 201
    assert_no_cors(resp)


async def test_rate_limited_answers_carry_cors_headers(rooms):
    from signaling.ratelimit import RateLimiter, parse_rate

    client = await serve(rooms, [ALLOWED], limiter=RateLimiter(per_identity=parse_rate("1/m:1"), per_ip=None))
    try:
        statuses = []
        for _ in range(3):
            resp = await client.post("/api/rooms/r3/create", headers=bearer(Origin=ALLOWED))
            statuses.append(resp.status)
            assert_cors_for(resp, ALLOWED)
        assert statuses[0] == 201 and statuses[-1] == 429
        assert "retry-after" in exposed(resp) and resp.headers["Retry-After"]
        # preflights are not counted against the limits
        resp = await client.options("/api/rooms/r3/create", headers=preflight_headers(ALLOWED))
        assert resp.status == 204
    finally:
        await client.close()


async def test_any_origin_echoes_the_origin(rooms):
    client = await serve(rooms, ["*"])
    try:
        for origin in ("https://one.example", "http://127.0.0.9:1234"):
            resp = await client.options("/whip/r", headers=preflight_headers(origin))
            assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == origin
            resp = await client.post("/api/rooms/r4/create", headers=bearer(Origin=origin))
            assert_cors_for(resp, origin)
        resp = await client.options("/whip/r", headers=preflight_headers("null"))
        assert resp.status == 403
    finally:
        await client.close()


async def test_socketio_accepts_the_same_origins(rooms):
    handshake = "/socket.io/?EIO=4&transport=polling"
    client = await serve(rooms, [ALLOWED])
    try:
        resp = await client.get(handshake, headers={"Origin": ALLOWED})
        assert resp.status == 200 and resp.headers.get("Access-Control-Allow-Origin") == ALLOWED
        resp = await client.get(handshake, headers={"Origin": OTHER})
        assert resp.status == 400
        own = f"http://127.0.0.1:{client.port}"
        resp = await client.get(handshake, headers={"Origin": own})
        assert resp.status == 200
    finally:
        await client.close()
    client = await serve(rooms, None)  # the default: the page's own origin only
    try:
        assert (await client.get(handshake, headers={"Origin": ALLOWED})).status == 400
        assert (await client.get(handshake, headers={"Origin": f"http://127.0.0.1:{client.port}"})).status == 200
    finally:
        await client.close()


# ------------------------------------------------------- the demo rooms

def test_the_dev_auth_demos_name_different_rooms():
    from signaling.cli import DEMO_CALL, DEMO_ROOM, DEV_USERS, dev_banner

    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    lines = dev_banner("http://127.0.0.1:8080", auth, CorsPolicy.parse(["*"]))
    urls = [urlsplit(u) for line in lines for u in re.findall(r"http://\S+", line)]
    calls = {parse_qs(u.query)["call"][0] for u in urls if u.path == "/call"}
    rooms_ = {parse_qs(u.query).get("room", [None])[0] for u in urls if u.path == "/"}
    assert calls == {DEMO_CALL} and rooms_ == {DEMO_ROOM}, lines
    assert DEMO_CALL != DEMO_ROOM
    assert len([u for u in urls if u.path == "/call"]) == len(DEV_USERS)
    for u in urls:
        auth.verify(parse_qs(u.query)["token"][0])  # every printed token is valid
    # the room page's default room is the printed one, and the call page has no default (a new call)
    demo_js = (ROOT / "signaling" / "static" / "demo.js").read_text()
    assert re.search(r'params\.get\("room"\)\s*\|\|\s*"([^"]+)"', demo_js).group(1) == DEMO_ROOM
    assert '"demo"' not in (ROOT / "signaling" / "static" / "call.js").read_text()


async def test_call_demo_first_then_the_room_demo_works(rooms, loopback_ice):
    """The order that failed with the shared name `demo`: the call demo is
    opened, then the room demo (its REST + WHIP flow, as demo.js does it)."""
    from signaling.cli import DEMO_CALL, DEMO_ROOM

    client = await serve(rooms, None)
    try:
        resp = await client.post("/api/calls", json={"callId": DEMO_CALL}, headers=bearer("alice"))
        assert resp.status == 201, await resp.text()
        resp = await client.post(f"/api/calls/{DEMO_CALL}/participants", json={}, headers=bearer("alice"))
        assert resp.status == 201, await resp.text()
        dev = bearer("dev")
        resp = await client.post(f"/api/rooms/{DEMO_ROOM}/create", headers=dev)
        assert resp.status == 201, await resp.text()
        resp = await client.post(f"/whip/{DEMO_ROOM}", data=await sdp_offer(audio=True),
                                 headers={**dev, "Content-Type": "application/sdp"})
        assert resp.status == 201, await resp.text()
        me = resp.headers["X-Sfu-Participant-Id"]
        resp = await client.get(f"/api/rooms/{DEMO_ROOM}/producers", headers={**dev, "X-Participant-Id": me})
        assert resp.status == 200
        assert {p["kind"] for p in (await resp.json())["producers"]} == {"audio", "video"}
        # what the shared name did: the call's name refuses the room demo's flow (403 here; WHIP then
        # got 409 in P2P mode, "400 as: required for a call's room" in SFU mode)
        resp = await client.post(f"/api/rooms/{DEMO_CALL}/create", headers=dev)
        assert resp.status == 403 and "belongs to a call" in (await resp.json())["error"]
        resp = await client.post(f"/whip/{DEMO_CALL}", data=await sdp_offer(),
                                 headers={**dev, "Content-Type": "application/sdp"})
        assert resp.status in (400, 409), await resp.text()
    finally:
        await client.close()


# ---------------------------------------------------- real browser level

PAGE = "<!doctype html><title>another origin</title><p>a page that is not the SFU's</p>"

#: Runs in the page of the other origin: the room API and WHIP through fetch().
FLOW_JS = """async ({sfu, token, room}) => {
  const out = {origin: location.origin};
  const auth = {Authorization: `Bearer ${token}`};
  const step = async (name, fn) => {
    try { out[name] = await fn(); } catch (e) { out[name] = {error: e.name, message: String(e.message)}; }
  };
  await step("create", async () => {
    const r = await fetch(`${sfu}/api/rooms/${room}/create`, {method: "POST", headers: auth});
    const body = await r.json();
    return {status: r.status, body: {roomId: body.roomId, error: body.error}};
  });
  await step("join", async () => {
    const r = await fetch(`${sfu}/api/rooms/${room}/participants`, {method: "POST", headers: auth});
    const body = await r.json();
    return {status: r.status, body: {participantId: body.participantId, error: body.error}};
  });
  await step("badRequest", async () => {
    const r = await fetch(`${sfu}/api/rooms/${room}/transports`, {
      method: "POST", headers: {...auth, "Content-Type": "application/json"}, body: "{}"});
    return {status: r.status, body: await r.json()};
  });
  await step("badToken", async () => {
    const r = await fetch(`${sfu}/api/rooms/${room}/create`, {method: "POST", headers: {Authorization: "Bearer nope"}});
    return {status: r.status, body: await r.json()};
  });
  await step("whip", async () => {
    const canvas = document.createElement("canvas");
    canvas.width = 160; canvas.height = 120;
    const g = canvas.getContext("2d");
    g.fillStyle = "#3a6"; g.fillRect(0, 0, 160, 120);
    const stream = canvas.captureStream(15);
    const pc = new RTCPeerConnection();
    for (const t of stream.getTracks()) pc.addTransceiver(t, {direction: "sendonly"});
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(`${sfu}/whip/${room}`, {method: "POST", body: pc.localDescription.sdp,
                                                 headers: {...auth, "Content-Type": "application/sdp"}});
    const sdp = await r.text();
    const res = {status: r.status, location: r.headers.get("Location"),
                 participant: r.headers.get("X-Sfu-Participant-Id"), iceLite: sdp.includes("a=ice-lite")};
    if (r.status === 201) {
      await pc.setRemoteDescription({type: "answer", sdp});
      res.remoteSet = true;
      const d = await fetch(new URL(res.location, sfu), {method: "DELETE", headers: auth});
      res.deleteStatus = d.status;
    }
    pc.close();
    return res;
  });
  return out;
}"""


async def browser_main() -> dict:
    """Inside the namespace: the SFU on 127.0.0.1, the same page served by
    127.0.0.2 (allowed origin) and 127.0.0.3 (not allowed), Chromium runs
    FLOW_JS in each."""
    from aiohttp import web
    from playwright.async_api import async_playwright

    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    from demo_pages import CHROMIUM, FLAGS

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    runners: list[web.AppRunner] = []

    async def start(app: web.Application, host: str) -> int:
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, host, 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    origins = {}
    for label, host in (("allowed", "127.0.0.2"), ("denied", "127.0.0.3")):
        app = web.Application()
        app.router.add_get("/", page)
        origins[label] = f"http://{host}:{await start(app, host)}"
    rooms = await start_rooms(workers=1)
    auth = Authenticator(AuthConfig.from_options(secret=SECRET))
    sfu_app = create_app(rooms, auth=auth, cors=CorsPolicy.parse([origins["allowed"]]))
    seen: list[dict] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append({"method": request.method, "path": request.path, "status": response.status,
                     "origin": request.headers.get("Origin")})

    sfu_app.on_response_prepare.append(record)
    sfu = f"http://127.0.0.1:{await start(sfu_app, '127.0.0.1')}"
    result: dict = {"sfu": sfu, "origins": origins}
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                for label in ("allowed", "denied"):
                    tab = await browser.new_page()
                    console: list[str] = []
                    tab.on("console", lambda msg, c=console: c.append(f"{msg.type}: {msg.text}"))
                    await tab.goto(origins[label] + "/")
                    flow = await asyncio.wait_for(tab.evaluate(FLOW_JS, {
                        "sfu": sfu, "token": auth.mint(f"user-{label}"), "room": f"{label}-room"}), 120)
                    flow["console"] = console[-12:]
                    flow["roomExists"] = f"{label}-room" in rooms.rooms
                    result[label] = flow
                    await tab.close()
            finally:
                await browser.close()
    finally:
        result["seen"] = seen
        for runner in runners:
            await runner.cleanup()
        await rooms.close()
    return result


def test_chromium_page_of_another_origin_uses_the_api_only_when_allowed():
    from test_chromium import run_browser_script

    result = run_browser_script("../test_cors.py", "browser", timeout=300)
    print(json.dumps(result, indent=1))
    ok = result["allowed"]
    assert ok["create"]["status"] == 201 and ok["create"]["body"]["roomId"] == "allowed-room", ok
    assert ok["join"]["status"] == 201 and ok["join"]["body"]["participantId"], ok
    # error answers (400 from the error middleware, 401 from the auth middleware) are readable by the page
    assert ok["badRequest"]["status"] == 400 and "direction" in ok["badRequest"]["body"]["error"], ok
    assert ok["badToken"]["status"] == 401 and ok["badToken"]["body"]["error"], ok
    whip = ok["whip"]
    assert whip["status"] == 201 and whip["iceLite"] and whip["remoteSet"], whip
    # Location and X-Sfu-Participant-Id are exposed to the page; DELETE of a cross-origin session works
    assert whip["location"].startswith("/whip/allowed-room/") and whip["participant"], whip
    assert whip["deleteStatus"] == 200, whip
    assert ok["roomExists"]

    denied = result["denied"]
    for name in ("create", "join", "badRequest", "badToken", "whip"):
        assert denied[name].get("error") == "TypeError", (name, denied)
    assert any("blocked by CORS policy" in line for line in denied["console"]), denied["console"]
    assert not denied["roomExists"]
    # the browser asked (preflight, 403) and sent nothing else
    from_denied = [s for s in result["seen"] if s["origin"] == result["origins"]["denied"]]
    assert from_denied and all(s["method"] == "OPTIONS" and s["status"] == 403 for s in from_denied), from_denied
    from_allowed = [s for s in result["seen"] if s["origin"] == result["origins"]["allowed"]]
    assert any(s["method"] == "OPTIONS" and s["status"] == 204 for s in from_allowed), from_allowed


if __name__ == "__main__":
    if sys.argv[1:] == ["browser"]:
        print(json.dumps(asyncio.run(browser_main())), flush=True)
    else:
        sys.exit("usage: python tests/test_cors.py browser  (run by the test, in a loopback-only namespace)")
