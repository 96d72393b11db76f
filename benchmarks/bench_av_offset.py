"""Viewers' A/V offset through the SFU, over N runs: a headless Chromium
WHIP publisher of the flash + beep clip and a Chromium WHEP viewer timing
the flashes it shows (requestVideoFrameCallback) against the beeps it plays
(AudioWorklet), with the publisher's video held VIDEO_DELAY_MS longer than its
audio by a relay in front of the SFU (tests/browser/av_sync_pages.py). Prints
per run the median and range of offset = flash display time - beep output
time (ms; > 0: video late), the receivers' jitter-buffer delays, and the
median of the run medians.

    python -m benchmarks.bench_av_offset --runs 3 --video-delay-ms 100 [--tree DIR] [--msid shared|server]

--tree runs the server (sfu, signaling) from another checkout with its
extension built (e.g. a worktree of the commit before a fix); the pages and
this script stay this tree's. --msid server keeps the WHEP answer's stream
ids as the server writes them (the default "shared" puts the two tracks in
one stream, so Chromium synchronizes them).

Needs `unshare` (root), Chromium and playwright, as the Chromium tests do.
Figures in docs/recording.md.
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


def one_run(tree: Path, seconds: float, delay_ms: float, msid: str, warmup_s: float, timeout: float) -> dict[str, Any]:
    script = ROOT / "tests" / "browser" / "av_sync_pages.py"
    env_path = f"{tree}:{ROOT / 'tests' / 'browser'}:{ROOT / 'tests'}"
    run = subprocess.run(
        ["unshare", "-n", "sh", "-c",
         f'ip link set lo up && PYTHONPATH="{env_path}" exec "{sys.executable}" "{script}" '
         f'{seconds} {delay_ms} {msid} {warmup_s}'],
        capture_output=True, text=True, timeout=timeout, cwd=tree)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--video-delay-ms", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=12.0, help="seconds of viewing before measuring")
    ap.add_argument("--msid", choices=("shared", "server"), default="shared")
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout the server runs from")
    ap.add_argument("--json", type=Path, help="write every run's full result here")
    args = ap.parse_args(argv)
    tree = args.tree.resolve()
    print(f"server from {tree}; video delayed {args.video_delay_ms:g} ms; msid {args.msid}; "
          f"{args.warmup:g} s warm-up, {args.seconds:g} s measured", flush=True)
    results, medians = [], []
    for i in range(args.runs):
        try:
            r = one_run(tree, args.seconds, args.video_delay_ms, args.msid, args.warmup,
                        timeout=args.seconds + args.warmup + 120)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"run {i + 1}: failed: {str(exc)[-600:]}", flush=True)
            continue
        results.append(r)
        offs = r["offsets_ms"]
        if not offs:
            print(f"run {i + 1}: no flash/beep pairs ({r['flashes']} flashes, {r['beeps']} beeps)", flush=True)
            continue
        med = statistics.median(offs)
        medians.append(med)
        jb = r["jitter_buffer_ms"]
        print(f"run {i + 1}: median {med:+.1f} ms, range {min(offs):+.1f}..{max(offs):+.1f} ms "
              f"({len(offs)} pairs); jitter buffer audio {jb['audio']} ms, video {jb['video']} ms; "
              f"video fps at the publisher {r['publisher'].get('video', {}).get('fps')}", flush=True)
    if medians:
        print(f"median of {len(medians)} run medians: {statistics.median(medians):+.1f} ms "
              f"(runs {min(medians):+.1f}..{max(medians):+.1f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if medians else 1


if __name__ == "__main__":
    sys.exit(main())
