"""A convolution with a quantized input (per-site codebook) and FSWA-quantized weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from i2nq.quant.quantizers import ActQuantizer, WeightQuantizer


class QuantConv2d(nn.Module):
    """Drop-in for an nn.Conv2d: conv(Qa(x), Qw(W)) + b, any stride, padding, dilation and groups (zero padding).
    Keeps the float weight for QAT."""

    def __init__(self, conv: nn.Conv2d, act: ActQuantizer, weight: WeightQuantizer) -> None:
        super().__init__()
        if not self.supports(conv):
            raise ValueError("QuantConv2d supports zero-padded convolutions")
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.act_quant, self.weight_quant = act, weight

    @staticmethod
    def supports(conv: nn.Conv2d) -> bool:
        """Whether a convolution can be quantized: zero (or no) padding, numeric padding (not 'same')."""
        return conv.padding_mode == "zeros" and not isinstance(conv.padding, str)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.act_quant.observing else self.weight_quant(self.weight)
        return F.conv2d(self.act_quant(x), w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def absorbs_relu(self) -> bool:
        """Whether a ReLU right before this conv changes nothing: with every input level >= 0, every
        threshold is >= 0 too, so the quantizer maps all x <= 0 (and NaN) to level 0, as it maps ReLU(x) = 0.
        Post-ReLU sites pin level 0 at exactly 0, so deployment can drop their ReLU pass."""
        return not self.act_quant.observing and bool(self.act_quant.codebook.levels()[0] >= 0)

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return (f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding}"
                + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")
                + (f", groups={self.groups}" if self.groups != 1 else ""))
