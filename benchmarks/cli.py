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

Simulcast publishers: --simulcast (or --layers 2|3) makes every publisher
send its video as 3 encodings in one producer (own SSRCs; --layer-split
shares of --bitrate, lowest first, default 15/30/55 %); every viewer's
consumer forwards one of them: the top one, or a mix with --viewer-layers
2,2,1,0. The publishers answer the SFU's PLI/FIR with a keyframe of that
encoding (as an encoder does), so a viewer reaches its layer at once.
--side-by-side runs each count with 1 layer and with --layers (3 by
default) alternately, --rounds times, and prints CPU per forwarded packet
of both and their ratio:

    sfu-bench --participants 10,25 --duration 8 --side-by-side --rounds 3

Recordings (issue 14): --recordings K makes the server (--target server)
record the first K participants (audio + video, one WebM file each, into a
temporary directory removed afterwards), started at the beginning of the
send window. With --side-by-side, each count runs without and with the K
recordings alternately, and the report gives the worker process's CPU per
forwarded packet in both and their ratio, the recording threads' CPU (in
the server's control process) apart, and frames / bytes written per
recording (a recording that wrote no frame fails the run):

    sfu-bench --participants 25 --recordings 10 --side-by-side --rounds 3

CPU per forwarded packet is the same in every mode: the server's CPU time
over the send window divided by the packets the viewers received in it
(packets sent by the SFU); packets/s in counts every encoding sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any, Callable, Optional

from .common import dump_json, machine_info
from .harness import PointConfig, run_point
from .report import (LOSS_LIMIT_PCT, compare_markdown, compare_rows, markdown, plot, recording_compare_markdown,
                     recording_compare_rows, recording_lines, summary_lines)

DEFAULT_COUNTS = "3,10,25,50"


def parse_split(text: str) -> tuple[float, ...]:
    """"15,30,55" (percent) or "0.15,0.3,0.55" -> shares, lowest layer first."""
    try:
        xs = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layer-split: {text!r} is not a list of numbers") from None
    if not xs or any(x <= 0 for x in xs):
        raise argparse.ArgumentTypeError("--layer-split: positive shares, lowest layer first")
    total = sum(xs)
    return tuple(x / total for x in xs)


