"""Headless Chromium (Debian's) on the call page: two pages talk P2P, a third
joins (the call moves to the SFU), the third leaves (back to P2P). Each page
keeps decoding video throughout; the switch durations and the longest gap in
framesDecoded during each switch are printed (docs/calls.md records them).

Runs in a loopback-only network namespace like tests/test_chromium.py.
"""

from __future__ import annotations

from test_chromium import run_browser_script

# The bounds asserted are the seed's (a switch within 2 s) and a generous gap
# bound: the goals (500 ms, 200 ms) are measured and recorded, not asserted,
# since two shared cores running three Chromium pages make them noisy.
SWITCH_LIMIT_MS = 2000
GAP_LIMIT_MS = 1000


def run_call(hold_s: float = 1.5, keyframe_ms: int = 350) -> dict:
    return run_browser_script("call_pages.py", hold_s, keyframe_ms, timeout=120)


def _switch(stats: dict, mode: str, kind: str = "switch") -> dict:
    found = [s for s in stats["switches"] if s["mode"] == mode and s["kind"] == kind]
    assert len(found) == 1, stats["switches"]
    return found[0]


def test_call_moves_p2p_to_sfu_and_back_while_every_page_keeps_decoding():
    result = run_call()
    ph = result["phases"]
    names = ("alice", "bob", "carol")
    report = []
    # P2P with two: each decodes the other over the direct connection, and keeps decoding
    for before, after in zip(ph["p2p"], ph["p2p_later"]):
        (pid, r0), = before["remotes"].items()
        r1 = after["remotes"][pid]
        assert r1["active"] == "p2p" and r1["shownFrames"] > r0["shownFrames"], (r0, r1)
        # the SFU on standby: connected, senders off, the peer viewed (silent)
        assert after["paths"] == {"p2p": True, "publisher": False, "standby": True, "views": [pid]}, after["paths"]
    # The third joins: everyone ends up receiving the two others through the SFU
    for name, before, after in zip(names, ph["sfu"], ph["sfu_later"]):
        assert after["mode"] == "sfu" and not after["paths"]["p2p"] and after["paths"]["publisher"]
        for pid, r0 in before["remotes"].items():
            r1 = after["remotes"][pid]
            assert r1["active"] == "sfu" and r1["framesSFU"] > r0["framesSFU"] + 10, (name, r0, r1)
        kind = "join" if name == "carol" else "switch"
        sw = _switch(after, "sfu", kind)
        report.append((name, "p2p->sfu" if kind == "switch" else "join (sfu)", sw))
        assert sw["durationMs"] < SWITCH_LIMIT_MS and sw["serverMs"] < SWITCH_LIMIT_MS, sw
        if kind == "switch":
            assert sw["gaps"] and max(sw["gaps"].values()) < GAP_LIMIT_MS, sw
            assert sw["audioGaps"] and max(sw["audioGaps"].values()) < GAP_LIMIT_MS, sw
    # The third leaves: back to a direct connection, the SFU session released
    for name, before, after in zip(names, ph["back"], ph["back_later"]):
        (pid, r0), = before["remotes"].items()
        r1 = after["remotes"][pid]
        assert r1["active"] == "p2p" and r1["framesP2P"] > r0["framesP2P"] + 10, (name, r0, r1)
        assert after["paths"] == {"p2p": True, "publisher": False, "standby": True, "views": [pid]}, after["paths"]
        sw = _switch(after, "p2p")
        report.append((name, "sfu->p2p", sw))
        assert sw["durationMs"] < SWITCH_LIMIT_MS and sw["serverMs"] < SWITCH_LIMIT_MS, sw
        assert sw["gaps"] and max(sw["gaps"].values()) < GAP_LIMIT_MS, sw
        assert sw["audioGaps"] and max(sw["audioGaps"].values()) < GAP_LIMIT_MS, sw
    server = result["server"]
    assert server["mode"] == "p2p" and server["participants"] == ["alice", "bob"]
    assert server["standby_room"] == ["alice", "bob"]  # carol's sessions closed, the room kept for the next
    assert 'sfu_call_mode_switches_total{to_mode="sfu"} 1.0' in server["metrics"]
    assert 'sfu_call_mode_switches_total{to_mode="p2p"} 1.0' in server["metrics"]

    print(f"\ncall in Chromium ({result['seconds']} s; page = from the server's event until every remote "
          "decodes on the new path; server = mode-switch emitted -> call:mode-switched):")
    who = {s["participantId"]: n for n, s in zip(names, ph["sfu_later"])}
    for name, what, sw in report:
        gaps = ", ".join(f"{who.get(p, p)} {g} ms (audio {sw['audioGaps'].get(p, '-')} ms)"
                         for p, g in sw["gaps"].items()) or "-"
        print(f"  {name:6} {what:11} page {sw['durationMs']:5} ms  server {sw['serverMs']:7} ms  "
              f"longest framesDecoded gap per remote: {gaps}")


