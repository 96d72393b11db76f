"""The engine's SRTP unit (sfu/_fastpath/src/srtp.c) versus libsrtp, per
protect of a 1,200-byte RTP packet.

Both are called from the same C loop without the GIL
(`sfu._fastpath._srtp_hooks.bench_protect` / `bench_libsrtp_protect`): ours
on an outbound `sfu_srtp_t`, libsrtp's srtp_protect (the libsrtp bundled in
the pylibsrtp wheel, its address from pylibsrtp's cffi module) on an
SSRC_ANY_OUTBOUND session with allow_repeat_tx, as the engine configured it
before. "1 SSRC": every packet of one stream; "50 SSRCs": round-robin over 50
streams of one context (libsrtp looks its streams up in a list, ours in a
hash table). Each figure is the median of REPEATS runs of COUNT packets,
after a warm-up run that creates the streams.

    python -m benchmarks.bench_srtp_unit            # ~10 s
    python -m benchmarks.bench_srtp_unit --quick
    python -m benchmarks.bench_srtp_unit --ssrcs 1,50,500
"""

from __future__ import annotations

import argparse
import os
import statistics

import pylibsrtp
from pylibsrtp._binding import ffi, lib

from sfu._fastpath import _srtp_hooks as H

from .common import machine_info, markdown_table

SIZE = 1200
SUITES = {
    "AEAD_AES_128_GCM": (H.AEAD_AES_128_GCM, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AES_CM_128_HMAC_SHA1_80": (H.AES128_CM_SHA1_80, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
}


class _Runner:
    """Times one implementation on one context, continuing each SSRC's
    sequence numbers from run to run."""

    def __init__(self, impl: str, suite: str, n_ssrc: int) -> None:
        ours_profile, lib_profile, key_len = SUITES[suite]
        key = os.urandom(key_len)
        self.n_ssrc = n_ssrc
        self.seq = 1
        if impl == "ours":
            self.ctx = H.SrtpContext(ours_profile, key, True)
            self.fn = lambda count: H.bench_protect(self.ctx, SIZE, count, self.n_ssrc, first_seq=self.seq)
        else:
            policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=lib_profile)
            policy.allow_repeat_tx = True
            self.session = pylibsrtp.Session(policy=policy)
            protect = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))
            srtp_t = int(ffi.cast("uintptr_t", self.session._srtp[0]))
            self.fn = lambda count: H.bench_libsrtp_protect(protect, srtp_t, SIZE, count, self.n_ssrc,
                                                            first_seq=self.seq)

    def run(self, count: int) -> float:
        count -= count % self.n_ssrc  # whole rounds: every SSRC advances alike
        ns = self.fn(count)
        self.seq = (self.seq + count // self.n_ssrc) & 0xFFFF
        return ns


def measure(count: int, repeats: int, ssrc_counts: tuple[int, ...] = (1, 50)) -> list[dict]:
    rows = []
    for suite in SUITES:
        for n_ssrc in ssrc_counts:
            row: dict = {"suite": suite, "ssrcs": n_ssrc}
            runners = {impl: _Runner(impl, suite, n_ssrc) for impl in ("ours", "libsrtp")}
            for r in runners.values():
                r.run(max(n_ssrc * 10, count // 10))  # warm-up: streams created, caches warm
            samples: dict[str, list[float]] = {impl: [] for impl in runners}
            for _ in range(repeats):  # interleaved, so load changes hit both alike
                for impl, r in runners.items():
                    samples[impl].append(r.run(count))
            for impl in runners:
                row[impl] = statistics.median(samples[impl])
            row["ratio"] = row["ours"] / row["libsrtp"]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer packets (smoke run)")
    ap.add_argument("--count", type=int, default=200_000, help="packets per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ssrcs", default="1,50", help="comma-separated SSRC counts (default 1,50)")
    args = ap.parse_args(argv)
    count, repeats = (20_000, 3) if args.quick else (args.count, args.repeats)
    info = machine_info()
    print(f"# SRTP protect, {SIZE}-byte RTP, ns per packet (median of {repeats} x {count})")
    print(f"# {info.get('Model name', '?')}, {info.get('nproc')} CPUs, loadavg {' '.join(info.get('loadavg', []))}")
    rows = measure(count, repeats, tuple(int(x) for x in args.ssrcs.split(",")))
    print(markdown_table(["suite", "SSRCs", "ours ns", "libsrtp ns", "ours/libsrtp"],
                         [[r["suite"], r["ssrcs"], r["ours"], r["libsrtp"], f"{r['ratio']:.2f}"] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
