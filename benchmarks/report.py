"""The tables, fits and plot of `sfu-bench`."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .common import markdown_table

TABLE_HEADERS = ["Participants", "Video Mbit/s", "CPU", "RAM", "Bandwidth (per user)", "Latency (p50)",
                 "Latency (p99)", "Loss", "Late", "Packets/s out", "CPU per packet", "Generator CPU"]
LOSS_LIMIT_PCT = 0.5
LATE_MS = 100.0  # as benchmarks.harness.LATE_MS


def _ms(us: Optional[float]) -> Optional[str]:
    return None if us is None else f"{us / 1000:.2f} ms"


def table_row(r: dict[str, Any]) -> list[Any]:
    lat = r["latency_us"]
    return [
        r["participants"],
        f"{r['config']['video_bps'] / 1e6:g}",
        None if r["server_cpu_pct"] is None else f"{r['server_cpu_pct']:.0f}%",
        f"{r['server_rss_mb']:.0f} MB",
        None if r["down_mbps_per_user"] is None else f"{r['down_mbps_per_user']:.1f} Mbit/s",
        _ms(lat.get("p50")),
        _ms(lat.get("p99")),
        None if r["loss_pct"] is None else f"{r['loss_pct']:.3f}%",
        None if r.get("late_pct") is None else f"{r['late_pct']:.2f}%",
        f"{r['out_pps']:,.0f}",
        None if r["cpu_us_per_packet"] is None else f"{r['cpu_us_per_packet']:.2f} us",
        f"{r['gen_cpu_pct']:.0f}%",
    ]


def markdown(results: Sequence[dict[str, Any]]) -> str:
    if any(r.get("layers", 1) > 1 for r in results):  # simulcast runs: say which rows they are
        return markdown_table(TABLE_HEADERS[:1] + ["Layers"] + TABLE_HEADERS[1:],
                              [[row[0], r.get("layers", 1)] + row[1:] for r, row in
                               ((r, table_row(r)) for r in results)])
    return markdown_table(TABLE_HEADERS, [table_row(r) for r in results])


COMPARE_HEADERS = ["Participants", "Round", "1 layer: CPU per packet", "Simulcast: CPU per packet", "Ratio",
                   "1 layer: packets/s in / out", "Simulcast: packets/s in / out", "Simulcast: viewers at top",
                   "Loss 1 layer / simulcast", "Other CPU"]


def _us(v: Optional[float]) -> Optional[str]:
    return None if v is None else f"{v:.2f} us"


def compare_rows(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[list[list[Any]], dict[int, dict]]:
    """Rows of the side-by-side table (one per round and count, then a mean
    row per count) and, per count, the mean CPU per forwarded packet of
    each mode and their ratio."""
    rows: list[list[Any]] = []
    means: dict[int, dict[str, Any]] = {}
    by_n: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for single, sim in pairs:
        by_n.setdefault(single["participants"], []).append((single, sim))
    for n, ps in sorted(by_n.items()):
        for k, (single, sim) in enumerate(ps):
            a, b = single["cpu_us_per_packet"], sim["cpu_us_per_packet"]
            sc = sim.get("simulcast", {})
            top = (sc.get("consumers_at_layer") or [None])[-1]
            rows.append([n, k + 1, _us(a), _us(b), f"{b / a:.3f}" if a and b else None,
                         f"{single['in_pps']:,.0f} / {single['out_pps']:,.0f}",
                         f"{sim['in_pps']:,.0f} / {sim['out_pps']:,.0f}",
                         f"{top}/{sc.get('consumers')}" if top is not None else None,
                         f"{single['loss_pct'] or 0:.3f}% / {sim['loss_pct'] or 0:.3f}%",
                         f"{single.get('other_cpu_pct') or 0:.0f}% / {sim.get('other_cpu_pct') or 0:.0f}%"])
        xs = [s["cpu_us_per_packet"] for s, _ in ps if s["cpu_us_per_packet"]]
        ys = [m["cpu_us_per_packet"] for _, m in ps if m["cpu_us_per_packet"]]
        if xs and ys:
            ma, mb = sum(xs) / len(xs), sum(ys) / len(ys)
            means[n] = {"single_us": ma, "simulcast_us": mb, "ratio": mb / ma, "rounds": len(ps),
                        "round_ratios": [m["cpu_us_per_packet"] / s["cpu_us_per_packet"] for s, m in ps
                                         if s["cpu_us_per_packet"] and m["cpu_us_per_packet"]]}
            rows.append([n, "mean", _us(ma), _us(mb), f"**{mb / ma:.3f}**", "", "", "", "", ""])
    return rows, means


def compare_markdown(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    rows, _ = compare_rows(pairs)
    return markdown_table(COMPARE_HEADERS, rows)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Optional[dict[str, float]]:
    """Least-squares y = a*x + b and its R² (None with fewer than 2 distinct x)."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    a = sxy / sxx
    b = my - a * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a * x + b)) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"slope": a, "intercept": b, "r2": r2}


