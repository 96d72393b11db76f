"""End-to-end forwarding: a real worker, N plain-RTP participants in a mesh.

For every point of the sweep a fresh worker is created through the public
API (`sfu.create_worker()`, `router.create_plain_transport(...)`,
`transport.connect/produce/consume`, as in `sfu/example.py`): N plain
transports, each participant publishing an Opus-like audio stream (50
packets/s) and a VP8-like video stream (30 frames/s at the given bitrate,
keyframes every 3 s) and consuming the 2(N-1) streams of all the others.
The participants are played by the compiled load generator
(`benchmarks.loadgen`, its own process), which paces its sends on a
monotonic clock, receives everything with recvmmsg and measures loss (per
received stream, from RTP sequence numbers and against what was sent) and
the one-way latency added by the SFU.

Per point: offered packets/s in and out, delivered packets/s out, loss,
latency, worker CPU (utime+stime of the worker process from /proc over the
send window, which includes the kernel's UDP send path and the loopback
delivery it triggers), generator CPU, the machine's total busy share, and
the worker's own counters.

Targets: >= 300,000 packets/s out with loss < 0.5%; zero loss at ~100,000.

    python -m benchmarks.bench_forward                     # the sweep + the 100k run (~3 min)
    python -m benchmarks.bench_forward --points 25:1 --duration 20
    python -m benchmarks.bench_forward --quick             # 3 participants, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from typing import Any, Optional

import sfu

from .common import dump_json, machine_info, markdown_table
from .harness import pin_process, wait_idle
from .loadgen import LoadGenerator

MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
]
AUDIO_PT, VIDEO_PT = 111, 96

# (participants, video Mbit/s): ~168 packets/s per publisher at 1 Mbit/s,
# so N(N-1) x 168 packets/s out: 10 -> 15k, 25 -> 100k, 43 -> 303k, 50 -> 410k.
DEFAULT_POINTS = "10:1,20:1,30:1,35:1,40:1,42:1,43:1,46:1,50:1"
ZERO_LOSS_POINT = "25:1"
TARGET_PPS, TARGET_LOSS = 300_000, 0.5
LATE_MS = 100.0


def udp_snmp() -> dict[str, int]:
    """Kernel UDP counters (all sockets of the host): InErrors, RcvbufErrors, ..."""
    try:
        lines = [ln.split() for ln in open("/proc/net/snmp") if ln.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}
    except (OSError, IndexError, ValueError):
        return {}


def udp_queues() -> dict[int, tuple[int, int]]:
    """{local port: (rx_queue bytes, drops)} of the host's IPv4 UDP sockets."""
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                parts = line.split()
                port = int(parts[1].split(":")[1], 16)
                rxq = int(parts[4].split(":")[1], 16)
                out[port] = (rxq, int(parts[-1]))
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return out


async def watch_queues(sfu_ports: set[int], gen_ports: set[int], seconds: float,
                       interval: float = 0.25) -> dict[str, int]:
    """Largest total receive backlog seen on the SFU's and on the generator's
    sockets during the run: tells which side a latency build-up is on."""
    peak = {"sfu_rxq_max_bytes": 0, "gen_rxq_max_bytes": 0}
    for _ in range(max(1, int(seconds / interval))):
        await asyncio.sleep(interval)
        q = udp_queues()
        peak["sfu_rxq_max_bytes"] = max(peak["sfu_rxq_max_bytes"], sum(q.get(p, (0, 0))[0] for p in sfu_ports))
        peak["gen_rxq_max_bytes"] = max(peak["gen_rxq_max_bytes"], sum(q.get(p, (0, 0))[0] for p in gen_ports))
    return peak


