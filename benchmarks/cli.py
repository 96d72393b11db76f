"""`sfu-bench`: reproduces the seed design's latency table on this machine.

For each participant count it starts a real `sfu-server` (or, with
`--target embedded`, a worker in this process), puts N simulated
participants in one room — each publishing Opus-like audio (50 packets/s)
and VP8-like video (30 frames/s at --bitrate, packets of at most 1200
bytes, a keyframe every 3 s) and subscribing to every other one — over
WebRTC transports (ICE + DTLS + SRTP) by default, runs the load for
--duration seconds and measures:

  CPU        utime+stime of every server process (control + workers) over
             the send window, % of one core
  RAM        largest total VmRSS of those processes during the run
  Bandwidth  media received per participant (downstream)
  Latency    one-way time the SFU adds (send time in each packet, kernel
             arrival timestamp; same clock); with SRTP a sample of packets
             (--decrypt-every) is decrypted for it, all are counted for loss
  Loss       packets sent to a subscriber that never arrived

    sfu-bench                                   # 3, 10, 25, 50 participants, 10 s each
    sfu-bench --participants 3 --duration 3     # the smoke test's run
    sfu-bench --participants 46,50:0.6 --transport plain --target embedded
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from .common import dump_json, machine_info
from .harness import PointConfig, run_point
from .report import markdown, plot, summary_lines

DEFAULT_COUNTS = "3,10,25,50"


def parse_counts(text: str, bitrate: float) -> list[tuple[int, float]]:
    """"3,10,50:0.6" -> [(3, bitrate), (10, bitrate), (50, 0.6)] (Mbit/s)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        n, _, mbps = item.partition(":")
        try:
            out.append((int(n), float(mbps) if mbps else bitrate))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--participants: {item!r} is not N or N:Mbps") from None
    if not out:
        raise argparse.ArgumentTypeError("--participants: give at least one count")
    return out


class Progress:
    """One status line on stderr (rewritten in place on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.prefix = ""
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.monotonic() - self.t0:6.1f} s] {self.prefix}{text}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\033[K")
        sys.stderr.write(f"{self.prefix}{text}\n")
        sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sfu-bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", default=DEFAULT_COUNTS,
                    help="comma-separated counts, each N or N:video_Mbps (default %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of sending per count (default 10)")
    ap.add_argument("--bitrate", type=float, default=1.0, help="video Mbit/s per participant (default 1)")
    ap.add_argument("--transport", choices=("webrtc", "plain"), default="webrtc",
                    help="WebRTC (ICE + DTLS + SRTP) or plain RTP (needs --target embedded)")
    ap.add_argument("--srtp-profile", default="AEAD_AES_128_GCM",
                    choices=("AEAD_AES_128_GCM", "AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80",
                             "AES_CM_128_HMAC_SHA1_32"),
                    help="DTLS-SRTP profile the participants offer (default %(default)s)")
    ap.add_argument("--target", choices=("server", "embedded"), default="server",
                    help="a real sfu-server subprocess (default) or a worker embedded in this process")
    ap.add_argument("--workers", type=int, default=1, help="sfu-server workers (one room uses one)")
    ap.add_argument("--decrypt-every", type=int, default=8,
                    help="with SRTP, decrypt one packet in this many per stream for latency (default 8)")
    ap.add_argument("--no-feedback", dest="feedback", action="store_false",
                    help="negotiate no NACK (no retransmission store in the SFU)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the server to CPU 0 and the generator to CPU 1")
    ap.add_argument("--start-spread", type=float, default=1.0,
                    help="participants start at random times within this many seconds (default 1)")
    ap.add_argument("--no-wait-idle", dest="wait_idle", action="store_false",
                    help="do not wait for an idle machine before each count")
    ap.add_argument("--max-other-cpu", type=float, default=25.0,
                    help="run a point again when other processes used more than this %% of a core (default 25)")
    ap.add_argument("--retries", type=int, default=2, help="how many times (default 2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="sfu-bench.json", help="results as JSON (default %(default)s; '' to skip)")
    ap.add_argument("--markdown", default="sfu-bench.md", help="the table as Markdown ('' to skip)")
    ap.add_argument("--plot", default="", help="PNG of CPU and latency against participants (needs matplotlib)")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    return ap


async def amain(args: argparse.Namespace) -> int:
    counts = parse_counts(args.participants, args.bitrate)
    info = machine_info()
    progress = Progress(not args.quiet)
    results: list[dict[str, Any]] = []
    for k, (n, mbps) in enumerate(counts):
        cfg = PointConfig(participants=n, duration=args.duration, video_bps=mbps * 1e6, transport=args.transport,
                          srtp_profile=args.srtp_profile, target=args.target, workers=args.workers,
                          decrypt_every=args.decrypt_every, pin=args.pin, seed=args.seed, feedback=args.feedback,
                          start_spread=args.start_spread, wait_idle=args.wait_idle)
        cfg.check()
        progress.prefix = f"[{k + 1}/{len(counts)}] N={n} {mbps:g} Mbit/s: "
        for attempt in range(args.retries + 1):
            r = await run_point(cfg, progress)
            r["attempt"] = attempt
            other = r.get("other_cpu_pct")
            if other is None or other < args.max_other_cpu:
                break
            progress.done(f"{other:.0f}% of a core went to other processes"
                          + (": running the point again" if attempt < args.retries else ": kept, marked in the JSON"))
        results.append(r)
        lat = r["latency_us"]
        progress.done(f"CPU {r['server_cpu_pct'] or 0:.0f}%, loss {r['loss_pct']:.3f}%, "
                      f"p50 {(lat.get('p50') or 0) / 1000:.2f} ms, p99 {(lat.get('p99') or 0) / 1000:.2f} ms, "
                      f"{r['out_pps']:,.0f} packets/s out")
    title = (f"sfu-bench: {args.transport}"
             + (f" ({args.srtp_profile})" if args.transport == "webrtc" else "")
             + f", {args.target}, {args.duration:g} s per point, "
             f"{info.get('Model name', '?')}, {info['nproc']} CPUs")
    table = markdown(results)
    lines = summary_lines(results)
    text = f"## {title}\n\n{table}\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        dump_json(args.json, {"machine": info, "command": " ".join(["sfu-bench"] + sys.argv[1:]),
                              "results": results, "summary": lines})
    if args.plot:
        plot(results, args.plot, title)
    written = [p for p in (args.markdown, args.json, args.plot) if p]
    if written and not args.quiet:
        print("written: " + ", ".join(os.path.abspath(p) for p in written), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parse_counts(args.participants, args.bitrate)
        PointConfig(participants=2, transport=args.transport, target=args.target, duration=args.duration,
                    video_bps=args.bitrate * 1e6, decrypt_every=args.decrypt_every, workers=args.workers).check()
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"sfu-bench: {exc}", file=sys.stderr)
        return 2
    for n, _ in parse_counts(args.participants, args.bitrate):
        if n < 2:
            print("sfu-bench: every count needs at least 2 participants", file=sys.stderr)
            return 2
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
