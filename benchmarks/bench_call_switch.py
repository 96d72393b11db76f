"""The call demo's mode switches, over N runs: three headless Chromium pages
(Debian's) on /call, two talking P2P, a third joining (P2P -> SFU), the
third leaving (SFU -> P2P). Runs tests/browser/call_pages.py N times in a
loopback-only network namespace and prints, per run and as medians: each
continuing page's switch duration (from the server's event until every
remote decodes on the new path), the server's (mode-switch emitted ->
call:mode-switched), the longest gap in decoded video and in received audio
per remote during each switch, and whether any page ever lost a remote.

    python -m benchmarks.bench_call_switch --runs 10 [--json FILE]

Needs `unshare` (root or user namespaces), Chromium and playwright, as the
Chromium tests do. The figures of the last run are in docs/calls.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def one_run(hold_s: float, keyframe_ms: int, timeout: float) -> dict[str, Any]:
    script = ROOT / "tests" / "browser" / "call_pages.py"
    env_path = f"{ROOT}:{ROOT / 'tests' / 'browser'}"
    run = subprocess.run(
        ["unshare", "-n", "sh", "-c",
         f'ip link set lo up && PYTHONPATH="{env_path}" exec "{sys.executable}" "{script}" {hold_s} {keyframe_ms}'],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """One run's figures: the two continuing pages' switches each way."""
    ph = result["phases"]
    out: dict[str, Any] = {"to_sfu_ms": [], "to_sfu_server_ms": None, "to_sfu_gap_ms": [], "to_sfu_audio_gap_ms": [],
                           "to_p2p_ms": [], "to_p2p_server_ms": None, "to_p2p_gap_ms": [], "to_p2p_audio_gap_ms": [],
                           "join_ms": None, "lost_remote": False}
    for stats in ph["sfu_later"][:2]:
        sw = next(s for s in stats["switches"] if s["mode"] == "sfu" and s["kind"] == "switch")
        out["to_sfu_ms"].append(sw["durationMs"])
        out["to_sfu_server_ms"] = sw["serverMs"]
        out["to_sfu_gap_ms"].append(max(sw["gaps"].values(), default=None))
        out["to_sfu_audio_gap_ms"].append(max(sw["audioGaps"].values(), default=None))
    carol = ph["sfu_later"][2]
    out["join_ms"] = next(s["durationMs"] for s in carol["switches"] if s["kind"] == "join")
    for stats in ph["back_later"]:
        sw = [s for s in stats["switches"] if s["mode"] == "p2p" and s["kind"] == "switch"][-1]
        out["to_p2p_ms"].append(sw["durationMs"])
        out["to_p2p_server_ms"] = sw["serverMs"]
        out["to_p2p_gap_ms"].append(max(sw["gaps"].values(), default=None))
        out["to_p2p_audio_gap_ms"].append(max(sw["audioGaps"].values(), default=None))
    # a remote lost: a page that stopped showing one of its remotes in a phase
    for phase in ("p2p_later", "sfu_later", "back_later"):
        for stats in ph[phase]:
            if any(r["active"] is None for r in stats["remotes"].values()):
                out["lost_remote"] = True
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--hold", type=float, default=1.5, help="seconds in each phase")
    ap.add_argument("--keyframe-ms", type=int, default=350)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    runs = []
    print("| run | P2P->SFU page (ms) | server | video gap | audio gap | newcomer join | SFU->P2P page | server "
          "| video gap | audio gap | remote lost |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i in range(args.runs):
        f = figures(one_run(args.hold, args.keyframe_ms, timeout=180))
        runs.append(f)
        j = lambda xs: ", ".join(str(x) for x in xs)  # noqa: E731
        print(f"| {i + 1} | {j(f['to_sfu_ms'])} | {f['to_sfu_server_ms']} | {j(f['to_sfu_gap_ms'])} "
              f"| {j(f['to_sfu_audio_gap_ms'])} | {f['join_ms']} | {j(f['to_p2p_ms'])} | {f['to_p2p_server_ms']} "
              f"| {j(f['to_p2p_gap_ms'])} | {j(f['to_p2p_audio_gap_ms'])} | {'yes' if f['lost_remote'] else 'no'} |",
              flush=True)

    def med(key: str) -> float:
        vals = [v for f in runs for v in (f[key] if isinstance(f[key], list) else [f[key]]) if v is not None]
        return statistics.median(vals) if vals else float("nan")

    def worst(key: str) -> float:
        vals = [v for f in runs for v in (f[key] if isinstance(f[key], list) else [f[key]]) if v is not None]
        return max(vals) if vals else float("nan")

    print()
    print(f"medians over {len(runs)} runs: P2P->SFU page {med('to_sfu_ms'):.0f} ms (server "
          f"{med('to_sfu_server_ms'):.0f}), video gap {med('to_sfu_gap_ms'):.0f} ms; SFU->P2P page "
          f"{med('to_p2p_ms'):.0f} ms (server {med('to_p2p_server_ms'):.0f}), video gap {med('to_p2p_gap_ms'):.0f} ms; "
          f"newcomer {med('join_ms'):.0f} ms")
    print(f"worst audio gap in a switch: {max(worst('to_sfu_audio_gap_ms'), worst('to_p2p_audio_gap_ms')):.0f} ms; "
          f"runs where a page lost a remote: {sum(f['lost_remote'] for f in runs)}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
