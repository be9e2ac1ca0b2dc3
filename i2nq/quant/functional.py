"""Nearest-level quantization with the I²NQ tie rule, its straight-through estimator, and Lloyd-Max.

Tie rule (shared by torch, the ONNX function bodies and the CUDA kernels):
thresholds t_j = (L_j + L_{j+1}) * 0.5 computed in the levels' dtype; code(x) = #{j : t_j < x}, so a
value equal to a threshold takes the lower level; NaN takes code 0. Dequantized value: L[code(x)].
"""

from __future__ import annotations

import torch


def thresholds(levels: torch.Tensor) -> torch.Tensor:
    """Decision thresholds between sorted levels: (L_j + L_{j+1}) * 0.5, in the levels' dtype."""
    return (levels[..., :-1] + levels[..., 1:]) * 0.5


def codes(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level of every element (int64), with the documented tie and NaN rules."""
    t = thresholds(levels.to(x.dtype)).contiguous()
    c = torch.bucketize(x, t, right=False)  # = number of thresholds strictly below x
    return c.masked_fill_(torch.isnan(x), 0)


def nuquant_ref(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize: L[code(x)] (the reference for the ONNX op and the CUDA kernel)."""
    return levels.to(x.dtype)[codes(x, levels)]


class _NUQuantSTE(torch.autograd.Function):
    """y = L[code(x)]. dy/dx = 1 inside [L_0, L_{K-1}], else 0; each level gets the summed gradient
    of the elements assigned to it (so end levels learn the clipping range)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        c = codes(x, levels)
        inside = (x >= levels[0]) & (x <= levels[-1])
        ctx.save_for_backward(c.to(torch.uint8) if levels.numel() <= 256 else c, inside)
        ctx.k = levels.numel()
        return levels.to(x.dtype)[c]

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        c, inside = ctx.saved_tensors
        gx = g * inside
        gl = torch.zeros(ctx.k, dtype=g.dtype, device=g.device).index_add_(0, c.reshape(-1).long(), g.reshape(-1))
        return gx, gl


def nuquant(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Differentiable nearest-level quantization (see _NUQuantSTE); exact `nuquant_ref` forward."""
    return _NUQuantSTE.apply(x, levels)


CLIP_QUANTILES = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.15)  # tail mass clipped, per candidate
FIT_SAMPLES = 2**18  # samples a clip search looks at (a fixed, seeded subsample of larger sets)


def clip_range(samples: torch.Tensor, k: int, zero_level: bool = False, symmetric: bool = False) -> tuple[float, float]:
    """The clip range [lo, hi] whose uniform K-level grid quantizes `samples` with the least MSE, among ranges that
    clip a quantile CLIP_QUANTILES of each tail (lo = 0 with `zero_level`; lo = -hi with `symmetric`, by |x|).

    The uniform baseline's initialization, and the range of I²NQ's: wide at 8 bits, where a grid step costs
    little, tight at 2 bits, where the tails are not worth levels."""
    s = samples.detach().float().flatten()
    s = s[torch.isfinite(s)]
    if s.numel() == 0:
        raise ValueError("no finite samples to fit a codebook")
    if s.numel() > FIT_SAMPLES:
        s = s[torch.randperm(s.numel(), generator=torch.Generator().manual_seed(0))[:FIT_SAMPLES]]
    best = None
    for q in CLIP_QUANTILES:
        if symmetric:
            hi = float(torch.quantile(s.abs(), 1 - q))
            lo = -hi
        else:
            hi = float(torch.quantile(s, 1 - q))
            lo = 0.0 if zero_level else float(torch.quantile(s, q))
        if hi <= lo:
            continue
        grid = lo + (hi - lo) * torch.arange(k) / (k - 1)
        mse = float(((nuquant_ref(s, grid) - s) ** 2).mean())
        if best is None or mse < best[0]:
            best = (mse, lo, hi)
    if best is None:  # all samples equal (or all equal to 0 at a zero-level site)
        lo = 0.0 if zero_level else float(s.min())
        return lo, lo + max(abs(lo), 1.0)
    return best[1], best[2]


def lloyd_max(samples: torch.Tensor, k: int, zero_level: bool = False, iters: int = 60,
              clip: tuple[float, float] | None = None) -> torch.Tensor:
    """K sorted MSE-optimal levels for 1-D `samples` (Lloyd-Max, i.e. 1-D k-means).

    Without `clip`: starts at the quantiles, every level free. With `clip` = (lo, hi): starts at the uniform
    grid on [lo, hi] and keeps L_0 = lo and L_{K-1} = hi, moving only the interior levels, so the result
    quantizes `samples` with no more error than that uniform grid (each Lloyd step lowers the error).
    Empty cells keep their level. With `zero_level`, L_0 is pinned at exactly 0 (post-ReLU inputs, about half of
    which are exact zeros).
    """
    s = samples.detach().double().flatten()
    s = s[torch.isfinite(s)].sort().values
    if s.numel() == 0:
        raise ValueError("no finite samples to fit a codebook")
    prefix = torch.cat([s.new_zeros(1), s.cumsum(0)])
    if clip is None:
        q = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        levels = torch.quantile(s, q) if s.numel() < 2**24 else s[(q * (s.numel() - 1)).long()]
    else:
        levels = clip[0] + (clip[1] - clip[0]) * torch.arange(k, dtype=torch.float64) / (k - 1)
    if zero_level:
        levels[0] = 0.0
    levels = _spread(levels)
    for _ in range(iters):
        t = (levels[:-1] + levels[1:]) * 0.5
        edges = torch.cat([torch.zeros(1, dtype=torch.long), torch.searchsorted(s, t, right=True),
                           torch.tensor([s.numel()])])
        count = (edges[1:] - edges[:-1]).double()
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        new = torch.where(count > 0, sums / count.clamp(min=1), levels)
        if clip is not None:
            new[0], new[-1] = levels[0], levels[-1]
        if zero_level:
            new[0] = 0.0
        new = _spread(new.sort().values)
        if torch.allclose(new, levels, rtol=0, atol=1e-9 * float(s.abs().max() + 1e-12)):
            break
        levels = new
    return levels.float()


def _spread(levels: torch.Tensor) -> torch.Tensor:
    """Make levels strictly increasing (quantiles of data with repeated values can coincide)."""
    span = float(levels[-1] - levels[0]) or 1.0
    eps = 1e-4 * span
    out = levels.clone()
    for i in range(1, out.numel()):
        if out[i] <= out[i - 1] + eps:
            out[i] = out[i - 1] + eps
    return out
