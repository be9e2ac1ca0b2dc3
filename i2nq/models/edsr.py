"""EDSR family (Lim et al., 2017) in the [0, 1] RGB convention, with an optional bicubic global skip."""

from __future__ import annotations

import math
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from i2nq.models.info import ModelInfo, describe
from i2nq.models.receptive import measure_receptive_field

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

    @cached_property
    def receptive_field(self) -> int:
        """Radius in input pixels of the region that influences one output pixel (measured, rounded up)."""
        return measure_receptive_field(self, self.scale)

    @property
    def info(self) -> ModelInfo:
        return describe(self)
