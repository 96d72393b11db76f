"""Headless Chromium (Debian's) on the demo page: two pages join one room and
each decodes the other's video and receives its audio.

Runs in a network namespace with only `lo` (`unshare -n`), so Chromium's
candidates are 127.0.0.1 only. Needs root for the namespace, /usr/bin/chromium
and the playwright package (installed by .ci/run and the test extras).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _prerequisites() -> str | None:
    if not Path("/usr/bin/chromium").exists():
        return "Debian's chromium is not installed (.ci/run installs it with apt-get)"
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "needs root and unshare for a loopback-only network namespace"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


def test_two_demo_pages_decode_each_other():
    missing = _prerequisites()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    script = ROOT / "tests" / "browser" / "demo_pages.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "{script}" 2 3'],
        capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    for first, second in zip(result["first"], result["second"]):
        assert first["status"] and first["status"].startswith("publishing"), first
        assert len(second["viewers"]) == 1, second
        (pid, before), = first["viewers"].items()
        after = second["viewers"][pid]
        assert after["framesDecoded"] > before["framesDecoded"] > 0, (before, after)
        assert after["audioPackets"] > before["audioPackets"], (before, after)