def cpu_fit(results: Sequence[dict[str, Any]], loss_limit: float = LOSS_LIMIT_PCT) -> Optional[dict[str, Any]]:
    """CPU % against N·(N−1) (the forwarded streams) over the unsaturated points
    (loss under the limit) at the most common bitrate."""
    pts = [r for r in results if r["server_cpu_pct"] is not None and r["loss_pct"] is not None
           and r["loss_pct"] < loss_limit]
    if not pts:
        return None
    rates = [r["config"]["video_bps"] for r in pts]
    rate = max(set(rates), key=rates.count)
    pts = [r for r in pts if r["config"]["video_bps"] == rate]
    xs = [r["participants"] * (r["participants"] - 1) for r in pts]
    fit = linear_fit(xs, [r["server_cpu_pct"] for r in pts])
    if fit is None:
        return None
    fit.update({"x": "N*(N-1)", "points": [r["participants"] for r in pts], "video_bps": rate})
    return fit


def largest_within(results: Sequence[dict[str, Any]], loss_limit: float = LOSS_LIMIT_PCT,
                   count_late: bool = False) -> Optional[dict[str, Any]]:
    """The largest point with loss (plus late packets, with count_late) under the limit."""
    ok = [r for r in results if r["loss_pct"] is not None
          and r["loss_pct"] + ((r.get("late_pct") or 0.0) if count_late else 0.0) < loss_limit]
    return max(ok, key=lambda r: (r["participants"], r["config"]["video_bps"]), default=None)


