"""Firefox ESR (Debian's firefox-esr, headless, driven over Marionette)
publishing over WHIP and viewing over WHEP through sfu-server, with Firefox
and Chromium on the other side.

Firefox gathers no ICE candidates on loopback, so each test makes two
network namespaces linked by a veth pair (tests/netns.py): the server's
(10.203.0.1, where sfu-server and Chromium run) and Firefox's (10.203.0.2,
default route via the server's address). Both are removed after the test,
even on failure. tests/browser/firefox_pages.py does the browser work and
prints what the pages' getStats() showed.

The pages use bundlePolicy max-bundle, as RFC 9725 has WHIP clients do:
Firefox then offers its video m-section bundle-only (port 0), which the
server must accept as part of the bundle, not as rejected.

Needs root (namespaces), /usr/bin/firefox-esr, the marionette_driver
package, and for the Chromium cases /usr/bin/chromium and playwright. In CI
a missing one fails the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import netns
from test_chromium import _prerequisites as _chromium_prerequisites

ROOT = Path(__file__).resolve().parent.parent
RUN_BOUND_S = 170  # the runner's own waits add up to well under this


def _prerequisites(scenario: str) -> str | None:
    if not Path("/usr/bin/firefox-esr").exists():
        return "Debian's firefox-esr is not installed (apt-get install firefox-esr)"
    missing = netns.missing()
    if missing:
        return missing
    if importlib.util.find_spec("marionette_driver") is None:
        return "the marionette_driver package is missing (pip install -e '.[test]')"
    if "chromium" in scenario:
        return _chromium_prerequisites()
    return None


def run_scenario(scenario: str, bundle_policy: str = "max-bundle") -> dict:
    """Runs tests/browser/firefox_pages.py in the server namespace with
    Firefox in the client one; returns its JSON (fails in CI, skips
    elsewhere, when a prerequisite is missing)."""
    missing = _prerequisites(scenario)
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    script = ROOT / "tests" / "browser" / "firefox_pages.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with netns.linked_namespaces("sfu-ff") as (server, client):
        proc = subprocess.Popen(
            server.exec_argv([sys.executable, str(script), scenario, client.name, server.ip, bundle_policy]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            start_new_session=True)
        try:
            out, err = proc.communicate(timeout=RUN_BOUND_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the runner and its browsers
            out, err = proc.communicate()
            pytest.fail(f"{scenario}: no result within {RUN_BOUND_S} s\n{err[-3000:]}")
    assert proc.returncode == 0 and out.strip(), err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))  # shown on failure
    assert not result.get("error"), result["error"] + "\n" + result.get("firefox_log", "")[-2000:]
    return result


def accepted_kinds(answer_sdp: str) -> list[str]:
    """Kinds of the answer's m-sections that were not rejected (port != 0)."""
    kinds = []
    for line in answer_sdp.splitlines():
        if line.startswith("m="):
            kind, port = line[2:].split()[:2]
            if port != "0":
                kinds.append(kind)
    return kinds


def assert_media_flows(result: dict) -> None:
    publish, view = result["publish"], result["view"]
    assert publish.get("status") == 201, publish
    assert sorted(accepted_kinds(publish["answer"])) == ["audio", "video"], (
        "the WHIP answer must accept the publisher's audio and video\n" + publish["answer"])
    assert view.get("status") == 201, view
    assert not view.get("setRemoteError"), view["setRemoteError"] + "\n" + view["answer"]
    assert sorted(accepted_kinds(view["answer"])) == ["audio", "video"], (
        "the WHEP answer must send audio and video\n" + view["answer"])
    first, second = result["viewer_stats"]
    video = [s["inbound"].get("video", {}).get("framesDecoded", 0) for s in (first, second)]
    audio = [s["inbound"].get("audio", {}).get("packetsReceived", 0) for s in (first, second)]
    assert second["connectionState"] == "connected", second
    assert video[1] > video[0] > 0, f"video framesDecoded {video} (publisher: {result.get('publisher_stats')})"
    assert audio[1] > audio[0] > 0, f"audio packetsReceived {audio} (publisher: {result.get('publisher_stats')})"


@pytest.mark.timeout(RUN_BOUND_S + 30)
@pytest.mark.parametrize("bundle_policy", ["max-bundle", "balanced"])
def test_firefox_publishes_over_whip_and_firefox_views_over_whep(bundle_policy):
    result = run_scenario("firefox-firefox", bundle_policy)
    assert result["firefox"].split(".")[0].isdigit()
    assert_media_flows(result)


@pytest.mark.timeout(RUN_BOUND_S + 30)
def test_chromium_views_a_firefox_publisher():
    assert_media_flows(run_scenario("firefox-chromium"))


@pytest.mark.timeout(RUN_BOUND_S + 30)
def test_firefox_views_a_chromium_publisher():
    assert_media_flows(run_scenario("chromium-firefox"))


def test_linked_namespaces_reach_each_other_and_are_removed():
    """The helper itself: a TCP connection from the client namespace (a
    thread moved there) to a listener in the server namespace, and both
    namespaces gone afterwards."""
    missing = netns.missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with netns.linked_namespaces("sfu-nt") as (server, client):
        names = {server.name, client.name}
        assert "default via " + server.ip in client.run("ip", "route").stdout
        assert "default" not in server.run("ip", "route").stdout
        listener = subprocess.Popen(
            server.exec_argv([sys.executable, "-c",
                              "import socket,sys\n"
                              "s = socket.create_server((sys.argv[1], 0)); print(s.getsockname()[1], flush=True)\n"
                              "c, a = s.accept(); c.sendall(a[0].encode()); c.close()", server.ip]),
            stdout=subprocess.PIPE, text=True)
        port = int(listener.stdout.readline())
        seen: list[bytes] = []

        def connect() -> None:
            netns.enter_in_thread(client.name)
            with socket.create_connection((server.ip, port), timeout=30) as s:
                seen.append(s.recv(64))

        t = threading.Thread(target=connect)
        t.start()
        t.join(60)
        assert listener.wait(30) == 0
        assert seen == [client.ip.encode()]  # the server saw the client's veth address
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not names & {line.split()[0] for line in listed.splitlines() if line.strip()}
