"""The ai.i2nq CUDA kernels as torch ops, for torch users without TensorRT.

The extension is compiled on first use with torch.utils.cpp_extension.load (needs nvcc; about a minute)
into the i2nq cache, and reused while the sources and torch stay the same. The ops are forward-only.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from types import ModuleType

import torch

from i2nq.errors import I2NQError
from i2nq.plugins import CSRC, PLUGIN_VERSION
from i2nq.plugins.library import cache_dir

SOURCES = ("torch_ops.cpp", "nuquant.cu", "lut_dequant.cu")
#: Exact IEEE arithmetic: thresholds may be subnormal, and the tie rule compares against them exactly.
CUDA_FLAGS = ("-O3", "-std=c++17", "--ftz=false", "--prec-div=true")


def _load(name: str = "i2nq_ops", cuda_flags: tuple[str, ...] = ()) -> ModuleType | str:
    """Build (or reuse) the extension `name` with extra nvcc flags; the module, or why it could not be built."""
    if not torch.cuda.is_available():
        return "torch has no CUDA device here"
    from torch.utils.cpp_extension import load

    tag = f"v{PLUGIN_VERSION}-torch{torch.__version__}-cuda{torch.version.cuda}".replace("+", "_")
    build_dir = cache_dir() / "torch_ext" / (tag if name == "i2nq_ops" else f"{tag}-{name}")
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        return load(name=name, sources=[str(CSRC / s) for s in SOURCES], extra_cflags=["-O3", "-std=c++17"],
                    extra_cuda_cflags=[*CUDA_FLAGS, *cuda_flags], extra_include_paths=[str(CSRC)],
                    build_directory=str(build_dir), verbose=False)
    except Exception as exc:  # a compiler error, a missing nvcc: fall back to the torch reference
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"i2nq CUDA kernels unavailable, using the torch reference ({reason})", stacklevel=4)
        return reason


@lru_cache(maxsize=1)
def _build() -> ModuleType | str:
    """The compiled extension, or the reason it could not be built (built once per process)."""
    return _load()


@lru_cache(maxsize=None)
def variant(name: str, streaming_hints: bool = True) -> ModuleType | str:
    """A separately built and named copy of the extension, for bench/gpu: `streaming_hints=False` builds the
    kernels with plain 16-byte loads and stores (-DI2NQ_STREAMING_HINTS=0). It is built for the architectures
    of $TORCH_CUDA_ARCH_LIST as it is in this process (torch's default, the visible GPUs, when unset). The
    module, or why it could not be built."""
    if name == "i2nq_ops":
        raise ValueError("a variant needs a name of its own")
    return _load(name, () if streaming_hints else ("-DI2NQ_STREAMING_HINTS=0",))


def available() -> bool:
    """True when the kernels can run here (a CUDA device and a successful build, done on the first call)."""
    return not isinstance(_build(), str)


def _ops() -> ModuleType:
    ext = _build()
    if isinstance(ext, str):
        raise I2NQError(f"the i2nq CUDA kernels are not available: {ext}")
    return ext


def nuquant(x: torch.Tensor, levels: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """levels[code(x)] with the I²NQ tie rule (= i2nq.quant.nuquant_ref) for CUDA x and sorted levels (K <= 256)
    of x's dtype (float32 or float16). `out`: an optional contiguous result tensor (any storage offset)."""
    return _ops().nuquant(x, levels, out)


def lut_dequant(codes: torch.Tensor, levels: torch.Tensor, bits: int, shape: tuple[int, ...] | list[int],
                axis: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Unpack `bits`-bit codes (uint8, packed as i2nq.quant.pack_codes) and look them up in levels [K] or
    [shape[axis], K]; returns a tensor of `shape` in the levels' dtype."""
    return _ops().lut_dequant(codes, levels, int(bits), [int(s) for s in shape], int(axis), out)