def summary_lines(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    fit = cpu_fit(results)
    if fit:
        lines.append(f"CPU = {fit['slope'] * 1000:.3f}% x N(N-1)/1000 + {fit['intercept']:.1f}%, "
                     f"R² = {fit['r2']:.4f} over N = {', '.join(map(str, fit['points']))}")
    best = largest_within(results)
    if best:
        lines.append(f"Largest point with loss under {LOSS_LIMIT_PCT}%: {best['participants']} participants at "
                     f"{best['config']['video_bps'] / 1e6:g} Mbit/s ({best['out_pps']:,.0f} packets/s out)")
    else:
        lines.append(f"No point had loss under {LOSS_LIMIT_PCT}%")
    usable = largest_within(results, count_late=True)
    if usable:
        lines.append(f"Largest point with lost + late (> {LATE_MS:g} ms) under {LOSS_LIMIT_PCT}%: "
                     f"{usable['participants']} participants at {usable['config']['video_bps'] / 1e6:g} Mbit/s")
    return lines


def plot(results: Sequence[dict[str, Any]], path: str, title: str = "sfu-bench") -> None:
    """PNG: server CPU (with the N·(N−1) least-squares fit) and latency
    p50/p99 against participants. Needs matplotlib (`pip install sfu[plot]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'sfu[plot]'") from exc
    rs = sorted((r for r in results if r["server_cpu_pct"] is not None), key=lambda r: r["participants"])
    fig, (ax_cpu, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = [r["participants"] for r in rs]
    ax_cpu.plot(ns, [r["server_cpu_pct"] for r in rs], "o", label="server CPU (measured)")
    fit = cpu_fit(rs)
    if fit:
        grid = list(range(min(ns), max(ns) + 1))
        ax_cpu.plot(grid, [fit["slope"] * n * (n - 1) + fit["intercept"] for n in grid], "-",
                    label=f"least squares in N(N-1), R²={fit['r2']:.3f}")
    ax_cpu.set_xlabel("participants")
    ax_cpu.set_ylabel("CPU, % of one core")
    ax_cpu.grid(alpha=0.3)
    ax_cpu.legend()
    ax_lat.plot(ns, [(r["latency_us"].get("p50") or 0) / 1000 for r in rs], "o-", label="p50")
    ax_lat.plot(ns, [(r["latency_us"].get("p99") or 0) / 1000 for r in rs], "s-", label="p99")
    ax_lat.set_xlabel("participants")
    ax_lat.set_ylabel("SFU-added latency, ms")
    ax_lat.set_yscale("log")
    ax_lat.grid(alpha=0.3)
    ax_lat.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- recordings side by side

RECORDING_HEADERS = ["Participants", "Round", "Without: worker CPU per packet", "With K: worker CPU per packet",
                     "Ratio", "Packets/s out without / with", "Worker CPU without / with",
                     "Control process CPU without / with", "Recording threads CPU", "Recorder CPU per packet",
                     "Frames written (min per rec.) / dropped", "MB written", "Loss without / with", "Other CPU"]


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.0f}%"


def _clean(r: dict[str, Any], max_other: float) -> bool:
    """A point other processes did not disturb: less than max_other % of a
    core to them and loss under the limit."""
    return (r.get("other_cpu_pct") or 0.0) < max_other and (r.get("loss_pct") or 0.0) < LOSS_LIMIT_PCT


def recording_compare_rows(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]], max_other: float = 25.0
                           ) -> tuple[list[list[Any]], dict[int, dict[str, Any]]]:
    """Rows of the recordings side-by-side table (one per round and count,
    then a mean row per count) and, per count, the mean worker CPU per
    forwarded packet without and with the recordings, their ratio, and the
    recorder's CPU."""
    rows: list[list[Any]] = []
    means: dict[int, dict[str, Any]] = {}
    by_n: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for plain, rec in pairs:
        by_n.setdefault(plain["participants"], []).append((plain, rec))
    for n, ps in sorted(by_n.items()):
        for k, (plain, rec) in enumerate(ps):
            a, b = plain.get("worker_us_per_packet"), rec.get("worker_us_per_packet")
            r = rec.get("recording") or {}
            rows.append([n, k + 1, _us(a), _us(b), f"{b / a:.3f}" if a and b else None,
                         f"{plain['out_pps']:,.0f} / {rec['out_pps']:,.0f}",
                         f"{_pct(plain.get('worker_cpu_pct'))} / {_pct(rec.get('worker_cpu_pct'))}",
                         f"{_pct(plain.get('control_cpu_pct'))} / {_pct(rec.get('control_cpu_pct'))}",
                         _pct(r.get("threads_cpu_pct")), _us(r.get("threads_us_per_packet")),
                         f"{r.get('frames_written', 0):,} ({r.get('min_frames_written', 0)}) / "
                         f"{r.get('frames_dropped', 0):,}",
                         f"{(r.get('bytes_written') or 0) / 1e6:.1f}",
                         f"{plain['loss_pct'] or 0:.3f}% / {rec['loss_pct'] or 0:.3f}%",
                         f"{plain.get('other_cpu_pct') or 0:.0f}% / {rec.get('other_cpu_pct') or 0:.0f}%"])
        ok = [(p, r) for p, r in ps if p.get("worker_us_per_packet") and r.get("worker_us_per_packet")]
        if ok:
            ma = sum(p["worker_us_per_packet"] for p, _ in ok) / len(ok)
            mb = sum(r["worker_us_per_packet"] for _, r in ok) / len(ok)
            recs = [r.get("recording") or {} for _, r in ps]

            def mean(key: str) -> Optional[float]:
                xs = [x[key] for x in recs if x.get(key) is not None]
                return sum(xs) / len(xs) if xs else None

            incl = [r["recording"]["worker_us_per_packet_incl_recordings"] for _, r in ok
                    if (r.get("recording") or {}).get("worker_us_per_packet_incl_recordings")]
            means[n] = {"without_us": ma, "with_us": mb, "ratio": mb / ma, "rounds": len(ok),
                        "round_ratios": [r["worker_us_per_packet"] / p["worker_us_per_packet"] for p, r in ok],
                        "with_us_incl_recording_packets": sum(incl) / len(incl) if incl else None,
                        "recordings": max((r.get("recordings") or 0) for _, r in ps),
                        "threads_cpu_pct": mean("threads_cpu_pct"), "threads_us_per_packet": mean("threads_us_per_packet"),
                        "control_cpu_pct_without": sum(p.get("control_cpu_pct") or 0 for p, _ in ps) / len(ps),
                        "control_cpu_pct_with": sum(r.get("control_cpu_pct") or 0 for _, r in ps) / len(ps),
                        "all_wrote_frames": all(x.get("all_wrote_frames") for x in recs)}
            # the rounds in which neither point was disturbed by other processes
            clean = [(p, r) for p, r in ok if _clean(p, max_other) and _clean(r, max_other)]
            if clean:
                ca = sum(p["worker_us_per_packet"] for p, _ in clean) / len(clean)
                cb = sum(r["worker_us_per_packet"] for _, r in clean) / len(clean)
                means[n].update(clean_rounds=len(clean), clean_without_us=ca, clean_with_us=cb, clean_ratio=cb / ca)
            rows.append([n, "mean", _us(ma), _us(mb), f"**{mb / ma:.3f}**", "", "", "",
                         _pct(means[n]["threads_cpu_pct"]), _us(means[n]["threads_us_per_packet"]),
                         "", "", "", ""])
    return rows, means


def recording_compare_markdown(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]], k: int,
                               max_other: float = 25.0) -> str:
    rows, _ = recording_compare_rows(pairs, max_other)
    return markdown_table([h.replace("With K", f"With {k}") for h in RECORDING_HEADERS], rows)


def recording_lines(results: Sequence[dict[str, Any]]) -> list[str]:
    """Per point with recordings: frames written / dropped and bytes per recording."""
    lines = []
    for r in results:
        rec = r.get("recording")
        if not rec:
            continue
        per = ", ".join(f"{p['frames_written']}/{p['frames_dropped']}/{p['bytes_written'] / 1e6:.2f} MB"
                        + (f" ({p['packets_dropped']} packets dropped by the kernel)" if p["packets_dropped"] else "")
                        + (f" ERROR {p['error']}" if p["error"] else "")
                        for p in rec["per_recording"])
        lines.append(f"N={r['participants']} round {r.get('round', '-')}: {rec['count']} recordings, "
                     f"frames written/dropped/bytes per recording: {per}; recording threads "
                     f"{_pct(rec['threads_cpu_pct'])} of a core ({_us(rec['threads_us_per_packet'])} per packet, "
                     f"{rec['packets_per_s']:,.0f} packets/s)")
    return lines
