"""EDSR family (Lim et al., 2017) in the [0, 1] RGB convention, with an optional bicubic global skip."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from i2nq.models.info import ModelInfo, describe

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean, as in EDSR


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResBlock(nn.Module):
    """conv-ReLU-conv with identity skip; no normalization (the setting I²NQ targets).

    `conv1` sees the block input (bell-shaped, signed); `conv2` sees post-ReLU features (about half
    exact zeros). These two are the convolutions that quantization replaces.
    """

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = conv3x3(n_feats, n_feats)
        self.act = nn.ReLU(inplace=False)
        self.conv2 = conv3x3(n_feats, n_feats)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv2(self.act(self.conv1(x)))
        return x + res * self.res_scale if self.res_scale != 1.0 else x + res


def fold_relus_(model: nn.Module) -> nn.Module:
    """Deployment: drop each ResBlock's ReLU whose quantized conv2 absorbs it (see QuantConv2d.absorbs_relu),
    saving one elementwise pass per block with the same output. Returns the model."""
    for block in model.modules():
        if isinstance(block, ResBlock) and getattr(block.conv2, "absorbs_relu", lambda: False)():
            block.act = nn.Identity()
    return model


def upsampler(scale: int, n_feats: int) -> nn.Sequential:
    """Sub-pixel upsampler: log2(scale) stages of conv + PixelShuffle(2), or one x3 stage."""
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"unsupported scale {scale}")
    return nn.Sequential(*layers)


def upsampler_radius(upsampler: nn.Sequential, hr_convs: int) -> Fraction:
    """Receptive-field radius, in input pixels, that a sub-pixel upsampler and `hr_convs` 3x3 convolutions at
    output resolution add: one pixel per convolution at its resolution, and up to (r - 1) / 2r of a pixel per
    PixelShuffle(r) at its input resolution (how far an output pixel's centre lies from the centre of the pixel
    it comes from; at x4 that is 0.375 px, which a count of convolutions alone misses)."""
    radius, res = Fraction(0), Fraction(1)
    for m in upsampler:
        if isinstance(m, nn.Conv2d):
            radius += 1 / res
        elif isinstance(m, nn.PixelShuffle):
            r = m.upscale_factor
            radius += Fraction(r - 1, 2 * r) / res
            res *= r
    return radius + hr_convs / res


class EDSR(nn.Module):
    """EDSR: head conv, `n_blocks` residual blocks + body-tail conv, sub-pixel upsampler, tail conv.

    skip="bicubic" adds a bicubic upscale of the input to the output (the tail starts at zero, so an
    untrained model already equals bicubic); skip="none" is the original EDSR with mean shift.
    """

    def __init__(self, scale: int = 4, n_blocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 skip: str = "none", arch: str = "edsr") -> None:
        super().__init__()
        if skip not in ("none", "bicubic"):
            raise ValueError(f"unknown skip {skip!r}")
        self.arch, self.scale, self.skip = arch, scale, skip
        self.n_blocks, self.n_feats, self.res_scale = n_blocks, n_feats, res_scale
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = conv3x3(3, n_feats)
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_blocks)], conv3x3(n_feats, n_feats))
        self.tail = nn.Sequential(upsampler(scale, n_feats), conv3x3(n_feats, 3))
        if skip == "bicubic":
            nn.init.zeros_(self.tail[-1].weight)
            nn.init.zeros_(self.tail[-1].bias)
        self.quant_config: dict | None = None  # set by i2nq.quant.quantize_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x - self.rgb_mean)
        out = self.tail(self.body(h) + h)
        if self.skip == "bicubic":
            return out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out + self.rgb_mean

    @property
    def receptive_field(self) -> int:
        """Radius in input pixels of the region that influences one output pixel (ceil)."""
        radius = 1 + (2 * self.n_blocks + 1) + upsampler_radius(self.tail[0], hr_convs=1)  # head, body, tail
        if self.skip == "bicubic":
            radius = max(radius, Fraction(2))
        return math.ceil(radius)

    @property
    def info(self) -> ModelInfo:
        return describe(self)
