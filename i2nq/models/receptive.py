"""Measure a model's receptive field: how far, in input pixels, an input pixel can influence an output pixel.

The tiler makes tiled output equal whole-frame output when tiles overlap by this radius, so it must never be
underestimated. It is measured on the module itself rather than counted by hand: one input pixel at the centre
of a probe image is set to NaN (NaN spreads through every arithmetic path, zero weights and inactive ReLUs
included) and, separately, changed by +1 (for paths that select rather than compute, where NaN may be dropped);
every output pixel either probe changes depends on it. The radius is the largest distance between such an output
pixel's centre, (o + 0.5) / scale - 0.5 in input coordinates, and the probed pixel, rounded up. When the
dependence reaches the probe's border even on the largest probe, the receptive field is unbounded (global
pooling, window attention) or too large for exact tiling to pay, and None is returned: tiles are then blended.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from collections.abc import Iterator

import torch
from torch import nn

PROBE_SIDES = (64, 128, 256)  # input sides tried in turn; a radius must stay clear of the probe's border


@torch.no_grad()
def measure_receptive_field(model: nn.Module, scale: int, multiple: int = 1, in_channels: int = 3,
                            sides: tuple[int, ...] = PROBE_SIDES) -> int | None:
    """ceil of the receptive-field radius of `model` (NCHW in, `scale` x larger out) in input pixels; None when
    the dependence of one pixel reaches the border of the largest probe (see module doc)."""
    was_training = model.training
    model.eval()
    try:
        with quantizers_bypassed(model):
            for side in sides:
                side = -(-side // multiple) * multiple
                radius, at_border = _probe(model, scale, side, in_channels)
                if not at_border:
                    return math.ceil(radius - 1e-9)
        return None
    finally:
        model.train(was_training)


def _probe(model: nn.Module, scale: int, side: int, in_channels: int) -> tuple[float, bool]:
    """(largest centre distance of a dependent output pixel, whether any lies within a pixel of the border)."""
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    x = torch.rand(1, in_channels, side, side, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    c = side // 2
    base = model(x)
    nan_in, bumped = x.clone(), x.clone()
    nan_in[..., c, c] = float("nan")
    bumped[..., c, c] += 1.0
    depends = model(nan_in).isnan().any(1)[0] | (model(bumped) != base).any(1)[0]
    ys, xs = torch.nonzero(depends, as_tuple=True)
    if ys.numel() == 0:
        return 0.0, False
    coords = torch.cat([ys, xs]).double()
    radius = float(((coords + 0.5) / scale - 0.5 - c).abs().max())
    out = side * scale
    at_border = bool((coords < scale).any() or (coords >= out - scale).any())
    return radius, at_border


@contextmanager
def quantizers_bypassed(model: nn.Module) -> Iterator[None]:
    """Run a quantized model as its float parent (activation quantizers pass values through, float weights), so
    that a probe is not swallowed by a quantizer; restores the quantizers and drops what they collected."""
    from i2nq.quant.quantizers import ActQuantizer

    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    saved = [(q.observing, q._samples) for q in quantizers]
    for q in quantizers:
        q.observing, q._samples = True, []
    try:
        yield
    finally:
        for q, (observing, samples) in zip(quantizers, saved):
            q.observing, q._samples = observing, samples
