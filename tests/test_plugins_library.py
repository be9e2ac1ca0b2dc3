"""The TensorRT plugin library: CMake build against TensorRT headers (when present), loading it the way
trtexec does, and the one-line errors for missing or wrong libraries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from i2nq.errors import I2NQError
from i2nq.plugins import CSRC
from i2nq.plugins.library import (build_plugin, check_plugin, find_cuda_include, find_nvcc, find_plugin,
                                  find_tensorrt_root, plugin_info, plugin_version)

REPO = Path(__file__).resolve().parents[1]
TRT_CHECK = Path(__file__).with_name("test_plugins_trt_check.cpp")


@pytest.fixture(scope="module")
def tensorrt_root() -> Path:
    """A TensorRT SDK (or just its include/): $TensorRT_ROOT, a system install, or third_party/TensorRT."""
    for candidate in (os.environ.get("TensorRT_ROOT"), REPO / "third_party" / "TensorRT", None):
        try:
            return find_tensorrt_root(candidate)
        except I2NQError:
            continue
    pytest.skip("TensorRT headers not found (set TensorRT_ROOT to a TensorRT SDK to compile-check the plugin "
                "host code; CI machines do not have them)")


@pytest.fixture(scope="module")
def plugin_library(tensorrt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    if find_nvcc() is None:
        pytest.skip("nvcc (CUDA toolkit) not found")
    out = tmp_path_factory.mktemp("plugin")
    return build_plugin(tensorrt_root, out / "libi2nq_trt.so", out / "build", cuda_archs="90", jobs=2)


@pytest.fixture(scope="module")
def cuda_include() -> Path:
    found = find_cuda_include()
    if found is None:
        pytest.skip("CUDA toolkit headers not found (set CUDA_HOME)")
    return found


def _trt_check(tensorrt_root: Path, cuda_include: Path, out: Path, *flags: str) -> Path:
    """tests/test_plugins_trt_check.cpp, built with `flags`."""
    exe = out / "trt_check"
    subprocess.run(["g++", "-std=c++17", *flags, "-isystem", str(tensorrt_root / "include"), "-isystem",
                    str(cuda_include), str(TRT_CHECK), "-ldl", "-pthread", "-o", str(exe)], check=True, timeout=300)
    return exe


def test_plugin_builds_and_registers_like_trtexec(plugin_library: Path, tensorrt_root: Path, cuda_include: Path,
                                                  tmp_path: Path) -> None:
    """dlopen + setLoggerFinder + getCreators, then the build-time logic and field serialization of both
    plugins (tests/test_plugins_trt_check.cpp; no TensorRT runtime or GPU involved)."""
    exe = _trt_check(tensorrt_root, cuda_include, tmp_path)
    result = subprocess.run([str(exe), str(plugin_library)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stdout + result.stderr
    assert plugin_version(plugin_library) == "1"
    assert check_plugin(plugin_library) == plugin_library
    info = plugin_info(plugin_library)
    assert info.cuda_archs == ("90",)  # what the fixture asked CMake for
    assert check_plugin(plugin_library, info.tensorrt) == plugin_library
    other_major = f"{int(info.tensorrt.split('.')[0]) + 1}.0.0"
    with pytest.raises(I2NQError, match=f"built against TensorRT {info.tensorrt} headers; this is TensorRT {other_major}"):
        check_plugin(plugin_library, other_major)


def test_plugin_enqueue_with_cpu_emulated_kernels(tensorrt_root: Path, cuda_include: Path, emu_flags,
                                                   tmp_path: Path) -> None:
    """The plugin sources with the kernels built for the CPU (tests/emu/cuda_emu.h), so that both plugins'
    enqueue runs on host buffers: dtype mapping, per-channel axis, INT8 and INT32 codes, against a reference."""
    library = tmp_path / "libi2nq_trt_emu.so"
    sources = sorted(CSRC.glob("*.cu")) + sorted(CSRC.glob("trt_*.cpp"))
    flags = emu_flags("asan", CSRC)
    subprocess.run(["g++", *flags, "-shared", "-fPIC", "-isystem", str(tensorrt_root / "include"), "-x", "c++",
                    *map(str, sources), "-pthread", "-o", str(library)], check=True, timeout=600)
    exe = _trt_check(tensorrt_root, cuda_include, tmp_path, *(f for f in flags if "sanitize" in f))
    result = subprocess.run([str(exe), str(library), "--enqueue"], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stdout + result.stderr[-4000:]


def test_missing_named_plugin_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(I2NQError, match="build-plugin"):
        find_plugin(tmp_path / "nope.so")
    monkeypatch.setenv("I2NQ_PLUGIN", str(tmp_path / "nope.so"))
    with pytest.raises(I2NQError, match="not found"):
        find_plugin()


def test_nothing_built_means_no_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("I2NQ_PLUGIN", raising=False)
    monkeypatch.setenv("I2NQ_CACHE_DIR", str(tmp_path))
    assert find_plugin() is None


def test_a_file_that_is_not_a_library_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "libi2nq_trt.so"
    fake.write_bytes(b"not an ELF file")
    with pytest.raises(I2NQError, match="cannot load"):
        check_plugin(fake)


def _shared_library(tmp_path: Path, name: str, source: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    src, lib = tmp_path / f"{name}.c", tmp_path / f"{name}.so"  # distinct paths: dlopen caches by path
    src.write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True, timeout=60)
    return lib


def test_other_libraries_and_versions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(I2NQError, match="not an i2nq plugin"):
        check_plugin(_shared_library(tmp_path, "other", "int unrelated(void) { return 0; }\n"))
    old = _shared_library(tmp_path, "old", 'const char* i2nqPluginVersion(void) { return "0"; }\n')
    with pytest.raises(I2NQError, match="version 0.*rebuild"):
        check_plugin(old)


def test_build_needs_tensorrt_headers(tmp_path: Path) -> None:
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    with pytest.raises(I2NQError, match="--tensorrt-root"):
        build_plugin(tmp_path / "no-sdk")
