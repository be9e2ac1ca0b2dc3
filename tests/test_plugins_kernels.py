"""CPU checks of the CUDA sources: nvcc compiles every kernel for sm_90, and the kernels' per-element math
(i2nq_device.cuh, run on the host by test_plugins_host_check.cu) matches the torch quantizer bit for bit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from i2nq.plugins import CSRC
from i2nq.plugins.library import find_cuda_include, find_nvcc

HARNESS = Path(__file__).with_name("test_plugins_host_check.cu")


def nvcc() -> str:
    """Path of nvcc, or skip: CI machines without the CUDA toolkit cannot compile the kernels."""
    found = find_nvcc()
    if found is None:
        pytest.skip("nvcc (CUDA toolkit) not found")
    return found


@pytest.fixture(scope="module")
def host_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host-side harness, built once."""
    exe = tmp_path_factory.mktemp("host_check") / "host_check"
    subprocess.run([nvcc(), "-std=c++17", "-O2", "-I", str(CSRC), str(HARNESS), "-o", str(exe)], check=True,
                   capture_output=True, timeout=300)
    return exe


@pytest.mark.parametrize("source", sorted(p.name for p in CSRC.glob("*.cu")))
def test_kernel_compiles_for_sm90(source: str, tmp_path: Path) -> None:
    result = subprocess.run([nvcc(), "-arch=sm_90", "-std=c++17", "-O3", "-c", str(CSRC / source),
                             "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_streaming_hints_switch(tmp_path: Path) -> None:
    """I2NQ_STREAMING_HINTS (default 1) puts the evict-first cache hints (__ldcs/__stcs: ld/st.global.cs) on the
    16-byte vector accesses; 0 builds plain ones (bench/gpu/bench_gpu.py times both). Checked in the PTX."""
    cache_ops = {}
    for hints in ("1", "0"):
        ptx = tmp_path / f"nuquant{hints}.ptx"
        result = subprocess.run([nvcc(), "-arch=sm_90", "-std=c++17", "-O3", f"-DI2NQ_STREAMING_HINTS={hints}", "-ptx",
                                 str(CSRC / "nuquant.cu"), "-o", str(ptx)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        cache_ops[hints] = set(re.findall(r"\b(ld|st)\.global\.cs\.v4", ptx.read_text()))
    assert cache_ops == {"1": {"ld", "st"}, "0": set()}


def test_torch_extension_source_compiles(tmp_path: Path) -> None:
    """torch_ops.cpp (the torch CUDA fast path) type-checks against the installed torch's C++ API. A CPU build
    of torch ships the c10/cuda headers but not one CMake-generated file, which a stub stands in for."""
    torch = pytest.importorskip("torch")
    cuda_include = find_cuda_include()
    python_include = sysconfig.get_paths()["include"]
    if shutil.which("g++") is None or cuda_include is None or not Path(python_include, "Python.h").is_file():
        pytest.skip("needs g++, the CUDA toolkit headers and the Python headers")
    torch_include = Path(torch.__file__).parent / "include"
    stub = tmp_path / "stub"
    if not (torch_include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").is_file():
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#pragma once\n")
    result = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=i2nq_ops", "-I", str(CSRC),
                             "-isystem", str(stub), "-isystem", str(torch_include), "-isystem",
                             str(torch_include / "torch" / "csrc" / "api" / "include"), "-isystem", python_include,
                             "-isystem", str(cuda_include), str(CSRC / "torch_ops.cpp")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def _tricky_inputs(levels: np.ndarray, thresholds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Levels, thresholds and their float neighbours, specials, and an odd-sized random spread."""
    dt = levels.dtype
    finfo = np.finfo(dt)
    with np.errstate(over="ignore"):
        parts = [levels, thresholds, np.nextafter(thresholds, dt.type(np.inf)),
                 np.nextafter(thresholds, dt.type(-np.inf)),
                 np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, finfo.tiny, -finfo.tiny, finfo.smallest_subnormal,
                           finfo.max, -finfo.max], dt),
                 (rng.standard_normal(4099) * float(np.abs(levels).max() + 1)).astype(dt)]
    return np.concatenate(parts)


LEVEL_SETS = {
    "k1": np.array([0.25]),
    "k2": np.array([-1.0, 1.0]),
    "k3_ties": np.array([-0.5, 0.0, 0.0]),
    "k8": np.linspace(-2, 2, 8) ** 3,
    "k9": np.sort(np.random.default_rng(9).standard_normal(9)),
    "k16_dup": np.sort(np.repeat(np.random.default_rng(16).standard_normal(8), 2)),
    "k17": np.sort(np.random.default_rng(17).standard_normal(17)),
    "k255": np.sort(np.random.default_rng(255).standard_normal(255)),
    "k256": np.sort(np.random.default_rng(256).standard_normal(256)) * 1e3,
    "subnormal": np.array([0.0, 1.0, 3.0, 5.0, 7.0]) * 2.0 ** -149,
}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(LEVEL_SETS))
def test_nuquant_codes_match_torch(host_check: Path, tmp_path: Path, dtype: str, name: str) -> None:
    torch = pytest.importorskip("torch")
    from i2nq.quant import codes, thresholds

    levels = LEVEL_SETS[name].astype(dtype)
    if dtype == "float16" and name == "subnormal":
        levels = (np.array([0.0, 1.0, 3.0, 5.0, 7.0]) * 2.0 ** -24).astype(dtype)
    lt = torch.from_numpy(levels)
    x = _tricky_inputs(levels, thresholds(lt).numpy(), np.random.default_rng(len(levels)))
    (tmp_path / "levels.bin").write_bytes(levels.tobytes())
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    subprocess.run([str(host_check), "nuquant", "f16" if dtype == "float16" else "f32", str(tmp_path / "levels.bin"),
                    str(tmp_path / "x.bin"), str(tmp_path / "out.bin")], check=True, timeout=60)
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.int32)
    want = codes(torch.from_numpy(x), lt).numpy()
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} codes differ, e.g. x={x[bad[:5]]} got={got[bad[:5]]} want={want[bad[:5]]}"


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1001])
def test_unpacking_matches_pack_codes(host_check: Path, tmp_path: Path, bits: int, numel: int) -> None:
    pytest.importorskip("torch")  # i2nq.quant needs it
    from i2nq.quant import pack_codes

    codes = np.random.default_rng(bits * numel).integers(0, 1 << bits, numel).astype(np.uint8)
    (tmp_path / "codes.bin").write_bytes(pack_codes(codes, bits).tobytes())
    subprocess.run([str(host_check), "unpack", str(bits), str(numel), str(tmp_path / "codes.bin"),
                    str(tmp_path / "out.bin")], check=True, timeout=60)
    np.testing.assert_array_equal(np.frombuffer((tmp_path / "out.bin").read_bytes(), np.int32), codes)


@pytest.mark.parametrize("inner,channels,first,stride", [(9, 64, 0, 3), (1, 5, 2, 7), (3, 7, 5, 1024), (1000, 3, 1, 13),
                                                          (11, 1, 4, 9)])
def test_channel_cursor_matches_division(host_check: Path, inner: int, channels: int, first: int, stride: int) -> None:
    """The per-channel LUTDequant tracks (i // inner) % channels incrementally along a grid-stride walk."""
    groups = first + 40 * stride
    result = subprocess.run([str(host_check), "cursor", str(inner), str(channels), str(first), str(stride),
                             str(groups)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
