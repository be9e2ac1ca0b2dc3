"""Which CUDA architectures the plugin library's CMake build compiles for when none is given
(i2nq/plugins/cuda_arch.cmake): configures the real CMakeLists.txt (no build, no TensorRT: an empty
NvInferRuntime.h stands in for the SDK) and reads the nvcc flags CMake generates."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from i2nq.plugins import PLUGINS
from i2nq.plugins.library import find_nvcc

DOCUMENTED = {"80", "86", "89", "90", "100", "120"}


def _supported(nvcc: str) -> set[str]:
    result = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=60)
    return set(re.findall(r"compute_(\d+)", result.stdout))


def _configure(build: Path, *args: str, path_prefix: Path | None = None) -> tuple[dict[str, set[str]], str]:
    """(per-source {'sass': {...}, 'ptx': {...}} of the .cu files, CMake's status line about architectures)."""
    env = dict(os.environ)
    env.pop("CUDAARCHS", None)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["cmake", *args, str(build)] if (build / "CMakeCache.txt").is_file() else
                            ["cmake", "-S", str(PLUGINS), "-B", str(build), *args], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = next((line for line in result.stdout.splitlines() if "i2nq: CUDA architectures" in line), "")
    flags = {"sass": set(), "ptx": set()}
    for entry in json.loads((build / "compile_commands.json").read_text()):
        if entry["file"].endswith(".cu"):
            for arch, codes in re.findall(r"arch=compute_(\d+),code=\[([^\]]*)\]", entry["command"]):
                flags["sass"] |= {arch} if f"sm_{arch}" in codes else set()
                flags["ptx"] |= {arch} if f"compute_{arch}" in codes else set()
    return flags, status


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    nvcc = find_nvcc()
    if shutil.which("cmake") is None or nvcc is None:
        pytest.skip("needs cmake and nvcc")
    root = tmp_path_factory.mktemp("cmake_arch")
    (root / "sdk" / "include").mkdir(parents=True)
    (root / "sdk" / "include" / "NvInferRuntime.h").write_text("// stand-in: configure only\n")
    args = [f"-DTensorRT_ROOT={root / 'sdk'}", f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"]
    return root, args


def test_default_architectures_follow_the_gpu_else_the_documented_list(configured) -> None:
    """No GPU here (no nvidia-smi, no native architecture): the documented list where nvcc supports it, SASS
    for each and PTX for the newest; with a GPU visible (a stand-in nvidia-smi reporting 9.0): sm_90 only; a
    user's choice wins and survives a reconfigure; clearing it brings the default back."""
    root, args = configured
    if shutil.which("nvidia-smi") or Path("/dev/nvidiactl").exists():
        pytest.skip("a GPU is visible here: the no-GPU default cannot be checked")
    build = root / "build"
    supported = _supported(find_nvcc())
    expected = DOCUMENTED & supported
    assert {"80", "86", "89", "90"} <= expected, "this nvcc lacks an architecture every CUDA 12/13 nvcc has"
    newest = max(expected, key=int)

    flags, status = _configure(build, *args)
    assert flags == {"sass": expected, "ptx": {newest}} and "(list)" in status
    assert "75" not in flags["sass"]  # nvcc 13's own default, which the old CMakeLists kept

    fake = root / "fake-bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 9.0\n")
    (fake / "nvidia-smi").chmod(0o755)
    flags, status = _configure(build, path_prefix=fake)  # a reconfigure: the default is redone
    assert flags == {"sass": {"90"}, "ptx": {"90"}} and "(nvidia-smi)" in status

    flags, status = _configure(build, "-DCMAKE_CUDA_ARCHITECTURES=86")
    assert flags == {"sass": {"86"}, "ptx": {"86"}} and "(user)" in status
    flags, status = _configure(build, path_prefix=fake)  # the user's choice is kept, GPU or not
    assert flags["sass"] == {"86"} and "(user)" in status

    flags, status = _configure(build, "-UCMAKE_CUDA_ARCHITECTURES")  # what build-plugin passes without --cuda-arch
    assert flags == {"sass": expected, "ptx": {newest}} and "(list)" in status
    commands = json.loads((build / "compile_commands.json").read_text())
    entry = next(c for c in commands if c["file"].endswith("trt_entry.cpp"))
    assert re.search(r'I2NQ_CUDA_ARCHS=\\?"[0-9a-z,-]*' + newest, entry["command"]), entry["command"]


def test_default_architecture_on_a_gpu_machine(configured) -> None:
    """Where a GPU is visible (bench/gpu/run_device.sh runs this): the default is exactly this machine's GPU."""
    root, args = configured
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no nvidia-smi: no GPU visible here")
    query = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=60)
    gpus = {cap.replace(".", "") for cap in re.findall(r"\d+\.\d+", query.stdout)}
    if query.returncode != 0 or not gpus:
        pytest.skip("nvidia-smi reports no compute capability")
    flags, status = _configure(root / "gpu-build", *args)
    assert flags["sass"] == gpus & _supported(find_nvcc()) and re.search(r"\((native|nvidia-smi)\)", status), status
