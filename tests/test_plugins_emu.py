"""The real CUDA kernels (nuquant.cu, lut_dequant.cu), built for the CPU with tests/emu/cuda_emu.h and run
without a GPU: every output element against the torch / numpy reference, bit for bit, on odd sizes and
misaligned pointers, with AddressSanitizer (out-of-bounds reads), guard bytes (out-of-bounds writes), an
all-ones output poison (elements never written) and ThreadSanitizer (shared-memory races).

The grid is capped at a few blocks (I2NQ_MAX_BLOCKS) so that the grid-stride loops take several turns
on small inputs. What this cannot show: speed, and anything that only real hardware does (the 16-byte
vector instructions themselves, cache hints, the fp16 unit); bench/gpu/run_device.sh covers those."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from i2nq.plugins import CSRC

EMU = Path(__file__).with_name("emu")
SANITIZERS = ("asan", "tsan")


def _build(emu_flags, out: Path, sanitizer: str, csrc: Path = CSRC) -> Path:
    """kernels_emu.cpp and the kernels in `csrc`, built for the CPU with `sanitizer`."""
    exe = out / f"kernels_emu_{sanitizer}"
    cmd = ["g++", *emu_flags(sanitizer, csrc), "-x", "c++", str(csrc / "nuquant.cu"), str(csrc / "lut_dequant.cu"),
           "-x", "none", str(EMU / "kernels_emu.cpp"), "-pthread", "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return exe


@pytest.fixture(scope="module")
def emulators(emu_flags, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("kernels_emu")
    return {name: _build(emu_flags, out, name) for name in SANITIZERS}


def _run(exe: Path, *args: object) -> None:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               TSAN_OPTIONS="halt_on_error=1:exitcode=66")
    result = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-6000:]}"


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def _mismatch(got: np.ndarray, want: np.ndarray) -> str:
    bad = np.flatnonzero(_bits(got) != _bits(want))
    return f"{bad.size} of {want.size} elements differ, first at {bad[:5]}: got {got[bad[:5]]}, want {want[bad[:5]]}"


LEVELS = {
    "k1": np.array([0.25]),
    "k3_ties": np.array([-0.5, 0.0, 0.0]),
    "k16": np.sort(np.random.default_rng(16).standard_normal(16)),
    "k256": np.sort(np.random.default_rng(256).standard_normal(256)) * 1e3,
}
# (x offset, y offset) in elements: aligned, equally misaligned (vector body with a scalar head), unequally
# misaligned (scalar path).
LAYOUTS = {"aligned": (0, 0), "same_misalign": (1, 1), "different": (0, 3)}


@pytest.mark.parametrize("n", [1, 13, 20011])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(LEVELS))
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nuquant_kernel_matches_reference(emulators: dict[str, Path], tmp_path: Path, dtype: str, name: str,
                                          layout: str, n: int) -> None:
    torch = pytest.importorskip("torch")
    from i2nq.quant import nuquant_ref, thresholds

    levels = LEVELS[name].astype(dtype)
    rng = np.random.default_rng(n)
    spread = float(np.abs(levels).max()) + 1.0
    x = (rng.standard_normal(n) * spread).astype(dtype)
    # Thresholds, levels and specials at random places: the tie rule and NaN must hold on every path.
    t = thresholds(torch.from_numpy(levels)).numpy()
    specials = np.concatenate([t, levels, np.array([np.nan, np.inf, -np.inf, -0.0], dtype)])
    x[rng.integers(0, n, min(n, specials.size))] = specials[: min(n, specials.size)]
    (tmp_path / "levels.bin").write_bytes(levels.tobytes())
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    _run(emulators["asan"], "nuquant", "f16" if dtype == "float16" else "f32", tmp_path / "levels.bin",
         tmp_path / "x.bin", tmp_path / "y.bin", *LAYOUTS[layout])
    got = np.frombuffer((tmp_path / "y.bin").read_bytes(), dtype)
    want = nuquant_ref(torch.from_numpy(x), torch.from_numpy(levels)).numpy()
    assert np.array_equal(_bits(got), _bits(want)), _mismatch(got, want)


def _lut_reference(codes: np.ndarray, levels: np.ndarray, inner: int) -> np.ndarray:
    channel = (np.arange(codes.size) // inner) % levels.shape[0]
    return levels[channel, codes]


# (weight shape, per-channel axis or None, levels per codebook): per-tensor; per-output-channel with the
# table staged in shared memory; per-input-channel (inner = kh*kw); a table too large to stage (64 KiB fp32).
LUT_CASES = {
    "per_tensor": ((7, 5, 3, 3), None, 16),
    "out_channel": ((64, 16, 3, 3), 0, 16),
    "in_channel": ((5, 11, 3, 3), 1, 8),
    "large_table": ((64, 3, 3, 3), 0, 256),
}


@pytest.mark.parametrize("stride", [1, 4])
@pytest.mark.parametrize("offsets", [(0, 0), (1, 1)])
@pytest.mark.parametrize("case", sorted(LUT_CASES))
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_lut_dequant_kernel_matches_reference(emulators: dict[str, Path], tmp_path: Path, dtype: str, bits: int,
                                              case: str, offsets: tuple[int, int], stride: int) -> None:
    pytest.importorskip("torch")  # i2nq.quant imports it
    from i2nq.quant import pack_codes

    shape, axis, k = LUT_CASES[case]
    k = min(k, 1 << bits)
    channels = 1 if axis is None else shape[axis]
    inner = int(np.prod(shape[axis + 1:])) if axis is not None else 1
    rng = np.random.default_rng(bits * 1000 + k)
    codes = rng.integers(0, k, int(np.prod(shape))).astype(np.uint8)
    levels = np.sort(rng.standard_normal((channels, k)), axis=1).astype(dtype)
    packed = pack_codes(codes, bits)
    # stride 4: one byte per little-endian int32, what TensorRT's ONNX parser makes of a uint8 initializer.
    raw = packed.tobytes() if stride == 1 else packed.astype("<i4").tobytes()
    (tmp_path / "codes.bin").write_bytes(raw)
    (tmp_path / "levels.bin").write_bytes(levels.tobytes())
    _run(emulators["asan"], "lut", "f16" if dtype == "float16" else "f32", bits, stride, tmp_path / "codes.bin",
         tmp_path / "levels.bin", channels, codes.size, inner, tmp_path / "w.bin", *offsets)
    got = np.frombuffer((tmp_path / "w.bin").read_bytes(), dtype)
    want = _lut_reference(codes, levels, inner)
    assert np.array_equal(_bits(got), _bits(want)), _mismatch(got, want)


def test_kernels_have_no_shared_memory_races(emulators: dict[str, Path], tmp_path: Path) -> None:
    """ThreadSanitizer over both kernels, with the staged tables (NUQuant's search tree, a per-channel codebook)."""
    rng = np.random.default_rng(0)
    levels = np.sort(rng.standard_normal(16)).astype(np.float32)
    (tmp_path / "levels.bin").write_bytes(levels.tobytes())
    (tmp_path / "x.bin").write_bytes(rng.standard_normal(3001).astype(np.float32).tobytes())
    _run(emulators["tsan"], "nuquant", "f32", tmp_path / "levels.bin", tmp_path / "x.bin", tmp_path / "y.bin", 1, 1)
    table = np.sort(rng.standard_normal((12, 16)), axis=1).astype(np.float16)
    (tmp_path / "table.bin").write_bytes(table.tobytes())
    (tmp_path / "codes.bin").write_bytes(rng.integers(0, 256, 12 * 9 * 9 // 2, dtype=np.uint8).tobytes())
    _run(emulators["tsan"], "lut", "f16", 4, 1, tmp_path / "codes.bin", tmp_path / "table.bin", 12, 12 * 9 * 9, 81,
         tmp_path / "w.bin", 0, 0)


def test_emulator_catches_a_broken_kernel(emu_flags, tmp_path: Path) -> None:
    """The harness can fail: a copy of nuquant.cu whose vector body skips its last vector must be caught as
    unwritten output (and one without its staging barrier as a race)."""
    broken = tmp_path / "csrc"
    shutil.copytree(CSRC, broken)
    source = (broken / "nuquant.cu").read_text()
    assert "v < numVec; v += stride" in source and source.count("__syncthreads();") == 2
    (broken / "nuquant.cu").write_text(source.replace("v < numVec; v += stride", "v + 1 < numVec; v += stride"))
    exe = _build(emu_flags, tmp_path, "asan", broken)
    (tmp_path / "levels.bin").write_bytes(np.array([-1.0, 0.0, 1.0], np.float32).tobytes())
    (tmp_path / "x.bin").write_bytes(np.random.default_rng(1).standard_normal(1000).astype(np.float32).tobytes())
    _run(exe, "nuquant", "f32", tmp_path / "levels.bin", tmp_path / "x.bin", tmp_path / "y.bin", 0, 0)
    y = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.float32)
    assert np.isnan(y).sum() == 4  # the last vector of 4 floats kept the all-ones poison

    (broken / "nuquant.cu").write_text(source.replace("__syncthreads();", "", 1))
    exe = _build(emu_flags, tmp_path, "tsan", broken)
    with pytest.raises(AssertionError, match="data race"):
        _run(exe, "nuquant", "f32", tmp_path / "levels.bin", tmp_path / "x.bin", tmp_path / "y.bin", 0, 0)



def test_random_sizes_offsets_and_codebooks(emulators: dict[str, Path], tmp_path: Path) -> None:
    """60 seeded random cases beyond the grids above: K in 1..256, any size up to 30000, pointer offsets 0..8,
    weight shapes of rank 4 with a random channel axis, per-tensor or per-channel levels, byte or int32 codes."""
    torch = pytest.importorskip("torch")
    from i2nq.quant import nuquant_ref, pack_codes

    rng = np.random.default_rng(2026)
    for case in range(60):
        dtype = str(rng.choice(["float32", "float16"]))
        flag = "f16" if dtype == "float16" else "f32"
        offsets = [int(v) for v in rng.integers(0, 9, 2)]
        if case % 2 == 0:
            k, n = int(rng.integers(1, 257)), int(rng.integers(1, 30000))
            levels = np.sort(rng.standard_normal(k) * rng.choice([1e-3, 1.0, 100.0])).astype(dtype)
            x = (rng.standard_normal(n) * (float(np.abs(levels).max()) + 1)).astype(dtype)
            (tmp_path / "levels.bin").write_bytes(levels.tobytes())
            (tmp_path / "x.bin").write_bytes(x.tobytes())
            _run(emulators["asan"], "nuquant", flag, tmp_path / "levels.bin", tmp_path / "x.bin", tmp_path / "out.bin",
                 *offsets)
            want = nuquant_ref(torch.from_numpy(x), torch.from_numpy(levels)).numpy()
        else:
            bits = int(rng.choice([2, 3, 4, 8]))
            k = int(rng.integers(1, (1 << bits) + 1))
            shape = [int(v) for v in rng.integers(1, 12, 4)]
            axis, per_channel, stride = int(rng.integers(0, 4)), bool(rng.random() < 0.7), int(rng.choice([1, 4]))
            channels = shape[axis] if per_channel else 1
            inner = int(np.prod(shape[axis + 1:])) if per_channel else 1
            codes = rng.integers(0, k, int(np.prod(shape))).astype(np.uint8)
            levels = np.sort(rng.standard_normal((channels, k)), axis=1).astype(dtype)
            packed = pack_codes(codes, bits)
            (tmp_path / "codes.bin").write_bytes(packed.tobytes() if stride == 1 else packed.astype("<i4").tobytes())
            (tmp_path / "levels.bin").write_bytes(levels.tobytes())
            _run(emulators["asan"], "lut", flag, bits, stride, tmp_path / "codes.bin", tmp_path / "levels.bin",
                 channels, codes.size, inner, tmp_path / "out.bin", *offsets)
            want = _lut_reference(codes, levels, inner)
        got = np.frombuffer((tmp_path / "out.bin").read_bytes(), dtype)
        assert np.array_equal(_bits(got), _bits(want)), f"case {case}: {_mismatch(got, want)}"
