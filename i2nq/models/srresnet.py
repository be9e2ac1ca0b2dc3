"""SRResNet without batch normalization, as BasicSR's MSRResNet (Wang et al., 2018): residual blocks, a
LeakyReLU sub-pixel upsampler and a bilinear global skip, in the [0, 1] RGB convention."""

from __future__ import annotations

import math
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from i2nq.models.edsr import ResBlock, conv3x3
from i2nq.models.info import ModelInfo, describe
from i2nq.models.receptive import measure_receptive_field

LRELU_SLOPE = 0.1


class SRResNet(nn.Module):
    """Head conv + LeakyReLU, `n_blocks` residual blocks (the convolutions quantization replaces), upsampler
    (conv, PixelShuffle, LeakyReLU per x2 stage, or one x3 stage), conv_hr + LeakyReLU, tail conv, plus a bilinear
    upscale of the input. Unlike EDSR: no mean shift, no body-tail conv and no long skip over the body."""

    def __init__(self, scale: int = 4, n_blocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 arch: str = "srresnet") -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"unsupported scale {scale}")
        self.arch, self.scale = arch, scale
        self.n_blocks, self.n_feats, self.res_scale = n_blocks, n_feats, res_scale
        self.head = conv3x3(3, n_feats)
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_blocks)])
        stages = [3] if scale == 3 else [2] * int(math.log2(scale))
        self.upsample = nn.Sequential(*[m for r in stages for m in (
            conv3x3(n_feats, r * r * n_feats), nn.PixelShuffle(r), nn.LeakyReLU(LRELU_SLOPE))])
        self.conv_hr = conv3x3(n_feats, n_feats)
        self.tail = conv3x3(n_feats, 3)
        self.act = nn.LeakyReLU(LRELU_SLOPE)
        self.quant_config: dict | None = None  # set by i2nq.quant.quantize_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.upsample(self.body(self.act(self.head(x))))
        out = self.tail(self.act(self.conv_hr(out)))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)

    @cached_property
    def receptive_field(self) -> int:
        """Radius in input pixels of the region that influences one output pixel (measured, rounded up)."""
        return measure_receptive_field(self, self.scale)

    @property
    def info(self) -> ModelInfo:
        return describe(self)
