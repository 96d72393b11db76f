"""The latency a pipe hop adds (Router.pipe_to_router between two workers).

One run, one load, two viewers of the same packets: a probe publisher sends
Opus-like RTP (``--probe-pps``, 200-byte payloads carrying the send time) to
a plain transport of router A (worker 1); viewer A consumes it on router A,
viewer B on router B (worker 2), to which the producer is piped. Each packet
is timed on both paths (send time, CLOCK_REALTIME, written just before
``sendto``; arrival: the kernel's receive timestamp, SO_TIMESTAMPNS), so the
pipe hop is B's latency minus A's, packet by packet.

Background load (``--loads``: streams per point, e.g. ``0,20``): that many
extra publishers (``--load-pps`` packets/s each, 1000-byte payloads) on
router A, each consumed by ``--fanout`` plain transports on A and, piped,
by ``--fanout`` on B; their viewers' sockets are never read (the kernel
drops what overflows them), so the load costs the workers, not Python.

The probe and the load run in processes of their own. ``--same-worker`` puts
router B on worker 1 (a pipe between routers of one worker).

    python -m benchmarks.bench_pipe --duration 10 --loads 0,20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import select
import socket
import struct
import time
from typing import Any, Optional

import sfu
from benchmarks.common import machine_info, markdown_table

CODECS = [{"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2}]
OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}
PROBE_SSRC = 0x50C0DE
HEADER = struct.Struct("!BBHII")
STAMP = struct.Struct("!IQ")  # probe sequence, send time (ns, CLOCK_REALTIME)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; also the SCM type of the timestamp


def _udp(rcvbuf: Optional[int] = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", 0))
    return s


def _probe(conn: Any, pps: int, duration: float) -> None:
    """Child: sends the probe stream, receives both viewers' copies."""
    pub, va, vb = _udp(), _udp(4 << 20), _udp(4 << 20)
    for s in (va, vb):
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setblocking(False)
    conn.send([pub.getsockname()[1], va.getsockname()[1], vb.getsockname()[1]])
    dest = tuple(conn.recv())
    conn.recv()  # go
    sent: dict[int, int] = {}
    got: dict[str, dict[int, int]] = {"a": {}, "b": {}}
    interval = 1.0 / pps
    start = time.monotonic()
    end = start + duration
    n = 0
    payload_pad = b"\x00" * (200 - STAMP.size)
    names = {va.fileno(): ("a", va), vb.fileno(): ("b", vb)}

    def drain(timeout: float) -> None:
        ready, _, _ = select.select([va, vb], [], [], max(0.0, timeout))
        for s in ready:
            name = names[s.fileno()][0]
            while True:
                try:
                    data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(16))
                except BlockingIOError:
                    break
                rx = None
                for level, typ, cdata in anc:
                    if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", cdata[:16])
                        rx = sec * 1_000_000_000 + nsec
                if rx is None or len(data) < 12 + STAMP.size or 192 <= data[1] <= 223:
                    continue
                off = 12 + 4 * (data[0] & 0x0F)
                if data[0] & 0x10:  # header extensions (the consumer may write some)
                    off += 4 + 4 * struct.unpack_from("!H", data, off + 2)[0]
                if len(data) < off + STAMP.size:
                    continue
                seq, t_send = STAMP.unpack_from(data, off)
                got[name][seq] = rx - t_send

    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = start + n * interval
        if now >= due:
            t = time.time_ns()
            pkt = HEADER.pack(0x80, 111, n & 0xFFFF, (n * 960) & 0xFFFFFFFF, PROBE_SSRC) + STAMP.pack(n, t)
            pub.sendto(pkt + payload_pad, dest)
            sent[n] = t
            n += 1
            continue
        drain(due - now)
    drain_end = time.monotonic() + 1.0
    while time.monotonic() < drain_end:
        drain(0.05)
    conn.send({"sent": n, "a": got["a"], "b": got["b"]})


def _load(conn: Any, streams: int, pps: int, duration: float) -> None:
    """Child: `streams` publishers of 1000-byte RTP at `pps` each."""
    socks = [_udp() for _ in range(streams)]
    conn.send([s.getsockname()[1] for s in socks])
    dests = [tuple(d) for d in conn.recv()]
    conn.recv()  # go
    payload = b"\x00" * 1000
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < duration:
        due = start + n / pps
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for i, (s, d) in enumerate(zip(socks, dests)):
            s.sendto(HEADER.pack(0x80, 111, n & 0xFFFF, n * 960, 0x10000 + i) + payload, d)
        n += 1
    conn.send(n * streams)