KILLS = 5
RECOVERY_LIMIT_S = 10.0  # asserted; the goal (2 s) is measured and printed (docs/calls.md)


def test_a_killed_media_worker_is_replaced_and_every_page_gets_media_back():
    """Three pages in an SFU call (2 media workers); the worker under the
    call's room is killed with SIGKILL five times in a row. Each time the
    server moves the call to a new room on a live worker (call:media-lost,
    then call:room-replaced) and every page publishes and views again by
    itself: media from every other participant comes back without a reload,
    and keeps coming."""
    result = run_browser_script("call_pages.py", "kill", KILLS, timeout=240)
    print(f"\nworker killed {len(result['kills'])} times under a 3-page SFU call ({result['workers']} workers, "
          f"{result['seconds']} s): media back on each page, s after the kill (page: ms after call:media-lost)")
    for i, k in enumerate(result["kills"]):
        print(f"  kill {i + 1}: worker {k['worker_pid']} -> {k['new_worker_pid']}: "
              + ", ".join(f"{b} s ({p} ms)" for b, p in zip(k["back_after_kill_s"], k["page_ms"])))
    assert len(result["kills"]) == KILLS, result.get("timeout_stats")
    for k in result["kills"]:
        assert k["new_worker_pid"] not in (None, k["worker_pid"]), k   # a live worker carries the call now
        assert all(b is not None and b < RECOVERY_LIMIT_S for b in k["back_after_kill_s"]), k
        assert k["decoding"] == [True] * 3 and k["modes"] == ["sfu"] * 3, k
        assert k["reloads"] == [False] * 3, k


RESTART_LIMIT_S = 15.0  # asserted; the goal (5 s from the new server's start) is printed (docs/calls.md)


def test_a_restarted_server_gets_every_page_back_into_the_call(tmp_path):
    """Three pages in an SFU call served by a real `sfu-server` process
    (SQLite store); SIGTERM, then the same command again. The pages'
    socket.io-client reconnects by itself, finds the call gone (ended with
    the server) and joins it again: every page has media from both others
    again, without a reload."""
    result = run_browser_script("call_pages.py", "restart", tmp_path / "calls.sqlite3", timeout=240)
    print(f"\nserver restarted under a 3-page SFU call: stopped {result['stopped_after_s']} s after SIGTERM, "
          f"up again {result['down_s']} s after it; media from both others back on each page "
          f"{result['back_after_start_s']} s after the new server answered")
    assert result["exit_code"] == 0, result
    assert all(b is not None and b < RESTART_LIMIT_S for b in result["back_after_start_s"]), result
    assert result["modes"] == ["sfu"] * 3 and result["decoding"] == [True] * 3, result
    assert all(len(r) == 1 and r[0]["error"] is None for r in result["rejoins"]), result["rejoins"]


REBINDS = 5
REBIND_LIMIT_S = 8.0  # asserted; the goal (2 s) is measured and printed (docs/calls.md)


