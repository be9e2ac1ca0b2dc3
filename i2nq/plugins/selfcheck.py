"""Check the CUDA kernels against the torch reference, bit for bit, on fresh random inputs.

Cases cover odd sizes, misaligned inputs and outputs, levels with exact ties and inputs on thresholds,
fp32 and fp16, every code width and per-channel codebooks. Outputs are poisoned (NaN) first, with guard
elements on both sides, so an element never written or one written out of bounds is caught.
Used by tests/test_plugins_gpu.py and bench/gpu; `ops` defaults to i2nq.plugins.torch_ops.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from i2nq.quant import nuquant_ref, pack_codes, thresholds, unpack_codes

GUARD = 16
DTYPES = (torch.float32, torch.float16)


@dataclass(frozen=True)
class NUQuantCase:
    dtype: torch.dtype
    k: int
    n: int
    x_offset: int  # elements before x in its storage (misalignment)
    y_offset: int
    ties: bool  # duplicated levels and inputs placed exactly on thresholds
    subnormal: bool = False  # levels and inputs scaled down so thresholds are subnormal (catches flush-to-zero)


@dataclass(frozen=True)
class LUTCase:
    dtype: torch.dtype
    bits: int
    shape: tuple[int, ...]
    axis: int
    per_channel: bool
    w_offset: int


def nuquant_cases(n: int = 100_003) -> Iterator[NUQuantCase]:
    """Every dtype x a spread of K (tree depths 3..8) x aligned / head-aligned / scalar-path offsets."""
    for dtype in DTYPES:
        for k in (1, 2, 3, 4, 8, 9, 16, 17, 64, 255, 256):
            for x_off, y_off in ((0, 0), (3, 3), (1, 2)):
                yield NUQuantCase(dtype, k, n + k, x_off, y_off, ties=k % 2 == 1 or k == 16)
        yield NUQuantCase(dtype, 16, n, 0, 0, ties=True, subnormal=True)


def lut_cases() -> Iterator[LUTCase]:
    """Every dtype x code width x per-tensor / per-channel, odd conv-weight shapes, aligned or not."""
    shapes = (((37, 29, 3, 3), 0), ((5, 7, 11), 1), ((1001,), 0), ((64, 64, 3, 3), 0))
    for dtype in DTYPES:
        for bits in (2, 3, 4, 8):
            for shape, axis in shapes:
                for per_channel in (False, True):
                    yield LUTCase(dtype, bits, shape, axis, per_channel, w_offset=(bits + len(shape)) % 3)


def _levels(k: int, ties: bool, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    levels = torch.randn(k, generator=g, dtype=torch.float64).sort().values
    if ties and k > 2:
        levels[1::3] = levels[0::3][: len(levels[1::3])]  # exact duplicates
        levels = levels.sort().values
    return levels.to(dtype)


def _poisoned(n: int, offset: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(storage, view of n elements at `offset`) with NaN everywhere, GUARD elements past the end."""
    storage = torch.full((offset + n + GUARD,), float("nan"), dtype=dtype, device=device)
    return storage, storage[offset:offset + n]


def _mismatch(what: str, got: torch.Tensor, want: torch.Tensor, storage: torch.Tensor, offset: int) -> str | None:
    """None when got equals want bit for bit and the guards are untouched, else a one-line description."""
    bits = torch.int32 if got.dtype == torch.float32 else torch.int16
    bad = (got.reshape(-1).view(bits) != want.reshape(-1).view(bits)).nonzero().flatten()
    guards = torch.cat([storage[:offset], storage[offset + got.numel():]])
    if bad.numel():
        i = int(bad[0])
        return (f"{what}: {bad.numel()} of {got.numel()} elements differ, first at {i}: "
                f"got {float(got.reshape(-1)[i])} want {float(want.reshape(-1)[i])}")
    if not torch.isnan(guards).all():
        return f"{what}: wrote outside its output"
    return None


