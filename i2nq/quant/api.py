"""One verb, dataclass configs: `quantize_(model, I2NQConfig(bits=4))`, then `calibrate_(model, batches)`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Iterable, Iterator

import torch
from torch import nn

from i2nq.errors import I2NQError
from i2nq.quant.codebook import NonuniformCodebook, UniformCodebook
from i2nq.quant.conv import QuantConv2d
from i2nq.quant.packing import BITS
from i2nq.quant.quantizers import ActQuantizer, WeightQuantizer


def _check_bits(bits: int | None, what: str) -> None:
    if bits not in BITS:
        raise I2NQError(f"unsupported {what} {bits} (supported: {', '.join(map(str, BITS))})")


@dataclass(frozen=True)
class QuantConfig:
    """Shared fields: bits for weights and activations (W = A = `bits` unless given separately)."""

    bits: int = 4
    w_bits: int | None = None
    a_bits: int | None = None
    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "w_bits", self.w_bits or self.bits)
        object.__setattr__(self, "a_bits", self.a_bits or self.bits)
        _check_bits(self.w_bits, "weight bits")
        _check_bits(self.a_bits, "activation bits")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("bits")
        return {"method": self.method, **d}

    def act_quantizer(self, zero_level: bool) -> ActQuantizer:
        raise NotImplementedError

    def weight_quantizer(self, out_channels: int) -> WeightQuantizer:
        raise NotImplementedError


@dataclass(frozen=True)
class I2NQConfig(QuantConfig):
    """I²NQ: Lloyd-Max-initialized learnable nonuniform codebooks per activation site, FSWA weights."""

    fswa: bool = True
    method: ClassVar[str] = "i2nq"

    def act_quantizer(self, zero_level: bool) -> ActQuantizer:
        return ActQuantizer(NonuniformCodebook(2**self.a_bits, zero_level=zero_level))

    def weight_quantizer(self, out_channels: int) -> WeightQuantizer:
        return WeightQuantizer(NonuniformCodebook(2**self.w_bits), out_channels, fswa=self.fswa)


@dataclass(frozen=True)
class UniformConfig(QuantConfig):
    """The baseline: uniform grids with learnable clips (asymmetric activations, zero-anchored after
    ReLU) and symmetric per-channel weight grids with MSE-searched, learnable scales."""

    method: ClassVar[str] = "uniform"

    def act_quantizer(self, zero_level: bool) -> ActQuantizer:
        return ActQuantizer(UniformCodebook(2**self.a_bits, zero_level=zero_level))

    def weight_quantizer(self, out_channels: int) -> WeightQuantizer:
        cb = UniformCodebook(2**self.w_bits, symmetric=True)
        cb.raw_width.requires_grad_(False)  # the per-channel scale carries the range
        return WeightQuantizer(cb, out_channels, fswa=True)


def config_from_dict(d: dict) -> QuantConfig:
    d = dict(d)
    method = d.pop("method", None)
    if method == "i2nq":
        return I2NQConfig(**d)
    if method == "uniform":
        d.pop("fswa", None)
        return UniformConfig(**d)
    raise I2NQError(f"unknown quantization method {method!r}")


def quantized_sites(model: nn.Module) -> Iterator[tuple[str, QuantConv2d]]:
    for name, m in model.named_modules():
        if isinstance(m, QuantConv2d):
            yield name, m


def quantize_(model: nn.Module, config: QuantConfig, init_weights: bool = True) -> nn.Module:
    """Replace the two convolutions of every residual block by QuantConv2d, in place.

    Head, body-tail, upsampler and tail stay float. conv2's input is post-ReLU, so its codebook keeps
    an exact zero level. With `init_weights`, weight quantizers are fitted now (data-free); activation
    codebooks need `calibrate_`.
    """
    from i2nq.models.edsr import ResBlock

    if getattr(model, "quant_config", None):
        raise I2NQError("model is already quantized")
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    if not blocks:
        raise I2NQError("model has no residual blocks to quantize")
    for block in blocks:
        for name, zero_level in (("conv1", False), ("conv2", True)):
            conv = getattr(block, name)
            wq = config.weight_quantizer(conv.out_channels)
            if init_weights:
                wq.fit(conv.weight)
            setattr(block, name, QuantConv2d(conv, config.act_quantizer(zero_level), wq))
    model.quant_config = config.to_dict()
    return model


@torch.no_grad()
def calibrate_(model: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run float inference over `batches`, collect samples at each activation site, fit its codebook.

    Returns the collected samples per site (for statistics such as kurtosis and zero fraction).
    """
    sites = list(quantized_sites(model))
    if not sites:
        raise I2NQError("model is not quantized: call quantize_ first")
    was = model.training
    model.eval()
    for _, m in sites:
        m.act_quant.observing = True
    try:
        n = 0
        for x in batches:
            model(x)
            n += 1
        if n == 0:
            raise I2NQError("calibration got no data")
        return {name: m.act_quant.finish_calibration() for name, m in sites}
    finally:
        for _, m in sites:
            m.act_quant.observing = False
        model.train(was)


def is_quant_param(name: str) -> bool:
    """Parameters of quantizers (levels, scales, clips), trained with their own learning rate."""
    return ".act_quant." in name or ".weight_quant." in name
