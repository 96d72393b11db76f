"""Firefox ESR (Debian's firefox-esr) against sfu-server over WHIP/WHEP,
driven through Marionette; prints one JSON line with what happened.

Runs inside the *server* network namespace (see tests/test_firefox.py and
tests/netns.py): the sfu-server app (create_app/start_rooms, as
tests/browser/demo_pages.py) listens on SERVER_IP for HTTP and media.
Firefox runs in the *client* namespace, linked to the server's by a veth
pair, because Firefox gathers no ICE candidates on loopback. Marionette
listens on the client namespace's loopback, so the Marionette client runs
on a thread that entered that namespace (netns.enter_in_thread).
Chromium (Debian's, through playwright) runs here in the server namespace.

Usage: python tests/browser/firefox_pages.py SCENARIO CLIENT_NETNS SERVER_IP [BUNDLE_POLICY]
  SCENARIO: firefox-firefox | firefox-chromium | chromium-firefox
            (publisher-viewer: publisher over WHIP, viewer over WHEP)
  BUNDLE_POLICY: the pages' RTCPeerConnection bundlePolicy, "max-bundle"
            by default (RFC 9725 has WHIP clients use max-bundle; Firefox
            then offers every m-section after the first bundle-only, port 0)

The pages are plain RTCPeerConnection + fetch (WHIP/WHEP as RFC 9725 and
the WHEP draft describe them), served by this script on the server's
origin; the media are each browser's own fake camera and microphone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "browser"))

import netns  # noqa: E402

from signaling.server import create_app, start_rooms  # noqa: E402

FIREFOX = "/usr/bin/firefox-esr"
MARIONETTE_PORT = 2828  # on the client namespace's own loopback: no other Firefox there

# Bounds (seconds), generous for a busy 2-core machine; none is a sleep.
FIREFOX_START_S = 60
MEDIA_START_S = 45  # first decoded frame and audio packet at the viewer
MEDIA_RISE_S = 30  # counters rising further after that

PREFS: dict[str, Any] = {
    # a quiet, fresh profile: no first-run pages, updates, telemetry or reports
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.aboutwelcome.enabled": False,
    "startup.homepage_welcome_url": "about:blank",
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "extensions.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.tabs.warnOnClose": False,
    "dom.disable_open_during_load": False,
    "marionette.port": MARIONETTE_PORT,
    # fake camera and microphone, granted without a prompt
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    # getUserMedia needs a secure context; the server's origin is plain http
    # on the veth address
    "media.devices.insecure.enabled": True,
    "media.getusermedia.insecure.enabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    # real addresses in host candidates (not mDNS names)
    "media.peerconnection.ice.obfuscate_host_addresses": False,
}

PAGE = """<!doctype html>
<meta charset="utf-8"><title>WHIP/WHEP conformance</title>
<body>
<script>
'use strict';
function gathered(pc, ms) {
  // non-trickle WHIP/WHEP: send the offer with its candidates (bounded wait)
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}
async function exchange(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 5000);
  const offer = pc.localDescription.sdp;
  const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/sdp'}, body: offer});
  const body = await r.text();
  const out = {status: r.status, location: r.headers.get('Location'), offer: offer, answer: body};
  if (r.status !== 201) return out;
  try {
    await pc.setRemoteDescription({type: 'answer', sdp: body});
  } catch (e) {
    out.setRemoteError = String(e);
  }
  return out;
}
window.publish = async (a) => {
  const stream = await navigator.mediaDevices.getUserMedia(
      {audio: true, video: {width: 320, height: 240, frameRate: 15}});
  const pc = new RTCPeerConnection({bundlePolicy: a.bundlePolicy});
  window.pc = pc;
  for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
  return exchange(pc, '/whip/' + a.room);
};
window.view = async (a) => {
  const pc = new RTCPeerConnection({bundlePolicy: a.bundlePolicy});
  window.pc = pc;
  pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.ontrack = (ev) => {
    const el = document.createElement(ev.track.kind);
    el.muted = true; el.autoplay = true;
    el.srcObject = new MediaStream([ev.track]);
    document.body.appendChild(el);
    el.play().catch(() => {});
  };
  return exchange(pc, '/whep/' + a.room);
};
window.stats = async () => {
  const out = {connectionState: window.pc ? window.pc.connectionState : null,
               iceConnectionState: window.pc ? window.pc.iceConnectionState : null,
               inbound: {}, outbound: {}};
  if (!window.pc) return out;
  const report = await window.pc.getStats();
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && !r.isRemote) {
      out.inbound[r.kind] = {packetsReceived: r.packetsReceived || 0, bytesReceived: r.bytesReceived || 0,
                             framesDecoded: r.framesDecoded || 0, packetsLost: r.packetsLost || 0};
    }
    if (r.type === 'outbound-rtp' && !r.isRemote) {
      out.outbound[r.kind] = {packetsSent: r.packetsSent || 0, bytesSent: r.bytesSent || 0,
                              framesEncoded: r.framesEncoded || 0};
    }
  });
  return out;
};
</script>
"""


def _user_js(prefs: dict[str, Any]) -> str:
    return "".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in prefs.items())


class FirefoxPage:
    """One window of a :class:`Firefox`."""

    def __init__(self, firefox: "Firefox", handle: str) -> None:
        self.firefox, self.handle = firefox, handle

    async def call(self, fn: str, arg: Any = None) -> Any:
        return await self.firefox.run(self.firefox._call, self.handle, fn, arg)


class Firefox:
    """Headless firefox-esr with a fresh profile in network namespace
    ``ns``, driven over Marionette (marionette_driver) from one thread that
    entered ``ns``."""

    def __init__(self, ns: str, workdir: Path) -> None:
        self.ns, self.workdir = ns, workdir
        self.profile = workdir / "profile"
        self.log_path = workdir / "firefox.log"
        self.proc: subprocess.Popen | None = None
        self.marionette: Any = None
        self.pages = 0
        self.executor = ThreadPoolExecutor(1, initializer=netns.enter_in_thread, initargs=(ns,))

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def start(self) -> None:
        self.profile.mkdir(parents=True)
        (self.profile / "user.js").write_text(_user_js(PREFS))
        env = dict(os.environ, HOME=str(self.workdir), MOZ_CRASHREPORTER_DISABLE="1",
                   MOZ_HEADLESS="1", XDG_CACHE_HOME=str(self.workdir / "cache"))
        env.pop("DISPLAY", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, FIREFOX, "--headless", "--marionette", "--no-remote",
                 "--profile", str(self.profile), "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        await self.run(self._connect)

    def _connect(self) -> None:
        from marionette_driver.marionette import Marionette

        m = Marionette(host="127.0.0.1", port=MARIONETTE_PORT, startup_timeout=FIREFOX_START_S)
        m.start_session()
        m.timeout.script = 90
        m.timeout.page_load = 60
        self.marionette = m

    async def open(self, url: str) -> FirefoxPage:
        return FirefoxPage(self, await self.run(self._open, url))

    def _open(self, url: str) -> str:
        m = self.marionette
        if self.pages:
            handle = m.open(type="window")["handle"]
            m.switch_to_window(handle)
        else:
            handle = m.current_window_handle
        self.pages += 1
        m.navigate(url)
        return handle

    def _call(self, handle: str, fn: str, arg: Any) -> Any:
        m = self.marionette
        if m.current_window_handle != handle:
            m.switch_to_window(handle)
        # sandbox=None: the script runs in the page itself (its window.*)
        return m.execute_async_script(
            """const [fn, arg, done] = arguments;
            Promise.resolve().then(() => window[fn](arg)).then(
                (v) => done(v === undefined ? null : v),
                (e) => done({error: String(e && e.stack ? e + ' ' + e.stack : e)}));""",
            script_args=(fn, arg), sandbox=None, new_sandbox=False)

    def version(self) -> str:
        return (self.marionette.session or {}).get("browserVersion", "?") if self.marionette else "?"

    async def close(self) -> None:
        if self.marionette is not None:
            try:
                await asyncio.wait_for(self.run(self._quit), 20)
            except Exception:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                self.proc.wait()
        self.executor.shutdown(wait=False)

    def _quit(self) -> None:
        m = self.marionette
        try:
            m._send_message("Marionette:Quit", {"flags": ["eForceQuit"]})
        except Exception:
            pass
        try:
            m.delete_session(send_request=False)
        except Exception:
            pass

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class ChromiumPage:
    def __init__(self, page: Any) -> None:
        self.page = page

    async def call(self, fn: str, arg: Any = None) -> Any:
        return await self.page.evaluate(
            "([fn, arg]) => Promise.resolve().then(() => window[fn](arg)).then((v) => v === undefined ? null : v,"
            " (e) => ({error: String(e)}))", [fn, arg])


async def _launch_chromium(pw: Any, origin: str) -> Any:
    from demo_pages import CHROMIUM, FLAGS

    # getUserMedia needs a secure context: the server's origin is plain http
    return await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=FLAGS + [f"--unsafely-treat-insecure-origin-as-secure={origin}"])


async def _poll(page: Any, done: Any, bound_s: float) -> dict:
    """The viewer's stats once ``done(stats)`` holds, or after ``bound_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while True:
        stats = await page.call("stats")
        if done(stats) or loop.time() > deadline:
            return stats
        await asyncio.sleep(0.5)


