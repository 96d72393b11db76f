"""Sans-IO core cost: nanoseconds per forwarded packet per consumer.

One producer's 1200-byte RTP packets are fed to the compiled core
(`Engine.bench_receive`: a C loop without the GIL, the sequence number
advancing every packet, the outbox cleared after every packet) with 1, 10
and 49 consumers on transports of their own, no crypto and no syscalls
(virtual sockets). Each case also runs with packets carrying three one-byte
header extensions that every consumer maps to different ids (the
"ext remap" rows), which makes the core rewrite the extension block per
consumer, and once more with every consumer writing its own MID in place of
the publisher's (as with browsers, which negotiate the MID extension).

Target: under 150 ns per forwarded packet per consumer.

    python -m benchmarks.bench_core            # ~10 s
    python -m benchmarks.bench_core --quick    # ~1 s smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from sfu._fastpath._testhooks import SansIOEngine as Engine

from .common import dump_json, machine_info, markdown_table, rtp_packet

TARGET_NS = 150.0
SIZE = 1200
SRC = ("127.0.0.1", 40000)
PRODUCER_SSRC = 0x11111111
IN_PT, ROUTER_PT = 96, 101
# Extension ids as sent (= router ids: the producer map is the identity) and
# as each consumer negotiated them.
EXTENSIONS = [(1, b"0"), (3, b"\x12\x34\x56"), (5, b"\x00\x07")]  # mid, abs-send-time, transport-cc
CONSUMER_EXT_MAP = {1: 4, 3: 2, 5: 7}
IDENTITY_EXT_MAP = {1: 1, 3: 3, 5: 5}


def build(n_consumers: int, remap: bool, feedback: bool = False, mid: bool = False) -> tuple[Engine, int, list[int]]:
    """A sans-IO engine: one producer transport and n consumer transports.
    With `feedback`, loss recovery is on as a browser would negotiate it: NACK
    generation and receive statistics on the producer, a retransmission store
    and sequence map per consumer (RTX), reports on the timer."""
    e = Engine()
    s = e.add_socket(-1)
    t = e.add_transport(s)
    e.connect_transport(t, SRC)
    ext = IDENTITY_EXT_MAP
    p = e.add_producer(t, True, [(PRODUCER_SSRC, 0)], {IN_PT: ROUTER_PT}, ext)
    consumers = []
    for i in range(n_consumers):
        cs = e.add_socket(-1)
        ct = e.add_transport(cs)
        e.connect_transport(ct, ("127.0.0.1", 41000 + i))
        consumers.append(e.add_consumer(ct, p, 0x20000000 + i, 0x30000000 + i if feedback else 0, 90000,
                                        {ROUTER_PT: ROUTER_PT}, CONSUMER_EXT_MAP if remap else IDENTITY_EXT_MAP))
        if feedback:
            e.set_consumer_feedback(consumers[-1], nack=True, rtx_pt=ROUTER_PT + 1)
        if mid:  # as browsers negotiate: each consumer writes its own MID (consumer id 4)
            e.set_consumer_mid(consumers[-1], CONSUMER_EXT_MAP[1], "1")
    if feedback:
        e.set_producer_feedback(p, nack=True, rtx_apt={IN_PT + 1: IN_PT}, clock_rate=90000)
    return e, s, consumers


def measure(n_consumers: int, remap: bool, packets: int, repeats: int, feedback: bool = False,
            mid: bool = False) -> dict[str, Any]:
    e, s, consumers = build(n_consumers, remap, feedback, mid)
    pkt = rtp_packet(SIZE, pt=IN_PT, ssrc=PRODUCER_SSRC, extensions=EXTENSIONS if remap else ())
    # check that the case really forwards what it should, then warm up
    e.receive(s, SRC, pkt, 1000)
    out = e.take_outbox()
    if len(out) != n_consumers or any(len(d) != SIZE for _, _, d in out):
        raise RuntimeError(f"setup forwards {len(out)} packets instead of {n_consumers}")
    e.bench_receive(s, SRC, pkt, max(1000, packets // 10), 1000)
    before = e.counters()
    sent_before = sum(e.consumer_stats(h)["packetCount"] for h in consumers)
    runs = [e.bench_receive(s, SRC, pkt, packets, 1000) for _ in range(repeats)]
    after = e.counters()
    sent = sum(e.consumer_stats(h)["packetCount"] for h in consumers) - sent_before
    rx = after["rx_rtp"] - before["rx_rtp"]
    if rx != packets * repeats or sent != packets * repeats * n_consumers:
        raise RuntimeError(f"core received {rx} packets and forwarded {sent}, expected "
                           f"{packets * repeats} and {packets * repeats * n_consumers}")
    drops = {k: after[k] - before[k] for k in after if k.startswith("drop_") and after[k] != before[k]}
    if drops:
        raise RuntimeError(f"core dropped packets: {drops}")
    per_input = statistics.median(runs)
    best = min(runs)
    return {
        "consumers": n_consumers,
        "ext_remap": remap,
        "feedback": feedback,
        "consumer_mid": mid,
        "packets_per_run": packets,
        "runs_ns_per_input": runs,
        "ns_per_input": per_input,
        "ns_per_input_best": best,
        "ns_per_packet_consumer": per_input / max(1, n_consumers),
        "ns_per_packet_consumer_best": best / max(1, n_consumers),
        "mpps_out": (n_consumers / per_input * 1e3) if n_consumers else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    ap.add_argument("--consumers", default="0,1,10,49", help="comma-separated consumer counts")
    ap.add_argument("--forwards", type=int, default=4_000_000,
                    help="forwarded packets (input x consumers) per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--no-mid", action="store_true", help="skip the rows where consumers write their own MID")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.consumers.split(",")]
    forwards, repeats = args.forwards, args.repeats
    if args.quick:
        forwards, repeats = 200_000, 3

    t0 = time.monotonic()
    results = []
    cases = [(False, False, False), (True, False, False), (False, True, False)]
    if hasattr(Engine, "set_consumer_mid") and not args.no_mid:
        cases.append((True, False, True))
    for remap, feedback, mid in cases:
        for n in counts:
            if (remap or feedback) and n == 0:
                continue
            packets = max(20_000, forwards // max(1, n))
            results.append(measure(n, remap, packets, repeats, feedback, mid))
    rows = []
    for r in results:
        per = r["ns_per_packet_consumer"] if r["consumers"] else None
        rows.append([
            r["consumers"], ("yes + own MID" if r["consumer_mid"] else "yes") if r["ext_remap"] else "no",
            "yes" if r["feedback"] else "no", r["packets_per_run"],
            f"{r['ns_per_input']:.1f}", f"{per:.1f}" if per is not None else "-",
            f"{r['ns_per_packet_consumer_best']:.1f}" if r["consumers"] else "-",
            f"{r['mpps_out']:.2f}" if r["mpps_out"] else "-",
            ("yes" if per < TARGET_NS else "NO") if per is not None else "-",
        ])
    print(f"## Sans-IO core: {SIZE}-byte RTP, no crypto, no syscalls "
          f"(median of {repeats} runs; target < {TARGET_NS:.0f} ns per packet per consumer)\n")
    print(markdown_table(
        ["consumers", "ext remap", "loss recovery", "packets/run", "ns/input packet", "ns/packet/consumer",
         "best ns/packet/consumer", "Mpps out (1 core)", "< 150 ns"], rows))
    print(f"\n({time.monotonic() - t0:.1f} s)")
    if args.json:
        dump_json(args.json, {"machine": machine_info(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
