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
    assert {row["section"] for row in report["rows"]} == {"kernels", "model"}
    assert any(c.startswith("NUQuant") for c in cases) and any(c.startswith("LUTDequant") for c in cases)
    assert sum("I2NQ" in c for c in cases) == 2
    assert all(row["ms"] > 0 for row in report["rows"])
    assert "| section |" in (tmp_path / "gpu_bench.md").read_text()


def test_run_device_script_parses() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    result = subprocess.run([bash, "-n", str(REPO / "bench" / "gpu" / "run_device.sh")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
