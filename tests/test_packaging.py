"""Packaging: the compiled engine is the only runtime path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_without_compiled_engine_says_how_to_build_it(tmp_path):
    shutil.copytree(ROOT / "sfu", tmp_path / "sfu", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    run = subprocess.run([sys.executable, "-P", "-c", "import sfu"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode != 0
    assert "compiled engine (sfu._fastpath._engine) is not built" in run.stderr
    assert "pip install" in run.stderr and "build_ext --inplace" in run.stderr


def test_engine_is_compiled_code():
    import sfu._fastpath._engine as engine

    assert engine.__file__.endswith(".so")


def test_production_engine_exports_no_test_or_benchmark_hooks():
    """The sans-IO driver, the C units' test wrappers and the benchmark loops
    live in sfu._fastpath._testhooks; the module the worker imports has none
    of them, and no production module imports the hooks."""
    import sfu._fastpath._engine as engine
    import sfu._fastpath._testhooks as hooks

    for name in ("parse_rtp", "map_extensions", "SeqManager", "NackGenerator", "RembAggregator",
                 "bench_srtp_direct", "rtcp_build_nack", "SansIOEngine"):
        assert not hasattr(engine, name), name
        assert hasattr(hooks, name), name
    for method in ("receive", "take_outbox", "tick", "bench_receive", "request_keyframe"):
        assert not hasattr(engine.Engine, method), method
        assert hasattr(hooks.SansIOEngine, method), method
    for path in list((ROOT / "sfu").rglob("*.py")) + list((ROOT / "signaling").rglob("*.py")):
        assert "_testhooks" not in path.read_text(), path
