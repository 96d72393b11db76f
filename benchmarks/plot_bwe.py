"""PNG of a bandwidth-estimation run (tests/browser/msc_pages.py mode ``bwe``):
both viewers' decoded width, viewer B's received bitrate against the
bottleneck and the SFU's estimate, and B's losses, over time, the limited
phase shaded.

    python tests/browser/msc_pages.py bwe > /tmp/bwe.json   # in a netns with only lo
    python -m benchmarks.plot_bwe /tmp/bwe.json docs/bwe.png

Needs matplotlib (``pip install 'sfu[plot]'``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: window of the bitrates (s): the samples are 250 ms apart
RATE_WINDOW_S = 1.0


def _rate(samples: list[dict[str, Any]], value, window: float = RATE_WINDOW_S) -> tuple[list[float], list[float]]:
    """kbit/s of a byte counter (``value(sample)``) over ``window``, at each sample."""
    ts, rates = [], []
    j = 0
    for i, s in enumerate(samples):
        while samples[j]["t"] < s["t"] - window:
            j += 1
        if i == j:
            continue
        a, b = value(samples[j]), value(s)
        if a is None or b is None:
            continue
        ts.append(s["t"])
        rates.append((b - a) * 8 / (s["t"] - samples[j]["t"]) / 1000)
    return ts, rates


def plot(result: dict[str, Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("the plot needs matplotlib: pip install 'sfu[plot]'") from exc
    samples = result["samples"]
    on, off = result["limit_on_s"], result["limit_off_s"]
    t = [s["t"] for s in samples]
    fig, (ax_w, ax_r, ax_l) = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True,
                                          gridspec_kw={"height_ratios": [2, 2, 1.3]})
    for ax in (ax_w, ax_r, ax_l):
        ax.axvspan(on, off, color="tab:red", alpha=0.08, lw=0)
        ax.grid(alpha=0.3)

    for name, style in (("A", "-"), ("B", "-")):
        ax_w.step(t, [s[name]["page"]["frameWidth"] or 0 for s in samples], style, where="post",
                  label=f"viewer {name} ({'direct' if name == 'A' else 'through the bottleneck'})")
    top = result.get("camera_width") or 960
    ax_w.set_yticks([top // 4, top // 2, top])
    ax_w.set_ylim(0, top * 1.12)
    ax_w.set_ylabel("decoded width (px)")
    ax_w.legend(loc="lower left")
    ax_w.set_title(f"{result['rate_kbps']:.0f} kbit/s toward viewer B from {on:g} s to {off:g} s "
                   f"(queue {result.get('queue_ms', 200):.0f} ms, shaded)")

    ax_r.plot(*_rate(samples, lambda s: s["B"]["page"]["bytesReceived"]), label="B: video received (getStats)")
    ax_r.plot(*_rate(samples, lambda s: s["relay"]["bytes"]), ":", label="B: all bytes through the relay")
    est = [(s["t"], s[n]["server"].get("transport", {}).get("availableOutgoingBitrate")) for s in samples
           for n in ("B",)]
    est = [(x, y / 1000) for x, y in est if y is not None]
    if est:
        ax_r.plot([x for x, _ in est], [y for _, y in est], "--", label="SFU's estimate toward B")
    ax_r.plot(*_rate(samples, lambda s: s["A"]["page"]["bytesReceived"]), alpha=0.5, label="A: video received")
    ax_r.hlines(result["rate_kbps"], on, off, colors="tab:red", linestyles="-.", label="bottleneck rate")
    ax_r.set_ylabel("kbit/s")
    ax_r.set_ylim(bottom=0)
    ax_r.legend(loc="upper left", fontsize="small")

    lost0 = samples[0]["B"]["page"]["packetsLost"] or 0
    drops0 = samples[0]["relay"]["queued_drops"]
    ax_l.step(t, [(s["B"]["page"]["packetsLost"] or 0) - lost0 for s in samples], where="post",
              label="B: packetsLost (getStats)")
    ax_l.step(t, [s["relay"]["queued_drops"] - drops0 for s in samples], ":", where="post",
              label="relay: queue drops")
    ax_l.set_ylabel("packets (cumulative)")
    ax_l.set_xlabel("time (s)")
    ax_l.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m benchmarks.plot_bwe RUN.json OUT.png")
    with open(argv[0]) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    plot(json.loads(lines[-1]), argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
