"""The model descriptor callers read instead of guessing (scale, receptive field, bits)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to run a model: scale, receptive field (for exact tiling), bits."""

    arch: str
    scale: int
    bits: str  # "fp32" or e.g. "w4a4"
    receptive_field: int
    in_channels: int = 3


def describe(model) -> ModelInfo:
    """The descriptor of an i2nq model module (arch, scale, quant_config and receptive_field attributes)."""
    q = model.quant_config
    bits = f"w{q['w_bits']}a{q['a_bits']}" if q else "fp32"
    return ModelInfo(arch=model.arch, scale=model.scale, bits=bits, receptive_field=model.receptive_field)