def _pct(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


async def _plain(router: sfu.Router, port: int) -> sfu.PlainTransport:
    t = await router.create_plain_transport(listen_ip="127.0.0.1")
    await t.connect(ip="127.0.0.1", port=port)
    return t


async def run_point(load_streams: int, args: argparse.Namespace) -> dict[str, Any]:
    w1 = await sfu.create_worker()
    w2 = w1 if args.same_worker else await sfu.create_worker()
    ctx = mp.get_context("spawn")
    procs = []
    try:
        ra, rb = await w1.create_router(CODECS), await w2.create_router(CODECS)
        caps_a, caps_b = ra.rtp_capabilities, rb.rtp_capabilities
        # the probe
        probe_conn, child = ctx.Pipe()
        probe = ctx.Process(target=_probe, args=(child, args.probe_pps, args.duration), daemon=True)
        probe.start()
        procs.append(probe)
        pub_port, va_port, vb_port = probe_conn.recv()
        tp = await _plain(ra, pub_port)
        producer = await tp.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": PROBE_SSRC}]})
        await ra.pipe_to_router(producer.id, rb)
        await (await _plain(ra, va_port)).consume(producer.id, caps_a)
        await (await _plain(rb, vb_port)).consume(producer.id, caps_b)
        probe_conn.send(["127.0.0.1", tp.tuple["localPort"]])
        # the load
        load_conn = None
        sinks = [_udp(64 * 1024), _udp(64 * 1024)]  # never read
        if load_streams:
            load_conn, child = ctx.Pipe()
            loader = ctx.Process(target=_load, args=(child, load_streams, args.load_pps, args.duration), daemon=True)
            loader.start()
            procs.append(loader)
            ports = load_conn.recv()
            dests = []
            for i, port in enumerate(ports):
                t = await _plain(ra, port)
                p = await t.produce("audio", {"codecs": [OPUS], "encodings": [{"ssrc": 0x10000 + i}]})
                await ra.pipe_to_router(p.id, rb)
                for router, caps, sink in ((ra, caps_a, sinks[0]), (rb, caps_b, sinks[1])):
                    for _ in range(args.fanout):
                        await (await _plain(router, sink.getsockname()[1])).consume(p.id, caps)
                dests.append(["127.0.0.1", t.tuple["localPort"]])
            load_conn.send(dests)
        await asyncio.sleep(0.5)
        cpu0 = _cpu([w1.pid] if args.same_worker else [w1.pid, w2.pid])
        t0 = time.monotonic()
        probe_conn.send("go")
        if load_conn:
            load_conn.send("go")
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, probe_conn.recv)
        wall = time.monotonic() - t0
        cpu1 = _cpu([w1.pid] if args.same_worker else [w1.pid, w2.pid])
        load_sent = (await loop.run_in_executor(None, load_conn.recv)) if load_conn else 0
        for s in sinks:
            s.close()
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        w1.close()
        if w2 is not w1:
            w2.close()
    a, b = result["a"], result["b"]
    both = [k for k in a if k in b]
    lat_a = [a[k] / 1000 for k in a]
    lat_b = [b[k] / 1000 for k in b]
    hop = [(b[k] - a[k]) / 1000 for k in both]
    out_pps = load_streams * args.load_pps * args.fanout * 2 + args.probe_pps * 2
    sent_pps = out_pps + load_streams * args.load_pps + args.probe_pps  # + the pipe's own datagrams
    cpu_s = [(c1 - c0) / wall for c0, c1 in zip(cpu0, cpu1)]
    return {
        "load_streams": load_streams, "fanout": args.fanout, "approx_out_pps": out_pps,
        "probe_sent": result["sent"], "recv_a": len(a), "recv_b": len(b), "load_sent": load_sent,
        "a_p50_us": _pct(lat_a, 0.5), "a_p99_us": _pct(lat_a, 0.99),
        "b_p50_us": _pct(lat_b, 0.5), "b_p99_us": _pct(lat_b, 0.99),
        "hop_p50_us": _pct(hop, 0.5), "hop_p99_us": _pct(hop, 0.99),
        "worker_cpu_pct": [round(100 * c, 1) for c in cpu_s],
        # the workers' CPU per datagram they send (to viewers and into pipes), µs
        "cpu_us_per_packet": round(1e6 * sum(cpu_s) / sent_pps, 2),
    }


def _cpu(pids: list[Optional[int]]) -> list[float]:
    tck = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tck)
        except (OSError, TypeError):
            out.append(0.0)
    return out


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for load in [int(x) for x in args.loads.split(",")]:
        results.append(await run_point(load, args))
    return results


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--probe-pps", type=int, default=200)
    ap.add_argument("--loads", default="0,20", help="background streams per point, comma-separated")
    ap.add_argument("--load-pps", type=int, default=200)
    ap.add_argument("--fanout", type=int, default=5, help="viewers of each load stream on each router")
    ap.add_argument("--same-worker", action="store_true", help="router B on worker 1")
    ap.add_argument("--quick", action="store_true", help="2 s points, loads 0 and 4")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.loads = 2.0, "0,4"
    results = asyncio.run(main_async(args))
    headers = ["load streams", "~out pps", "probe sent", "recv A", "recv B", "A p50 us", "A p99 us",
               "B p50 us", "B p99 us", "hop p50 us", "hop p99 us", "worker CPU %",
               "CPU us/pkt"]
    rows = [[r["load_streams"], r["approx_out_pps"], r["probe_sent"], r["recv_a"], r["recv_b"],
             r["a_p50_us"], r["a_p99_us"], r["b_p50_us"], r["b_p99_us"], r["hop_p50_us"], r["hop_p99_us"],
             "/".join(str(c) for c in r["worker_cpu_pct"]), r["cpu_us_per_packet"]] for r in results]
    kind = "routers of one worker" if args.same_worker else "router A on worker 1, router B on worker 2"
    print(f"pipe hop ({kind}; viewer A on router A, viewer B on piped router B; same packets)\n")
    print(markdown_table(headers, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info(), "args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