def parse_layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--viewer-layers: {text!r} is not a list of layer numbers") from None


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
    ap.add_argument("--workers", type=int, default=1, help="sfu-server workers (one room uses one); with --target embedded, the room "
                         "is spread over this many workers, producers piped between their routers")
    ap.add_argument("--nodes", type=int, default=1,
                    help="sfu-server nodes sharing a redis-server (--edge-rooms), participant i on node i %% N: "
                         "streams between nodes cross a pipe (server target; with --side-by-side: 1 node vs N, "
                         "alternately)")
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
    ap.add_argument("--layers", type=int, default=1,
                    help="video encodings per publisher: 1 (default) or simulcast with 2 or 3")
    ap.add_argument("--simulcast", dest="layers", action="store_const", const=3, help="the same as --layers 3")
    ap.add_argument("--layer-split", type=parse_split, default=(0.15, 0.30, 0.55),
                    help="shares of --bitrate per layer, lowest first (default 15,30,55; normalized)")
    ap.add_argument("--viewer-layers", type=parse_layers, default=(),
                    help="spatial layer each video consumer asks for, in turn (e.g. 2,2,1,0; default: the top)")
    ap.add_argument("--vp8-picture-id", action="store_true",
                    help="VP8 payload descriptor with picture id, TL0PICIDX and TID, as libwebrtc sends "
                         "(default: one byte, no picture id); on by default with --side-by-side")
    ap.add_argument("--viewer-bwe", choices=("auto", "on", "off"), default="auto",
                    help="viewers advertise transport-cc / REMB (the generator never sends it, so the SFU's "
                         "estimate stays at its start value): auto = on with 1 layer, off with simulcast and "
                         "in --side-by-side (both modes)")
    ap.add_argument("--recordings", type=int, default=0,
                    help="K: the server records K participants (audio + video each) during the send window "
                         "(--target server); with --side-by-side: without and with them, alternately")
    ap.add_argument("--control-cpu", type=int, default=None,
                    help="pin the server's control process (where the recording threads run) to this CPU "
                         "instead of the worker's CPU 0 (the generator is on CPU 1)")
    ap.add_argument("--side-by-side", action="store_true",
                    help="each count with 1 layer and with --layers (3 when not given), alternately; "
                         "with --recordings: without and with the recordings")
    ap.add_argument("--rounds", type=int, default=3, help="alternations per count with --side-by-side (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="sfu-bench.json", help="results as JSON (default %(default)s; '' to skip)")
    ap.add_argument("--markdown", default="sfu-bench.md", help="the table as Markdown ('' to skip)")
    ap.add_argument("--plot", default="", help="PNG of CPU and latency against participants (needs matplotlib)")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    return ap


def point_config(args: argparse.Namespace, n: int, mbps: float, layers: int,
                 recordings: Optional[int] = None, nodes: Optional[int] = None) -> PointConfig:
    return PointConfig(participants=n, duration=args.duration, video_bps=mbps * 1e6, transport=args.transport,
                       recordings=args.recordings if recordings is None else recordings, control_cpu=args.control_cpu,
                       srtp_profile=args.srtp_profile, target=args.target, workers=args.workers, nodes=nodes or args.nodes,
                       decrypt_every=args.decrypt_every, pin=args.pin, seed=args.seed, feedback=args.feedback,
                       start_spread=args.start_spread, wait_idle=args.wait_idle, layers=layers,
                       layer_split=tuple(args.layer_split),
                       viewer_layers=tuple(args.viewer_layers) if layers > 1 else (),
                       vp8_picture_id=args.vp8_picture_id,
                       viewer_bwe={"on": True, "off": False}.get(args.viewer_bwe,
                                                                   False if args.side_by_side else None))


async def measure(cfg: PointConfig, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """One point, run again (up to --retries) when other processes took the CPU."""
    for attempt in range(args.retries + 1):
        r = await run_point(cfg, progress)
        r["attempt"] = attempt
        other = r.get("other_cpu_pct")
        if other is None or other < args.max_other_cpu:
            break
        progress.done(f"{other:.0f}% of a core went to other processes"
                      + (": running the point again" if attempt < args.retries else ": kept, marked in the JSON"))
    lat = r["latency_us"]
    rec = r.get("recording")
    if rec:
        progress.done(f"{rec['count']} recordings: {rec['frames_written']:,} frames written "
                      f"(least {rec['min_frames_written']} in one), {rec['frames_dropped']:,} dropped, "
                      f"{rec['bytes_written'] / 1e6:.1f} MB; their threads {rec['threads_cpu_pct'] or 0:.1f}% of a core")
    if r.get("worker_us_per_packet") is not None:
        progress.done(f"worker {r['worker_cpu_pct']:.0f}% ({r['worker_us_per_packet']:.2f} us per packet), "
                      f"control process {r.get('control_cpu_pct') or 0:.0f}%")
    progress.done(f"CPU {r['server_cpu_pct'] or 0:.0f}%, loss {r['loss_pct'] or 0:.3f}%, "
                  f"p50 {(lat.get('p50') or 0) / 1000:.2f} ms, p99 {(lat.get('p99') or 0) / 1000:.2f} ms, "
                  f"{r['out_pps']:,.0f} packets/s out, {r['cpu_us_per_packet'] or 0:.2f} us CPU per packet")
    return r


def write_outputs(args: argparse.Namespace, text: str, data: dict[str, Any]) -> None:
    """A run's Markdown to stdout (and --markdown), its data to --json."""
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        dump_json(args.json, data)


async def alternate(args: argparse.Namespace, progress: Progress, a: Any, b: Any,
                    config: Callable[[int, float, Any], PointConfig], label: Callable[[Any], str]
                    ) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[float]]:
    """Each count run in mode ``a`` and in mode ``b``, the order flipping
    every round (a drift of the machine's load hits both alike): the pairs
    (a's result, b's result) and the 1-minute load average before each point."""
    counts = parse_counts(args.participants, args.bitrate)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    loads: list[float] = []
    total = len(counts) * args.rounds * 2
    done = 0
    for rnd in range(args.rounds):
        for n, mbps in counts:
            got: dict[Any, dict[str, Any]] = {}
            for mode in ((a, b) if rnd % 2 == 0 else (b, a)):
                done += 1
                cfg = config(n, mbps, mode)
                cfg.check()
                progress.prefix = f"[{done}/{total}] round {rnd + 1} N={n} {label(mode)}: "
                loads.append(os.getloadavg()[0])
                got[mode] = await measure(cfg, args, progress)
                got[mode]["round"] = rnd + 1
                got[mode]["loadavg_before"] = loads[-1]
            pairs.append((got[a], got[b]))
    return pairs, loads


async def side_by_side(args: argparse.Namespace) -> int:
    """1 layer vs simulcast, alternating (the order flips every round, so a
    drift of the machine's load hits both alike)."""
    layers = args.layers if args.layers > 1 else 3
    info = machine_info()
    progress = Progress(not args.quiet)
    pairs, loads = await alternate(args, progress, 1, layers, lambda n, mbps, nl: point_config(args, n, mbps, nl),
                                   lambda nl: "1 layer" if nl == 1 else f"{nl} layers")
    rows, means = compare_rows(pairs)
    split = "/".join(f"{x * 100:.0f}" for x in args.layer_split[:layers])
    title = (f"sfu-bench side by side: 1 layer vs {layers}-layer simulcast ({split} % of "
             f"{args.bitrate:g} Mbit/s), {args.transport}"
             + (f" ({args.srtp_profile})" if args.transport == "webrtc" else "")
             + f", {args.target}, {args.duration:g} s per point, {args.rounds} rounds, "
             f"{info.get('Model name', '?')}, {info['nproc']} CPUs")
    lines = [f"N={n}: {m['simulcast_us']:.2f} us vs {m['single_us']:.2f} us CPU per forwarded packet, "
             f"simulcast / 1 layer = {m['ratio']:.3f} (rounds: {', '.join(f'{x:.3f}' for x in m['round_ratios'])})"
             for n, m in sorted(means.items())]
    lines.append(f"load average (1 min) before the points: {min(loads):.2f} to {max(loads):.2f}")
    text = f"## {title}\n\n{compare_markdown(pairs)}\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n"
    write_outputs(args, text, {"machine": info, "command": " ".join(["sfu-bench"] + sys.argv[1:]),
                              "pairs": [{"single": a, "simulcast": b} for a, b in pairs],
                              "means": {str(n): m for n, m in means.items()}, "summary": lines})
    return 0


async def side_by_side_recordings(args: argparse.Namespace) -> int:
    """Without and with --recordings, alternating (the order flips every
    round): worker CPU per forwarded packet of both, their ratio, the
    recorder's CPU apart."""
    k = args.recordings
    info = machine_info()
    progress = Progress(not args.quiet)
    pairs, loads = await alternate(
        args, progress, 0, k, lambda n, mbps, nrec: point_config(args, n, mbps, args.layers, recordings=nrec),
        lambda nrec: "no recording" if nrec == 0 else f"{nrec} recordings")
    rows, means = recording_compare_rows(pairs, args.max_other_cpu)
    title = (f"sfu-bench side by side: no recording vs {k} recordings, {args.transport}"
             + (f" ({args.srtp_profile})" if args.transport == "webrtc" else "")
             + f", {args.bitrate:g} Mbit/s video, {args.target}, {args.duration:g} s per point, {args.rounds} rounds, "
             f"{info.get('Model name', '?')}, {info['nproc']} CPUs")
    lines = [f"N={n}: worker CPU per forwarded packet {m['with_us']:.2f} us with {k} recordings vs "
             f"{m['without_us']:.2f} us without, ratio {m['ratio']:.3f} (rounds: "
             f"{', '.join(f'{x:.3f}' for x in m['round_ratios'])}); counting the packets sent to the "
             f"recordings too: {m['with_us_incl_recording_packets'] or 0:.2f} us; recording threads "
             f"{m['threads_cpu_pct'] or 0:.1f}% of a core ({m['threads_us_per_packet'] or 0:.1f} us per recorded "
             f"packet); control process {m['control_cpu_pct_without']:.0f}% without, "
             f"{m['control_cpu_pct_with']:.0f}% with"
             + (f"; over the {m['clean_rounds']} round(s) that other processes did not disturb (both points "
                f"under {args.max_other_cpu:g}% other CPU and {LOSS_LIMIT_PCT}% loss): {m['clean_with_us']:.2f} vs "
                f"{m['clean_without_us']:.2f} us, ratio {m['clean_ratio']:.3f}" if m.get("clean_rounds") else
                "; no round free of other processes' load")
             for n, m in sorted(means.items())]
    lines.append(f"load average (1 min) before the points: {min(loads):.2f} to {max(loads):.2f}")
    lines += recording_lines([r for _, r in pairs])
    text = (f"## {title}\n\n{recording_compare_markdown(pairs, k, args.max_other_cpu)}\n\n"
            + "\n".join(f"- {ln}" for ln in lines) + "\n")
    write_outputs(args, text, {"machine": info, "command": " ".join(["sfu-bench"] + sys.argv[1:]),
                              "pairs": [{"without": a, "with": b} for a, b in pairs],
                              "means": {str(n): m for n, m in means.items()}, "summary": lines})
    return check_recordings([r for _, r in pairs])


def check_recordings(results: list[dict[str, Any]]) -> int:
    """1 (with a message) when a point's recording wrote no audio or video
    frame: then the benchmark measured nothing of the recorder."""
    bad = [r for r in results if r.get("recordings") and not (r.get("recording") or {}).get("all_wrote_frames")]
    for r in bad:
        print(f"sfu-bench: N={r['participants']}: a recording wrote no frame of a track (or failed): "
              f"{(r.get('recording') or {}).get('per_recording')}", file=sys.stderr)
    return 1 if bad else 0


async def side_by_side_nodes(args: argparse.Namespace) -> int:
    """One node vs --nodes N, alternating (the order flips every round):
    server CPU per forwarded packet (every node's processes, pinned to the
    same core) and the latency the generator measures, for all streams;
    with N nodes, the streams between participants on different nodes cross
    the nodes' pipe (their share is printed)."""
    k = args.nodes
    info = machine_info()
    progress = Progress(not args.quiet)
    pairs, _ = await alternate(args, progress, 1, k,
                               lambda n, mbps, nn: point_config(args, n, mbps, args.layers, nodes=nn),
                               lambda nn: f"{nn} node{'s' if nn > 1 else ''}")
    for a, b in pairs:
        a["nodes"], b["nodes"] = 1, k

    def ms(r: dict[str, Any], q: str) -> str:
        v = (r.get("latency_us") or {}).get(q)
        return f"{v / 1000:.2f}" if v is not None else "-"

    def us(r: dict[str, Any]) -> str:
        v = r.get("cpu_us_per_packet")
        return f"{v:.2f}" if v else "-"

    rows = ["| N | round | CPU us/packet, 1 node | CPU us/packet, %d nodes | ratio | p50 ms 1 / %d | p99 ms 1 / %d "
            "| loss 1 / %d | other CPU 1 / %d |" % (k, k, k, k, k),
            "|---|---|---|---|---|---|---|---|---|"]
    lines: list[str] = []
    by_n: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for a, b in pairs:
        by_n.setdefault(a["participants"], []).append((a, b))
    for n, ps in sorted(by_n.items()):
        for i, (a, b) in enumerate(ps):
            ratio = (b["cpu_us_per_packet"] / a["cpu_us_per_packet"]
                     if a.get("cpu_us_per_packet") and b.get("cpu_us_per_packet") else None)
            rows.append(f"| {n} | {i + 1} | {us(a)} | {us(b)} | {f'{ratio:.3f}' if ratio else '-'} "
                        f"| {ms(a, 'p50')} / {ms(b, 'p50')} | {ms(a, 'p99')} / {ms(b, 'p99')} "
                        f"| {a['loss_pct'] or 0:.3f}% / {b['loss_pct'] or 0:.3f}% "
                        f"| {a.get('other_cpu_pct') or 0:.0f}% / {b.get('other_cpu_pct') or 0:.0f}% |")
        # participant i on node i % k: the ordered pairs (viewer, publisher) on different nodes
        per = [sum(1 for i in range(n) if i % k == j) for j in range(k)]
        cross = sum(per[x] * per[y] for x in range(k) for y in range(k) if x != y) / (n * (n - 1))

        def med(vals: list[float]) -> float:
            vals = sorted(vals)
            return vals[len(vals) // 2]

        d50 = [(b["latency_us"]["p50"] - a["latency_us"]["p50"]) / 1000 for a, b in ps
               if a["latency_us"].get("p50") is not None and b["latency_us"].get("p50") is not None]
        d99 = [(b["latency_us"]["p99"] - a["latency_us"]["p99"]) / 1000 for a, b in ps
               if a["latency_us"].get("p99") is not None and b["latency_us"].get("p99") is not None]
        ratios = [b["cpu_us_per_packet"] / a["cpu_us_per_packet"] for a, b in ps
                  if a.get("cpu_us_per_packet") and b.get("cpu_us_per_packet")]
        lines.append(f"N={n}: {cross * 100:.0f}% of the streams cross nodes with {k}; CPU per forwarded packet "
                     f"{k} nodes / 1 = {med(ratios) if ratios else float('nan'):.3f} (median of rounds: "
                     f"{', '.join(f'{x:.3f}' for x in ratios)}); latency added (median of rounds, all streams): "
                     f"p50 {med(d50) if d50 else float('nan'):+.2f} ms, p99 {med(d99) if d99 else float('nan'):+.2f} ms")
    title = (f"sfu-bench side by side: 1 node vs {k} nodes (one room, --edge-rooms, redis-server), {args.transport}, "
             f"{args.bitrate:g} Mbit/s video, {args.duration:g} s per point, {args.rounds} rounds, "
             f"{info.get('Model name', '?')}, {info['nproc']} CPUs, every server process on one core")
    text = f"## {title}\n\n" + "\n".join(rows) + "\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n"
    write_outputs(args, text, {"machine": info, "command": " ".join(["sfu-bench"] + sys.argv[1:]),
                              "pairs": [{"one_node": a, "nodes": b} for a, b in pairs], "summary": lines})
    return 0


async def amain(args: argparse.Namespace) -> int:
    if args.side_by_side and args.nodes > 1:
        return await side_by_side_nodes(args)
    if args.side_by_side and args.recordings:
        return await side_by_side_recordings(args)
    if args.side_by_side:
        return await side_by_side(args)
    counts = parse_counts(args.participants, args.bitrate)
    info = machine_info()
    progress = Progress(not args.quiet)
    results: list[dict[str, Any]] = []
    for k, (n, mbps) in enumerate(counts):
        cfg = point_config(args, n, mbps, args.layers)
        cfg.check()
        progress.prefix = f"[{k + 1}/{len(counts)}] N={n} {mbps:g} Mbit/s: "
        results.append(await measure(cfg, args, progress))
    title = (f"sfu-bench: {args.transport}"
             + (f", {args.layers}-layer simulcast" if args.layers > 1 else "")
             + (f" ({args.srtp_profile})" if args.transport == "webrtc" else "")
             + f", {args.target}, {args.duration:g} s per point, "
             f"{info.get('Model name', '?')}, {info['nproc']} CPUs")
    table = markdown(results)
    lines = summary_lines(results) + recording_lines(results)
    text = f"## {title}\n\n{table}\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n"
    write_outputs(args, text, {"machine": info, "command": " ".join(["sfu-bench"] + sys.argv[1:]),
                              "results": results, "summary": lines})
    if args.plot:
        plot(results, args.plot, title)
    written = [p for p in (args.markdown, args.json, args.plot) if p]
    if written and not args.quiet:
        print("written: " + ", ".join(os.path.abspath(p) for p in written), file=sys.stderr)
    return check_recordings(results)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.side_by_side and "--vp8-picture-id" not in (argv if argv is not None else sys.argv[1:]):
        args.vp8_picture_id = True  # what a browser sends, and what a simulcast viewer needs rewritten
    try:
        parse_counts(args.participants, args.bitrate)
        if args.rounds < 1:
            raise ValueError("--rounds: at least 1")
        simulcast_pair = args.side_by_side and not args.recordings
        for n, _ in parse_counts(args.participants, args.bitrate):
            point_config(args, max(n, 2), args.bitrate,
                         args.layers if not simulcast_pair or args.layers > 1 else 3).check()
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