async def start_perf(pid: int, path: str, seconds: float) -> asyncio.subprocess.Process:
    """`perf record -g` of the worker process for the send window."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return await asyncio.create_subprocess_exec(
        "perf", "record", "-F", "997", "-g", "-p", str(pid), "-o", path, "--", "sleep", f"{seconds:.1f}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )


class SfuTarget:
    """A real worker set up through the public API, one plain transport per participant."""

    name = "sfu"

    def __init__(self, feedback: bool = True) -> None:
        self.worker: Any = None
        self.feedback = feedback

    async def start(self) -> int:
        self.worker = await sfu.create_worker(log_level="warning")
        return self.worker.pid

    async def setup(self, ports: list[int], audio_ssrcs: list[int], video_ssrcs: list[int]) -> list[tuple[str, int]]:
        router = await self.worker.create_router(MEDIA_CODECS)
        caps = router.rtp_capabilities
        video_fb: list[dict[str, Any]] = []
        if self.feedback:
            # as a browser negotiates: NACK generation toward the publisher,
            # retransmission store + sequence maps for the viewers
            video_fb = [{"type": "nack"}, {"type": "nack", "parameter": "pli"}]
        else:
            for codec in caps["codecs"]:
                codec["rtcpFeedback"] = [fb for fb in codec.get("rtcpFeedback", []) if fb["type"] != "nack"]
        transports = []
        for i, port in enumerate(ports):
            t = await router.create_plain_transport(listen_ip="127.0.0.1", rtcp_mux=True, comedia=False)
            await t.connect(ip="127.0.0.1", port=port)
            await t.produce("audio", {
                "codecs": [{"mimeType": "audio/opus", "payloadType": AUDIO_PT, "clockRate": 48000, "channels": 2}],
                "encodings": [{"ssrc": audio_ssrcs[i]}],
            })
            await t.produce("video", {
                "codecs": [{"mimeType": "video/VP8", "payloadType": VIDEO_PT, "clockRate": 90000,
                            "rtcpFeedback": video_fb}],
                "encodings": [{"ssrc": video_ssrcs[i]}],
            })
            transports.append(t)
        for i, t in enumerate(transports):
            for j, other in enumerate(transports):
                if i != j:
                    for producer in other.producers:
                        await t.consume(producer.id, caps)
        return [("127.0.0.1", t.tuple["localPort"]) for t in transports]

    async def counters(self) -> dict[str, int]:
        return await self.worker.get_counters()

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            await asyncio.wait_for(self.worker.wait_closed(), 10)


TRIVIAL_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", "trivial_forwarder.c")
TRIVIAL_BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "trivial_forwarder")


class TrivialTarget:
    """benchmarks/src/trivial_forwarder.c: the same mesh forwarded by a
    minimal C loop (recvmmsg, fan-out without copy, sendmmsg): the floor the
    kernel sets in this very harness."""

    name = "trivial"

    def __init__(self) -> None:
        self.proc: Optional[asyncio.subprocess.Process] = None

    async def start(self) -> Optional[int]:
        if not os.path.exists(TRIVIAL_BIN) or os.path.getmtime(TRIVIAL_BIN) < os.path.getmtime(TRIVIAL_SRC):
            os.makedirs(os.path.dirname(TRIVIAL_BIN), exist_ok=True)
            cc = await asyncio.create_subprocess_exec("cc", "-O2", "-o", TRIVIAL_BIN, TRIVIAL_SRC)
            if await cc.wait() != 0:
                raise RuntimeError("could not compile the trivial forwarder")
        return None  # known after setup()

    async def setup(self, ports: list[int], audio_ssrcs: list[int], video_ssrcs: list[int]) -> list[tuple[str, int]]:
        self.proc = await asyncio.create_subprocess_exec(
            TRIVIAL_BIN, *map(str, ports), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        return [("127.0.0.1", int(p)) for p in line.split()]

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    async def counters(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def run_point(n: int, mbps: float, duration: float, drain: float, seed: int,
                    perf_dir: str | None = None, tick_us: float = 1000.0, pin: bool = True,
                    worker_cpu: int = 0, target_name: str = "sfu", feedback: bool = True) -> dict[str, Any]:
    rnd = random.Random(seed * 1000 + n)
    target: Any = SfuTarget(feedback) if target_name == "sfu" else TrivialTarget()
    gen = LoadGenerator()
    try:
        pid = await target.start()
        t_setup = time.monotonic()
        # One core each for the worker and the generator (when there are two):
        # keeps them from being stacked on one core by the scheduler.
        ncpu = os.cpu_count() or 1
        pinned = pin and ncpu >= 2
        if pinned and pid:
            pin_process(pid, {worker_cpu})
        ports = await gen.bind(n, cpus=[1 - worker_cpu if worker_cpu < 2 else 0] if pinned else None)
        ssrcs = rnd.sample(range(1, 2**32), 2 * n)
        audio_ssrcs, video_ssrcs = ssrcs[:n], ssrcs[n:]
        dests = await target.setup(ports, audio_ssrcs, video_ssrcs)
        if pid is None:
            pid = target.pid
            if pinned:
                pin_process(pid, {worker_cpu})
        setup_s = time.monotonic() - t_setup
        c0 = await target.counters()
        snmp0 = udp_snmp()
        perf = None
        if perf_dir:
            perf = await start_perf(pid, os.path.join(perf_dir, f"perf-{target.name}-N{n}-{mbps:g}mbps.data"),
                                    duration)
        watcher = asyncio.get_running_loop().create_task(
            watch_queues({p for _, p in dests}, set(ports), duration))
        res = await gen.run(
            dests, audio_ssrcs, video_ssrcs, [n - 1] * n,
            audio_pt=AUDIO_PT, video_pt=VIDEO_PT, video_bps=mbps * 1e6,
            duration=duration, drain=drain, seed=seed + n, worker_pid=pid, late_ms=LATE_MS,
            tick_us=tick_us,
        )
        queues = await watcher
        snmp1 = udp_snmp()
        c1 = await target.counters()
        if perf is not None:
            await asyncio.wait_for(perf.wait(), 30)
    finally:
        await gen.close()
        await target.close()

    d = {k: c1[k] - c0[k] for k in c1 if isinstance(c1[k], int)}
    window = res["duration_s"]
    received = res["recv_packets"] - res["recv_foreign"]
    expected = res["expected_total"]
    per_stream_loss = [s["expected_sent"] - s["packets"] for s in res["streams"]]
    streams_expected = 2 * n * (n - 1)
    return {
        "target": target.name,
        "participants": n,
        "video_mbps": mbps,
        "setup_s": setup_s,
        "pinned": pinned,
        "duration_s": window,
        "sent": res["sent_packets"],
        "in_pps": res["sent_packets"] / window,
        "offered_out_pps": expected / window,
        "expected_out": expected,
        "received_out": received,
        "out_pps": res["recv_during_window"] / window,
        "late": res["recv_late"],
        "late_pct": 100.0 * res["recv_late"] / expected if expected else None,
        "out_mbps": res["recv_bytes"] * 8 / window / 1e6,
        "loss_pct": 100.0 * (expected - received) / expected if expected else None,
        "streams": len(res["streams"]),
        "streams_expected": streams_expected,
        "streams_with_loss": sum(1 for x in per_stream_loss if x > 0),
        "seq_gaps": sum(max(0, s["expected_seq"] - s["packets"]) for s in res["streams"]),
        "reordered": sum(s["reordered"] for s in res["streams"]),
        "latency_us": res["latency_us"]["all"],
        "latency_audio_us": res["latency_us"]["audio"],
        "latency_max_us": res["latency_max_us"],
        "worker_cpu_pct": res["worker_cpu_pct"],
        "gen_cpu_pct": res["gen_cpu_pct"],
        "machine_busy_pct": res["machine_busy_pct"],
        # CPU used by anything else than the worker and the generator (other
        # jobs on the machine, perf, the parent): large values taint a point.
        "other_cpu_pct": (max(0.0, res["machine_busy_pct"] * (os.cpu_count() or 1) - (res["worker_cpu_pct"] or 0)
                              - res["gen_cpu_pct"]) if res["machine_busy_pct"] is not None else None),
        "machine_softirq_pct": res["machine_softirq_pct"],
        "max_send_lag_us": res["max_send_lag_us"],
        "gen_send_errors": res["send_errors"],
        "sfu_rx_rtp": d.get("rx_rtp"),
        "sfu_tx": d.get("tx_datagrams"),
        "sfu_tx_errors": d.get("tx_errors"),
        "sfu_drops": {k: v for k, v in d.items() if k.startswith("drop_") and v},
        "sfu_recv_calls": d.get("recv_calls"),
        "sfu_send_calls": d.get("send_calls"),
        "sfu_loop_iterations": d.get("loop_iterations"),
        "sfu_loop_busy_pct": 100.0 * d.get("loop_busy_ns", 0) / 1e9 / window if window else None,
        "sfu_rxq_max_kb": queues["sfu_rxq_max_bytes"] / 1024,
        "gen_rxq_max_kb": queues["gen_rxq_max_bytes"] / 1024,
        "kernel_udp": {k: snmp1.get(k, 0) - snmp0.get(k, 0) for k in ("InErrors", "RcvbufErrors", "SndbufErrors")},
        "generator": {k: res[k] for k in ("recv_calls", "send_calls", "mean_send_lag_us", "elapsed_s")},
    }


def parse_points(text: str) -> list[tuple[int, float]]:
    out = []
    for item in text.split(","):
        n, _, mbps = item.strip().partition(":")
        out.append((int(n), float(mbps or 1.0)))
    return out


HEADERS = ["N", "video Mbit/s", "offered in pps", "offered out pps", "delivered out pps", "lost %",
           "late %", "lat p50 us", "lat p99 us", "worker CPU %", "gen CPU %", "other CPU %",
           "pkts/sendmmsg", "max backlog KiB SFU/gen"]


def effective_loss(r: dict[str, Any]) -> float:
    """Lost plus late (more than late_ms after sending): what a real-time receiver misses."""
    return (r["loss_pct"] or 0.0) + (r["late_pct"] or 0.0)


def row(r: dict[str, Any]) -> list[Any]:
    lat = r["latency_us"]
    per_call = r["sfu_tx"] / r["sfu_send_calls"] if r.get("sfu_send_calls") else None
    return [
        r["participants"], f"{r['video_mbps']:g}", f"{r['in_pps']:.0f}", f"{r['offered_out_pps']:.0f}",
        f"{r['out_pps']:.0f}", f"{r['loss_pct']:.3f}" if r["loss_pct"] is not None else None,
        f"{r['late_pct']:.3f}" if r["late_pct"] is not None else None, lat.get("p50"), lat.get("p99"),
        f"{r['worker_cpu_pct']:.0f}" if r["worker_cpu_pct"] is not None else None,
        f"{r['gen_cpu_pct']:.0f}", f"{r['other_cpu_pct']:.0f}" if r["other_cpu_pct"] is not None else None,
        f"{per_call:.1f}" if per_call else None, f"{r['sfu_rxq_max_kb']:.0f}/{r['gen_rxq_max_kb']:.0f}",
    ]


async def amain(args: argparse.Namespace) -> int:
    if args.quick:
        args.wait_idle, args.retries = False, 0
        points, zero_point = [(3, 1.0)], (3, 1.0)
        duration, zero_duration, drain = 2.0, 2.0, 0.5
    else:
        points = parse_points(args.points)
        zero_point = parse_points(args.zero_loss_point)[0] if args.zero_loss_point else None
        duration, zero_duration, drain = args.duration, args.zero_loss_duration, args.drain
    info = machine_info()
    print(f"# bench_forward: {info.get('Model name', '?')}, {info['nproc']} CPUs, kernel {info['kernel']}, "
          f"load average {' '.join(info.get('loadavg', []))}\n", flush=True)
    async def point(n: int, mbps: float, seconds: float, seed: int, perf: str | None) -> dict[str, Any]:
        for attempt in range(args.retries + 1):
            if args.wait_idle:
                await wait_idle()
            r = await run_point(n, mbps, seconds, drain, seed, perf, args.tick_us, args.pin, args.worker_cpu,
                                args.target, args.feedback == "on")
            r["attempt"] = attempt
            if r["other_cpu_pct"] is None or r["other_cpu_pct"] < args.max_other_cpu:
                break
            print(f"  N={n}: {r['other_cpu_pct']:.0f}% CPU used by other processes"
                  + (", running the point again" if attempt < args.retries else ""), file=sys.stderr, flush=True)
        return r

    results = []
    for n, mbps in points:
        r = await point(n, mbps, duration, args.seed, args.perf)
        results.append(r)
        print(f"  N={n} {mbps:g} Mbit/s: {r['out_pps']:.0f} pps out, lost {r['loss_pct']:.3f}%, "
              f"late {r['late_pct']:.3f}%, p99 {r['latency_us'].get('p99')} us, "
              f"worker CPU {r['worker_cpu_pct'] or 0:.0f}%, drops {r['sfu_drops']}, kernel {r['kernel_udp']}",
              file=sys.stderr, flush=True)
    zero = None
    if zero_point:
        zero = await point(zero_point[0], zero_point[1], zero_duration, args.seed + 1, None)
        print(f"  zero-loss run N={zero_point[0]}: {zero['out_pps']:.0f} pps out, loss {zero['loss_pct']:.3f}%",
              file=sys.stderr, flush=True)

    print(f"## Mesh sweep ({duration:g} s per point; every participant publishes audio + video and "
          "consumes all the others)\n")
    print(markdown_table(HEADERS, [row(r) for r in results]))
    print(f"\n'delivered out pps' counts packets received during the send window; 'lost' never "
          f"arrived (within {drain:g} s after the end), 'late' arrived more than {LATE_MS:g} ms after "
          "being sent (a real-time receiver drops them: they mean the worker is not keeping up).")
    best = max((r for r in results if r["loss_pct"] is not None and effective_loss(r) < TARGET_LOSS),
               key=lambda r: r["out_pps"], default=None)
    if best:
        print(f"\nHighest delivered rate with lost + late < {TARGET_LOSS}%: {best['out_pps']:.0f} packets/s out "
              f"(N={best['participants']}) -> target {TARGET_PPS} packets/s: "
              f"{'met' if best['out_pps'] >= TARGET_PPS else 'MISSED'}")
    else:
        print(f"\nNo point had loss < {TARGET_LOSS}%.")
    if zero:
        print(f"\n## Zero-loss run ({zero_duration:g} s)\n")
        print(markdown_table(HEADERS, [row(zero)]))
        lost = zero["expected_out"] - zero["received_out"]
        print(f"\n{zero['received_out']} of {zero['expected_out']} packets delivered, {lost} lost, "
              f"{zero['late']} late -> {'zero loss: met' if lost == 0 and zero['late'] == 0 else 'LOSS'}")
    if args.json:
        dump_json(args.json, {"machine": info, "duration_s": duration, "results": results, "zero_loss": zero})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 participants, 2 s, for smoke tests")
    ap.add_argument("--points", default=DEFAULT_POINTS, help="comma-separated N:video_Mbps (default %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of sending per point")
    ap.add_argument("--drain", type=float, default=1.0, help="max seconds to wait for stragglers")
    ap.add_argument("--zero-loss-point", default=ZERO_LOSS_POINT,
                    help="N:video_Mbps of the ~100k packets/s run that must lose nothing ('' to skip)")
    ap.add_argument("--zero-loss-duration", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tick-us", type=float, default=1000.0,
                    help="generator tick: sends what is due and reads what arrived every tick "
                         "(0: event-driven, a wake-up per arrival)")
    ap.add_argument("--no-wait-idle", dest="wait_idle", action="store_false",
                    help="do not wait for an idle machine before each point")
    ap.add_argument("--max-other-cpu", type=float, default=25.0,
                    help="rerun a point when other processes used more CPU %% than this")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--target", choices=("sfu", "trivial"), default="sfu",
                    help="what forwards: the SFU worker, or benchmarks/src/trivial_forwarder.c (the kernel floor)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the worker and the generator to CPUs of their own")
    ap.add_argument("--worker-cpu", type=int, default=0,
                    help="the worker's CPU when pinned (the generator gets CPU 1, or 0 when this is 1)")
    ap.add_argument("--feedback", choices=("on", "off"), default="on",
                    help="loss recovery negotiated (NACK both legs) or not, to measure its cost")
    ap.add_argument("--json", help="also write all results to this file")
    ap.add_argument("--perf", metavar="DIR", help="record `perf record -g` of the worker for every sweep point into DIR")
    args = ap.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