def check_nuquant(case: NUQuantCase, ops: Any, device: str = "cuda", seed: int = 0) -> str | None:
    g = torch.Generator().manual_seed(seed)
    scale = (2.0 ** -140 if case.dtype == torch.float32 else 2.0 ** -20) if case.subnormal else 1.0
    levels = (_levels(case.k, case.ties, torch.float64, g) * scale).to(case.dtype)
    x = torch.randn(case.n, generator=g, dtype=torch.float64).mul_(1.5 * scale).to(case.dtype)
    if case.k > 1:
        t = thresholds(levels)
        pick = torch.randint(0, case.n, (min(case.n // 4, 4096),), generator=g)
        x[pick] = t[torch.randint(0, t.numel(), (pick.numel(),), generator=g)]
    x[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0], dtype=case.dtype)
    x_storage = torch.zeros(case.x_offset + case.n, dtype=case.dtype)
    x_storage[case.x_offset:] = x
    x_dev = x_storage.to(device)[case.x_offset:]
    storage, out = _poisoned(case.n, case.y_offset, case.dtype, device)
    got = ops.nuquant(x_dev, levels.to(device), out=out)
    want = nuquant_ref(x, levels)
    if got.data_ptr() != out.data_ptr():
        return f"{case}: result not written to out"
    return _mismatch(str(case), got.cpu(), want, storage.cpu(), case.y_offset)


def check_lut_dequant(case: LUTCase, ops: Any, device: str = "cuda", seed: int = 0) -> str | None:
    g = torch.Generator().manual_seed(seed)
    numel = int(np.prod(case.shape))
    k = 1 << case.bits
    channels = case.shape[case.axis]
    codes = torch.randint(0, k, (numel,), generator=g).to(torch.uint8)
    table = torch.randn(channels if case.per_channel else 1, k, generator=g).sort(dim=1).values.to(case.dtype)
    levels = table if case.per_channel else table[0]
    packed = torch.from_numpy(pack_codes(codes.numpy(), case.bits))
    storage, out = _poisoned(numel, case.w_offset, case.dtype, device)
    got = ops.lut_dequant(packed.to(device), levels.to(device), case.bits, case.shape, case.axis,
                          out=out.view(case.shape))
    inner = int(np.prod(case.shape[case.axis + 1:]))
    channel = (torch.arange(numel) // inner) % channels if case.per_channel else torch.zeros(numel, dtype=torch.long)
    unpacked = torch.from_numpy(unpack_codes(packed.numpy(), case.bits, numel)).long()
    assert torch.equal(unpacked, codes.long())
    want = table[channel, unpacked].reshape(case.shape)
    return _mismatch(str(case), got.cpu(), want, storage.cpu(), case.w_offset)


def run_all(ops: ModuleType | Any | None = None, device: str = "cuda", n: int = 100_003) -> list[str]:
    """Every case; returns the failures (empty when the kernels match the reference everywhere)."""
    if ops is None:
        from i2nq.plugins import torch_ops as ops
    failures = [check_nuquant(c, ops, device, seed=i) for i, c in enumerate(nuquant_cases(n))]
    failures += [check_lut_dequant(c, ops, device, seed=i) for i, c in enumerate(lut_cases())]
    return [f for f in failures if f]


class ReferenceOps:
    """The torch reference behind the kernels' interface: lets the checks themselves run on a CPU."""

    @staticmethod
    def nuquant(x: torch.Tensor, levels: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        y = nuquant_ref(x, levels)
        return y if out is None else out.copy_(y)

    @staticmethod
    def lut_dequant(codes: torch.Tensor, levels: torch.Tensor, bits: int, shape: tuple[int, ...], axis: int = 0,
                    out: torch.Tensor | None = None) -> torch.Tensor:
        numel = int(np.prod(shape))
        c = torch.from_numpy(unpack_codes(codes.cpu().numpy(), bits, numel)).long().to(levels.device)
        inner = int(np.prod(shape[axis + 1:]))
        table = levels if levels.dim() == 2 else levels[None]
        channel = (torch.arange(numel, device=levels.device) // inner) % table.shape[0]
        w = table[channel, c].reshape(shape)
        return w if out is None else out.copy_(w)
