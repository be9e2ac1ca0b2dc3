"""One verb, dataclass configs: `quantize_(model, I2NQConfig(bits=4))`, then `calibrate_(model, batches)`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, ClassVar, Iterable, Iterator

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

    def act_quantizer(self) -> ActQuantizer:
        raise NotImplementedError

    def weight_quantizer(self, out_channels: int) -> WeightQuantizer:
        raise NotImplementedError


@dataclass(frozen=True)
class I2NQConfig(QuantConfig):
    """I²NQ: Lloyd-Max-initialized learnable nonuniform codebooks per activation site, FSWA weights."""

    fswa: bool = True
    method: ClassVar[str] = "i2nq"

    def act_quantizer(self) -> ActQuantizer:
        return ActQuantizer(NonuniformCodebook(2**self.a_bits))

    def weight_quantizer(self, out_channels: int) -> WeightQuantizer:
        return WeightQuantizer(NonuniformCodebook(2**self.w_bits), out_channels, fswa=self.fswa)


@dataclass(frozen=True)
class UniformConfig(QuantConfig):
    """The baseline: uniform grids with learnable clips (asymmetric activations, zero-anchored after
    ReLU) and symmetric per-channel weight grids with MSE-searched, learnable scales."""

    method: ClassVar[str] = "uniform"

    def act_quantizer(self) -> ActQuantizer:
        return ActQuantizer(UniformCodebook(2**self.a_bits))

    def weight_quantizer(self, out_channels: int) -> WeightQuantizer:
        cb = UniformCodebook(2**self.w_bits, symmetric=True)
        cb.raw_width.requires_grad_(False)  # the per-channel scale carries the range
        return WeightQuantizer(cb, out_channels, fswa=True)


def config_from_dict(d: dict) -> QuantConfig:
    d = dict(d)
    d.pop("sites", None)  # a checkpoint's per-site record, not an option
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


FilterFn = Callable[[nn.Conv2d, str], bool]


def conv_run_order(model: nn.Module, side: int = 16) -> list[str]:
    """Names of the model's nn.Conv2d modules in the order a forward pass runs them (each once, first run)."""
    order: list[str] = []
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    hooks = [m.register_forward_pre_hook(lambda mod, args: order.append(names[mod]) if names[mod] not in order
                                         else None) for m in names]
    multiple = int(getattr(model, "size_multiple", 1))
    side = -(-side // multiple) * multiple
    param = next(model.parameters(), None)
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=param.device if param is not None else None))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return order


def head_and_tail_float(model: nn.Module) -> FilterFn:
    """The default rule (the paper's): quantize every plain convolution except the first to run (the head, which
    sees the image) and the last to run (the tail, which makes the output), whatever the architecture."""
    order = conv_run_order(model)
    keep_float = {order[0], order[-1]} if order else set()
    return lambda conv, name: name in order and name not in keep_float and QuantConv2d.supports(conv)


def quantize_(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None = None, init_weights: bool = True,
              sites: Iterable[str] | None = None) -> nn.Module:
    """Replace convolutions by QuantConv2d (a quantized input with its own codebook, FSWA weights), in place.

    Which ones: the names in `sites` when given (a checkpoint's), else every nn.Conv2d for which
    `filter_fn(conv, name)` is true (torchao's filter_fn), by default all but the head and the tail
    (`head_and_tail_float`): a rule over the module graph, never over an architecture's class names. Whether a
    site's codebook keeps an exact zero level (post-ReLU and other non-negative inputs) is decided when it is
    calibrated (`calibrate_`). With `init_weights`, weight quantizers are fitted now (data-free).
    """
    if getattr(model, "quant_config", None):
        raise I2NQError("model is already quantized")
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if sites is not None:
        chosen = list(sites)
        missing = [n for n in chosen if n not in convs]
        if missing:
            raise I2NQError(f"model has no convolution {missing[0]!r} to quantize")
    else:
        keep = filter_fn or head_and_tail_float(model)
        chosen = [name for name, conv in convs.items() if keep(conv, name)]
    if not chosen:
        raise I2NQError("no convolution of this model is quantizable (the head and the tail stay float)")
    for name in chosen:
        conv = convs[name]
        if not QuantConv2d.supports(conv):
            raise I2NQError(f"cannot quantize {name}: padding mode {conv.padding_mode!r} (only zero padding)")
        wq = config.weight_quantizer(conv.out_channels)
        if init_weights:
            wq.fit(conv.weight)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                QuantConv2d(conv, config.act_quantizer(), wq))
    model.quant_config = config.to_dict()
    return model


def site_record(model: nn.Module) -> dict[str, dict]:
    """Per quantized site, what a checkpoint must record beyond its tensors: whether its codebook pins a zero level."""
    return {name: {"zero_level": bool(m.act_quant.codebook.zero_level)} for name, m in quantized_sites(model)}


def restore_sites_(model: nn.Module, record: dict[str, dict]) -> None:
    """Re-apply a checkpoint's site record (see site_record) after quantize_(..., sites=...)."""
    for name, m in quantized_sites(model):
        if record.get(name, {}).get("zero_level"):
            m.act_quant.codebook.pin_zero()


@torch.no_grad()
def calibrate_(model: nn.Module, batches: Iterable[torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Run float inference over `batches`, collect samples at each activation site, fit its codebook.

    Deterministic: the random subsample each site keeps is drawn from a generator seeded with `seed` (the
    process's global RNG is left as it was). Returns the collected samples per site (for statistics such as
    kurtosis and zero fraction).
    """
    sites = list(quantized_sites(model))
    if not sites:
        raise I2NQError("model is not quantized: call quantize_ first")
    was = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    for _, m in sites:
        m.act_quant.observing, m.act_quant.generator = True, generator
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
            m.act_quant.observing, m.act_quant.generator = False, None
        model.train(was)


def is_quant_param(name: str) -> bool:
    """Parameters of quantizers (levels, scales, clips), trained with their own learning rate."""
    return ".act_quant." in name or ".weight_quant." in name
