"""Smoke runs of the benchmark scripts, so that they do not rot.

`bench_core --quick` and `bench_forward --quick` (3 participants at about
500 packets/s in, ~1,000 out, for 2 s) run as the README tells; the test
checks that they print parseable tables, that packets were forwarded and
that nothing was lost at this low rate. The figures themselves are not
asserted: they are benchmarks, see docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.common import parse_markdown_table  # noqa: E402


def run_script(module: str, *args: str, timeout: float = 240) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.timeout(300)  # a busy machine: the scripts wait and run slower
def test_bench_core_quick(tmp_path):
    out_json = tmp_path / "core.json"
    out = run_script("benchmarks.bench_core", "--quick", "--json", str(out_json))
    rows = parse_markdown_table(out)
    assert {r["consumers"] for r in rows} >= {"1", "10", "49"}
    for r in rows:
        per_input = float(r["ns/input packet"])
        assert 0 < per_input < 1e6
        if r["consumers"] != "0":
            per_consumer = float(r["ns/packet/consumer"])
            assert 0 < per_consumer < 1e5
            assert r["< 150 ns"] in ("yes", "NO")
    data = json.loads(out_json.read_text())
    assert any(x["ext_remap"] for x in data["results"])
    assert all(x["ns_per_input"] > 0 for x in data["results"])


@pytest.mark.timeout(300)  # a busy machine: the scripts wait and run slower
def test_bench_forward_quick(tmp_path):
    out_json = tmp_path / "forward.json"
    out = run_script("benchmarks.bench_forward", "--quick", "--json", str(out_json))
    rows = parse_markdown_table(out)
    assert rows and rows[0]["N"] == "3"
    assert float(rows[0]["delivered out pps"]) > 0
    # loss and lateness are figures of the machine's load (the table prints
    # them); a smoke test bounds them loosely, it does not time the machine
    assert float(rows[0]["lost %"]) < 2.0
    data = json.loads(out_json.read_text())
    for r in data["results"] + [data["zero_loss"]]:
        assert r["participants"] == 3
        assert r["sent"] > 0 and r["received_out"] > 0
        # every participant gets the audio and video of the two others
        assert r["streams"] == r["streams_expected"] == 12
        assert r["received_out"] >= 0.98 * r["expected_out"], "more than 2% lost at ~1,000 packets/s"
        assert r["sfu_tx"] >= r["received_out"]
        assert not r["sfu_drops"]
        assert r["latency_us"]["p50"] is not None and r["latency_us"]["p50"] >= 0
        assert r["worker_cpu_pct"] is not None and r["worker_cpu_pct"] >= 0


@pytest.mark.parametrize("module", ["benchmarks.bench_srtp", "benchmarks.bench_forward", "benchmarks.bench_core"])
def test_scripts_have_help(module):
    assert "--quick" in run_script(module, "--help", timeout=30)