def _counts(stats: dict) -> tuple[int, int]:
    inbound = stats.get("inbound") or {}
    return (inbound.get("video", {}).get("framesDecoded", 0), inbound.get("audio", {}).get("packetsReceived", 0))


async def _server_view(rooms: Any) -> list[dict]:
    out = []
    for room in rooms.rooms.values():
        for t in room.router.transports:
            st = (await t.get_stats())[0]
            out.append({k: st.get(k) for k in ("iceState", "dtlsState", "rtpPacketsReceived", "rtpPacketsSent",
                                               "rtcpPacketsReceived", "packetsDiscarded")})
    return out


async def main(scenario: str, client_ns: str, server_ip: str, bundle_policy: str = "max-bundle") -> dict:
    publisher_kind, viewer_kind = scenario.split("-")
    result: dict[str, Any] = {"scenario": scenario, "bundlePolicy": bundle_policy}
    rooms = await start_rooms(workers=1, listen_ip=server_ip)
    app = create_app(rooms)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/conformance", page)  # the test pages, on the server's own origin
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, server_ip, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    origin = f"http://{server_ip}:{port}"
    url = origin + "/conformance"
    workdir = Path(tempfile.mkdtemp(prefix="sfu-firefox-"))
    firefox: Firefox | None = None
    pw_ctx = None
    try:
        if "firefox" in (publisher_kind, viewer_kind):
            firefox = Firefox(client_ns, workdir)
            await firefox.start()
            result["firefox"] = firefox.version()
        chromium = None
        if "chromium" in (publisher_kind, viewer_kind):
            from playwright.async_api import async_playwright

            pw_ctx = async_playwright()
            pw = await pw_ctx.__aenter__()
            chromium = await _launch_chromium(pw, origin)
            result["chromium"] = chromium.version

        async def open_page(kind: str) -> Any:
            if kind == "firefox":
                assert firefox is not None
                return await firefox.open(url)
            assert chromium is not None
            tab = await chromium.new_page()
            await tab.goto(url)
            return ChromiumPage(tab)

        room = f"conformance-{scenario}"
        publisher = await open_page(publisher_kind)
        result["publish"] = await publisher.call("publish", {"room": room, "bundlePolicy": bundle_policy})
        viewer = await open_page(viewer_kind)
        result["view"] = await viewer.call("view", {"room": room, "bundlePolicy": bundle_policy})
        if result["view"].get("status") == 201 and not result["view"].get("setRemoteError"):
            first = await _poll(viewer, lambda s: min(_counts(s)) > 0, MEDIA_START_S)
            v0, a0 = _counts(first)
            # rising counters (or, when a kind never started, just a second look)
            second = await _poll(viewer, lambda s: _counts(s)[0] > v0 + 10 and _counts(s)[1] > a0 + 20,
                                 MEDIA_RISE_S if min(v0, a0) > 0 else 0)
            result["viewer_stats"] = [first, second]
        result["publisher_stats"] = await publisher.call("stats")
        result["server"] = await _server_view(rooms)
    except Exception:
        result["error"] = traceback.format_exc()
    finally:
        if firefox is not None:
            await firefox.close()
            result["firefox_log"] = firefox.log_tail()
        if pw_ctx is not None:
            try:
                await pw_ctx.__aexit__(None, None, None)
            except Exception:
                pass
        await runner.cleanup()
        await rooms.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


if __name__ == "__main__":
    # SIGTERM unwinds main()'s finally blocks (Firefox and Chromium closed);
    # tests/test_firefox.py kills the runner's whole session only past its bound
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.monotonic()
    out = asyncio.run(main(*sys.argv[1:5]))
    out["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(out), flush=True)
