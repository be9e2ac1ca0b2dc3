"""Codebooks: K = 2^bits sorted levels, learnable, sorted by construction.

`NonuniformCodebook` (I²NQ, intra-nonuniform): L_0 plus a cumulative sum of softplus gaps, so levels
stay strictly increasing through any gradient step. Initialized in two steps: the clip range the uniform
baseline would choose (the least-MSE uniform grid over quantile clips), then Lloyd-Max moves the interior levels
to where the values are dense, ends pinned at the clip, so the start is never worse than the uniform grid. (Plain
Lloyd-Max, whose end levels are the centroids of the tails, clips the rare large activations SR networks depend on:
on Real-ESRGAN Compact at 8 bits it lost 8 dB of fidelity to its float parent that the clip-range start keeps.)
`UniformCodebook` (the baseline): equally spaced levels between a learnable lower and upper clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from i2nq.quant.functional import clip_range, lloyd_max


def _inv_softplus(y: torch.Tensor) -> torch.Tensor:
    y = y.clamp(min=1e-8)
    return torch.where(y > 20, y, torch.log(torch.expm1(y)))


class Codebook(nn.Module):
    """K sorted levels; `zero_level` pins L_0 at exactly 0 (post-ReLU inputs)."""

    def __init__(self, k: int, zero_level: bool = False) -> None:
        super().__init__()
        self.k, self.zero_level = k, zero_level

    def levels(self) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, samples: torch.Tensor) -> None:
        """Initialize from samples of the values this codebook will quantize."""
        raise NotImplementedError

    @torch.no_grad()
    def pin_zero(self) -> None:
        """Keep L_0 at exactly 0 from now on (non-negative inputs, e.g. post-ReLU: about half are exact zeros)."""
        self.zero_level = True
        anchor = self._anchor()
        anchor.zero_()
        anchor.requires_grad_(False)

    def _anchor(self) -> nn.Parameter:
        """The parameter that holds L_0."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"k={self.k}, zero_level={self.zero_level}"


class NonuniformCodebook(Codebook):
    def __init__(self, k: int, zero_level: bool = False) -> None:
        super().__init__(k, zero_level)
        self.first = nn.Parameter(torch.zeros(()), requires_grad=not zero_level)
        self.raw_gaps = nn.Parameter(_inv_softplus(torch.full((k - 1,), 2.0 / (k - 1))))

    def levels(self) -> torch.Tensor:
        first = self.first * 0 if self.zero_level else self.first
        return torch.cat([first.reshape(1), first + torch.cumsum(F.softplus(self.raw_gaps), 0)])

    @torch.no_grad()
    def set_levels(self, levels: torch.Tensor) -> None:
        levels = levels.to(self.raw_gaps)
        self.first.copy_(0 if self.zero_level else levels[0])
        self.raw_gaps.copy_(_inv_softplus(levels[1:] - levels[:-1]))

    def fit(self, samples: torch.Tensor) -> None:
        clip = clip_range(samples, self.k, zero_level=self.zero_level)
        self.set_levels(lloyd_max(samples, self.k, zero_level=self.zero_level, clip=clip))

    def _anchor(self) -> nn.Parameter:
        return self.first


class UniformCodebook(Codebook):
    """Equally spaced levels over a learnable clip range [lo, lo + width] (width > 0 by softplus, so
    levels stay sorted); lo is pinned at 0 with `zero_level`.

    `symmetric` ties lo = -width / 2 (weights: a midrise grid such as {-3, -1, 1, 3}/3 at 2 bits, never
    the lopsided {-2, -1, 0, 1}).
    """

    def __init__(self, k: int, zero_level: bool = False, symmetric: bool = False) -> None:
        super().__init__(k, zero_level)
        self.symmetric = symmetric
        self.lo = nn.Parameter(torch.tensor(-1.0), requires_grad=not (zero_level or symmetric))
        self.raw_width = nn.Parameter(_inv_softplus(torch.tensor(2.0)))

    def levels(self) -> torch.Tensor:
        width = F.softplus(self.raw_width)
        lo = self.lo * 0 if self.zero_level else (-0.5 * width if self.symmetric else self.lo)
        steps = torch.arange(self.k, dtype=width.dtype, device=width.device) / (self.k - 1)
        return lo + width * steps

    def _anchor(self) -> nn.Parameter:
        return self.lo

    @torch.no_grad()
    def fit(self, samples: torch.Tensor) -> None:
        """Clip range with the least MSE over a grid of quantile clips (same data as the I²NQ init)."""
        lo, hi = clip_range(samples, self.k, zero_level=self.zero_level, symmetric=self.symmetric)
        self.lo.fill_(lo)
        self.raw_width.copy_(_inv_softplus(torch.tensor(hi - lo)))
