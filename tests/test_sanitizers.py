"""The packet-level suites again, against an engine built with AddressSanitizer
and UndefinedBehaviorSanitizer: any out-of-bounds read or undefined behaviour
on hostile input fails this test with the sanitizer's report.

The engine is rebuilt in a temporary copy of the sources (the in-place build
used by the rest of the suite is untouched) and the suites run in a child
Python with the sanitizer runtimes preloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITES = ["tests/test_rtp.py", "tests/test_rtcp.py", "tests/test_seqmgr.py", "tests/test_differential.py",
          "tests/test_nack.py", "tests/test_rtx_buffer.py", "tests/test_rtcp_build.py", "tests/test_remb.py",
          "tests/test_twcc.py", "tests/test_rtp_stats.py", "tests/test_keyframe_detection.py",
          "tests/test_engine_core.py", "tests/test_rtp_listener.py", "tests/test_engine_rtt.py",
          "tests/test_rtcp_pli_fir.py", "tests/test_srtp_unit.py",
          # the real I/O thread against control loops (re-key, pause/resume, close) with media flowing
          "tests/test_srtp_plain.py"]


def _runtime(name: str) -> str | None:
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return out if out and os.path.isabs(out) and os.path.exists(out) else None


@pytest.mark.timeout(1500)  # a rebuild plus the suites, slower on a busy machine
def test_packet_suites_clean_under_asan_and_ubsan(tmp_path):
    asan, ubsan = _runtime("libasan.so"), _runtime("libubsan.so")
    if not (asan and ubsan):
        pytest.fail("gcc's libasan/libubsan runtimes are missing; install gcc's sanitizer runtimes")
    work = tmp_path / "src"
    shutil.copytree(ROOT / "sfu", work / "sfu", ignore=shutil.ignore_patterns("*.so", "__pycache__", "_engine.c", "_testhooks.c"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", work)
    setup = (ROOT / "setup.py").read_text()
    (work / "setup.py").write_text(setup)
    if (ROOT / "benchmarks").exists():
        shutil.copytree(ROOT / "benchmarks", work / "benchmarks", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = dict(os.environ, SFU_SANITIZE="1")
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    env.update(
        LD_PRELOAD=f"{asan}:{ubsan}",
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=99",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=98",
        PYTHONPATH=str(work),
    )
    suites = [s for s in SUITES if (work / s).exists()]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *suites],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    report = run.stdout[-4000:] + run.stderr[-4000:]
    assert "AddressSanitizer" not in report and "runtime error" not in report, report
    assert run.returncode == 0, report
    print(run.stdout.strip().splitlines()[-1])
