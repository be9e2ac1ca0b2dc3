"""The GPU device script must work the first time a GPU is lent (15 device minutes per session): its CPU dry
run exercises every code path of bench/gpu/bench_gpu.py, and run_device.sh must at least parse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_gpu_dry_run_covers_every_section(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu" / "bench_gpu.py"), "--dry-run", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["env"]["check_failures"] == []
    cases = [row["case"] for row in report["rows"]]
    assert {row["section"] for row in report["rows"]} == {"kernels", "model", "hints"}
    assert any(c.startswith("NUQuant") for c in cases) and any(c.startswith("LUTDequant") for c in cases)
    assert sum("I2NQ" in c for c in cases) == 2
    hints = [row for row in report["rows"] if row["section"] == "hints"]
    assert len(hints) == 8 and all(row["ms_off"] > 0 and row["ratio"] > 0 for row in hints)
    assert all(row["ms"] > 0 for row in report["rows"])
    assert report["builds"] == {}  # the dry run builds nothing
    text = (tmp_path / "gpu_bench.md").read_text()
    assert "| section |" in text and "not measured: tensorrt-flavor" in text


def test_bench_gpu_extra_builds_run_as_subprocesses(tmp_path: Path) -> None:
    """The machinery of the hints/arch builds: a subprocess per build, its result collected (without CUDA the
    extension cannot be built, which it reports)."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(REPO / "bench" / "gpu"))
    try:
        import bench_gpu
    finally:
        sys.path.pop(0)
    builds = bench_gpu.finish_builds(bench_gpu.start_builds(tmp_path, {"hints"}), tmp_path, timeout=300)
    if builds["nohints"]["ok"]:
        pytest.skip("CUDA is available here: the build succeeded")
    assert builds["nohints"]["error"] == "torch has no CUDA device here" and builds["nohints"]["rc"] == 1
    assert "| nohints | NO |" in bench_gpu.builds_text(builds)


def test_run_device_script_parses() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    result = subprocess.run([bash, "-n", str(REPO / "bench" / "gpu" / "run_device.sh")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
