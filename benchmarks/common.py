"""Helpers shared by the benchmark scripts: tables, machine facts, RTP packets."""

from __future__ import annotations

import datetime
import json
import os
import platform
import struct
import subprocess
from typing import Any, Iterable, Sequence


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats keep the precision given."""
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in text, as {header: cell} (tests)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    if len(lines) < 2:
        return []
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) == len(headers):
            rows.append(dict(zip(headers, cells)))
    return rows


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "L2 cache", "L3 cache", "Hypervisor vendor"):
                info[k.strip()] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["loadavg"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    return info


def rtp_packet(size: int, *, pt: int = 96, seq: int = 1, ts: int = 1000, ssrc: int = 0x11111111,
               marker: bool = False, extensions: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """An RTP packet of exactly `size` bytes, with one-byte header extensions."""
    first = 0x80
    ext = b""
    if extensions:
        first |= 0x10
        body = b"".join(bytes([(i << 4) | (len(d) - 1)]) + d for i, d in extensions)
        body += b"\0" * (-len(body) % 4)
        ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc) + ext
    if size < len(header):
        raise ValueError("size smaller than the header")
    return header + bytes((i * 7) & 0xFF for i in range(size - len(header)))


def dump_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)
