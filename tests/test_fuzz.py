"""The C core's fuzz targets (sfu/_fastpath/fuzz/), built with ASan+UBSan
(any memory error or undefined behaviour aborts) and run briefly: about a
million inputs in all, enough to catch a regression. docs/fuzzing.md has
the command for long runs and for libFuzzer."""

from __future__ import annotations

import glob
import re
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "sfu" / "_fastpath" / "src"
FUZZ = ROOT / "sfu" / "_fastpath" / "fuzz"
CORE = sorted(p.name for p in SRC.glob("*.c"))  # every unit of the engine
# inputs per target in the suite (~1 M in all)
RUNS = {"rtp": 400_000, "rtcp": 400_000, "engine": 150_000, "streams": 50_000, "srtp": 50_000,
        "rtcp_xr": 100_000, "vp8": 100_000, "gcc": 200_000}


def build(out: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the fuzz targets")
    exe = out / "sfu-fuzz"
    cmd = ["gcc", "-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           "-fno-omit-frame-pointer", "-Wall", "-Werror", "-Wno-unused-function", f"-I{SRC}",
           str(FUZZ / "targets.c"), str(FUZZ / "target_rtcp_xr.c"), str(FUZZ / "target_gcc.c"), str(FUZZ / "target_vp8.c"), str(FUZZ / "driver.c"), *(str(SRC / c) for c in CORE), "-lpthread", "-lcrypto",
           "-o", str(exe)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return exe


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("target", list(RUNS))
def test_fuzz_target_runs_clean_under_asan_and_ubsan(fuzzer, target):
    seeds = sorted(glob.glob(str(ROOT / "tests" / "fixtures" / "*.bin")))
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=98", SFU_FUZZ_STATS="1")
    run = subprocess.run([str(fuzzer), target, str(RUNS[target]), "12345", *seeds], capture_output=True,
                         text=True, timeout=540, env=env)
    report = run.stdout[-3000:] + run.stderr[-3000:]
    assert "AddressSanitizer" not in report and "runtime error" not in report, report
    assert run.returncode == 0, report
    assert run.stdout.startswith(f"{target} {RUNS[target]} inputs"), report
    if target == "engine":
        # the inputs reach the packet path (forwarding), not only the parsers' refusals


        queued = re.search(r"queued to send \(all engines\) (\d+)", run.stderr)
        assert queued and int(queued.group(1)) > 1000, run.stderr
    if target == "vp8":
        # the replayed real descriptors reach both forwarding decisions, not only refusals
        st = re.search(r"vp8: parsed \d+ rewritten (\d+) dropped (\d+); vp9: parsed \d+ forwarded (\d+) "
                       r"dropped (\d+) markers (\d+)", run.stderr)
        assert st and all(int(x) > 1000 for x in st.groups()), run.stderr
    if target == "srtp":
        # protected inputs come back intact from the inbound context, not only refusals
        trips = re.search(r"srtp: round trips (\d+)", run.stderr)
        assert trips and int(trips.group(1)) > 1000, run.stderr


def test_the_fuzzer_catches_an_out_of_bounds_read(tmp_path):
    """The harness itself can fail: a target that reads one byte past its
    input is reported by ASan."""
    bad = tmp_path / "bad.c"
    bad.write_text(
        '#include "targets.h"\n'
        "#include <stdlib.h>\n"
        "volatile int sink;\n"
        "int sfu_fuzz_rtp(const uint8_t *d, size_t n) { if (n > 3 && d[0] == 0x80) sink = d[n]; return 0; }\n"
        "int sfu_fuzz_rtcp(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n"
        "int sfu_fuzz_streams(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n"
        "int sfu_fuzz_engine(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n"
        "const sfu_fuzz_target_t sfu_fuzz_targets[] = {{\"rtp\", sfu_fuzz_rtp}, {0, 0}};\n"
        "const sfu_fuzz_target_t *sfu_fuzz_find(const char *name) { (void)name; return &sfu_fuzz_targets[0]; }\n"
        "void sfu_fuzz_cleanup(void) {}\n")
    exe = tmp_path / "bad-fuzz"
    run = subprocess.run(["gcc", "-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined", f"-I{FUZZ}",
                          str(bad), str(FUZZ / "driver.c"), "-o", str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    seeds = sorted(glob.glob(str(ROOT / "tests" / "fixtures" / "rtp_*.bin")))
    run = subprocess.run([str(exe), "rtp", "10000", "1", *seeds], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, ASAN_OPTIONS="exitcode=99"))
    assert run.returncode == 99 and "heap-buffer-overflow" in run.stderr, run.stderr[-2000:]