def test_pages_whose_addresses_change_get_media_back():
    """Three pages in an SFU call whose media crosses a UDP NAT
    (tests/nat.py); the NAT drops every mapping five times, so the SFU sees
    every page's addresses change mid-call (a NAT rebinding, a page that
    moved to another network). The pages notice their remotes' video stall,
    restart ICE on their WHIP/WHEP sessions (PATCH, RFC 9725 §4.3), and the
    SFU asks the publishers for keyframes for what was lost on the way:
    media from every other participant comes back, without a reload."""
    result = run_browser_script("call_pages.py", "rebind", REBINDS, timeout=240)
    print(f"\nNAT rebinding under a 3-page SFU call ({result['seconds']} s): media from both others back on "
          "each page, s after the rebinding")
    for i, k in enumerate(result["rebinds"]):
        print(f"  rebinding {i + 1} ({k['mappings']} mappings): {k['back_s']}")
    assert len(result["rebinds"]) == REBINDS, result.get("timeout_stats")
    for k in result["rebinds"]:
        assert k["mappings"] >= 9, k          # every session of every page was mapped, and dropped
        assert all(b is not None and b < REBIND_LIMIT_S for b in k["back_s"]), k
        assert k["reloads"] == [False] * 3 and k["modes"] == ["sfu"] * 3, k
    # pages restarted ICE on the way (a page may also get its media back
    # before its stall threshold, from a check Chrome sent by itself)
    assert sum(len(r) for r in result["rebinds"][-1]["ice_restarts"]) >= 1, result
    assert result["nat"]["mappings"] > REBINDS * 9


def test_a_broken_direct_path_falls_back_to_the_sfu_and_comes_back():
    """Two pages in a P2P call with the SFU on standby; one page's side of
    the direct connection is closed (a dead path, as the other page sees it),
    first on the page that answers, then on the one that offers. The pages
    show each other through the standby SFU session while the offering page
    makes a new direct connection, and go back to it (SFU senders off)."""
    result = run_browser_script("call_pages.py", "p2pbreak", 2, timeout=180)
    print("\nP2P call, direct path broken twice: each page decodes the other again after "
          f"{[b['back_s'] for b in result['breaks']]} s, direct again after "
          f"{[b['direct_again_s'] for b in result['breaks']]} s")
    assert len(result["breaks"]) == 2, result.get("timeout_stats")
    for b in result["breaks"]:
        assert all(x is not None and x < 10 for x in b["back_s"]), b
        assert all(x is not None and x < 15 for x in b["direct_again_s"]), b
        assert b["modes"] == ["p2p", "p2p"], b
        # back on the direct path, the SFU senders off again, the standby kept
        assert all(p["p2p"] and not p["publisher"] and p["standby"] for p in b["paths"]), b
    # the first break went through the SFU on at least one page
    assert any(f and f[0]["sfuShownMs"] is not None for f in result["breaks"][0]["fallbacks"]), result["breaks"][0]


def test_a_call_with_pages_on_two_cluster_nodes():
    """Two sfu-server nodes sharing a redis-server: two pages load the call
    from node A, the third from node B. Node B forwards the third page's
    Socket.IO connection and requests to the call's node; the call moves to
    the SFU and every page decodes both others (tests/cluster_nodes.py,
    signaling/cluster.py)."""
    result = run_browser_script("call_pages.py", "cluster", 2.0, timeout=240)
    print(f"\ncall across two nodes: rooms per node {result['rooms']}, node B forwarded "
          f"{result['b_socketio_requests']} Socket.IO requests ({result['seconds']} s)")
    assert result["decoding"] == [True, True, True], result
    assert sorted(result["rooms"].values()) == [0.0, 1.0], result["rooms"]  # the call's room, on one node
    assert result["b_socketio_requests"] >= 1 and result["a_socketio_requests"] >= 1, result
