"""SRTP through the engine versus libsrtp called directly from C.

"direct": `bench_srtp_direct` calls libsrtp's srtp_protect (the very function
the engine installs, from the libsrtp bundled with pylibsrtp) in a C loop on
one 1200-byte RTP packet, advancing its sequence number each time.

"engine": the sans-IO core forwards a 1200-byte plain RTP packet to one
consumer whose transport has an outbound SRTP session, so every input packet
is copied into the outbox, rewritten and protected (`Engine.bench_receive`).
"engine, 10 consumers" does the same with ten SRTP consumers and reports the
time per protected packet. The "no crypto" row is the same engine case
without SRTP: engine - direct should be close to it.

Target: engine within 20% of direct (ratio <= 1.20), for
AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM.

    python -m benchmarks.bench_srtp            # ~10 s
    python -m benchmarks.bench_srtp --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from sfu._fastpath import _testhooks
from sfu._fastpath._testhooks import SansIOEngine as Engine
from sfu.srtp import crypto_suite, generate_key

from .common import dump_json, machine_info, markdown_table, rtp_packet
from .libsrtp import SrtpContext, engine_functions

SIZE = 1200
SUITES = ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM")
SRC = ("127.0.0.1", 40000)
TARGET_RATIO = 1.20


def engine_case(n_consumers: int, suite_name: str | None) -> tuple[Engine, int, list[Any]]:
    """Producer on a plain transport; n consumers whose transports protect
    outgoing RTP with the engine's SRTP (suite None: no SRTP)."""
    e = Engine()
    s = e.add_socket(-1)
    t = e.add_transport(s)
    e.connect_transport(t, SRC)
    p = e.add_producer(t, True, [(0x11111111, 0)], {96: 101}, {})
    keep = []
    for i in range(n_consumers):
        cs = e.add_socket(-1)
        ct = e.add_transport(cs)
        e.connect_transport(ct, ("127.0.0.1", 41000 + i))
        if suite_name:
            suite = crypto_suite(suite_name)
            e.set_transport_srtp(ct, suite.profile, out_key=generate_key(suite))
        e.add_consumer(ct, p, 0x20000000 + i, 0, 90000, {101: 101}, {})
    return e, s, keep


class EngineCase:
    """A built engine case; run() continues the sequence numbers of the last
    run so that libsrtp's replay check sees them always advancing."""

    def __init__(self, n_consumers: int, suite_name: str | None) -> None:
        self.n = n_consumers
        self.engine, self.socket, self.keep = engine_case(n_consumers, suite_name)
        self.seq = 1
        e, s = self.engine, self.socket
        e.receive(s, SRC, rtp_packet(SIZE, pt=96, ssrc=0x11111111, seq=self.seq), 1000)
        self.seq += 1
        out = e.take_outbox()
        trailer = 0 if suite_name is None else (16 if "GCM" in suite_name else 10)
        if len(out) != n_consumers or any(len(d) != SIZE + trailer for _, _, d in out):
            raise RuntimeError(f"engine case forwarded {[len(d) for _, _, d in out]}")

    def run(self, packets: int) -> float:
        """ns per protected (forwarded) packet."""
        e = self.engine
        before = e.counters()
        ns = e.bench_receive(self.socket, SRC, rtp_packet(SIZE, pt=96, ssrc=0x11111111, seq=self.seq),
                             packets, 1000)
        self.seq = (self.seq + packets) & 0xFFFF
        after = e.counters()
        bad = {k: after[k] - before[k] for k in ("tx_srtp_errors", "drop_outbox_full")
               if after[k] != before[k]}
        if bad:
            raise RuntimeError(f"engine failed while protecting: {bad}")
        return ns / max(1, self.n)


class DirectCase:
    def __init__(self, suite_name: str) -> None:
        suite = crypto_suite(suite_name)
        self.ctx = SrtpContext(suite, generate_key(suite), outbound=True)
        self.seq = 1

    def run(self, packets: int) -> float:
        ns = _testhooks.bench_srtp_direct(self.ctx.address, SIZE, packets, engine_functions()[0], first_seq=self.seq)
        self.seq = (self.seq + packets) & 0xFFFF
        return ns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    packets, repeats = (50_000, 3) if args.quick else (args.packets, args.repeats)

    t0 = time.monotonic()
    none = EngineCase(1, None)
    none.run(packets // 10)
    base = statistics.median([none.run(packets) for _ in range(repeats)])
    results: list[dict[str, Any]] = []
    rows = []
    for name in SUITES:
        cases = {"direct": DirectCase(name), "engine1": EngineCase(1, name), "engine10": EngineCase(10, name)}
        for c in cases.values():  # warm-up
            c.run(max(1000, packets // 10))
        # interleaved, to spread frequency or noise drift over all cases
        runs: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(repeats):
            runs["direct"].append(cases["direct"].run(packets))
            runs["engine1"].append(cases["engine1"].run(packets))
            runs["engine10"].append(cases["engine10"].run(max(1000, packets // 10)))
        direct, eng1, eng10 = runs["direct"], runs["engine1"], runs["engine10"]
        d, e1, e10 = statistics.median(direct), statistics.median(eng1), statistics.median(eng10)
        results.append({"suite": name, "direct_ns": direct, "engine_1_ns": eng1, "engine_10_ns": eng10,
                        "engine_no_crypto_ns": base})
        for label, v in (("direct (libsrtp from C)", d), ("engine, 1 consumer", e1),
                         ("engine, 10 consumers (per packet)", e10)):
            ratio = v / d
            rows.append([name, label, f"{v:.0f}", f"{ratio:.2f}", f"{v - d:+.0f}",
                         "-" if label.startswith("direct") else ("yes" if ratio <= TARGET_RATIO else "NO")])
    print(f"## SRTP protect, {SIZE}-byte RTP (median of {repeats} runs of {packets} packets; "
          f"target: engine / direct <= {TARGET_RATIO:.2f})\n")
    print(markdown_table(["suite", "path", "ns/packet", "vs direct", "ns over direct", "within 20%"], rows))
    print(f"\nengine without crypto, 1 consumer: {base:.0f} ns/packet ({time.monotonic() - t0:.1f} s)")
    if args.json:
        dump_json(args.json, {"machine": machine_info(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
