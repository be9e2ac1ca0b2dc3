"""The generic export: any quantized (or float) i2nq model traced by torch's ONNX exporter (torch.export based).

Before tracing, every QuantConv2d is replaced by a deployment twin that holds only what runs: its activation
codebook and, for its weights, either bit-packed codes plus per-channel levels (rebuilt at run time by LUTDequant;
the portable flavor) or the dequantized weights themselves, exactly levels[c, code] in the graph's dtype (the
tensorrt flavor: plain Conv constants TensorRT can pre-format and fuse). The twin calls two custom torch ops that
the exporter translates into `ai.i2nq` NUQuant / LUTDequant nodes; each carries its site's name so the nodes and
initializers can be named after the module they came from however the exporter shares or renames constants.
Nothing from training (STE, observers, float shadow weights) reaches the graph.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from i2nq.errors import I2NQError
from i2nq.export.ops import schemas_registered
from i2nq.quant import QuantConv2d, nuquant_ref, pack_codes, quantized_sites, unpack_codes

SITE_ATTR = "i2nq_site"  # a temporary node attribute, removed after export


@lru_cache(maxsize=None)
def _ops():
    """Register the export-only custom ops once (i2nq_export::nuquant / lut_dequant) and their ONNX translations."""

    @torch.library.custom_op("i2nq_export::nuquant", mutates_args=())
    def nuquant(x: torch.Tensor, levels: torch.Tensor, site: str) -> torch.Tensor:
        return nuquant_ref(x, levels)

    @nuquant.register_fake
    def _(x, levels, site):
        return torch.empty_like(x)

    @torch.library.custom_op("i2nq_export::lut_dequant", mutates_args=())
    def lut_dequant(codes: torch.Tensor, levels: torch.Tensor, bits: int, shape: list[int], axis: int,
                    site: str) -> torch.Tensor:
        numel = int(np.prod(shape))
        flat = torch.from_numpy(unpack_codes(codes.cpu().numpy(), bits, numel).astype(np.int64))
        channel = (torch.arange(numel) // int(np.prod(shape[axis + 1:]))) % (levels.numel() // levels.shape[-1])
        return levels.reshape(-1)[channel * levels.shape[-1] + flat].reshape(shape)

    @lut_dequant.register_fake
    def _(codes, levels, bits, shape, axis, site):
        return levels.new_empty(shape)

    return torch.ops.i2nq_export.nuquant.default, torch.ops.i2nq_export.lut_dequant.default


def translation_table() -> dict:
    """The exporter's translations of the custom ops into ai.i2nq nodes (used inside ops.schemas_registered())."""
    import onnxscript

    from i2nq.export.ops import DOMAIN, DOMAIN_VERSION

    opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)
    nuquant, lut_dequant = _ops()

    def nuquant_onnx(x, levels, site: str):
        return opset.NUQuant(x, levels, **{SITE_ATTR: site})

    def lut_dequant_onnx(codes, levels, bits: int, shape: list[int], axis: int, site: str):
        return opset.LUTDequant(codes, levels, bits=bits, shape=shape, axis=axis, **{SITE_ATTR: site})

    return {nuquant: nuquant_onnx, lut_dequant: lut_dequant_onnx}


class DeployedConv(nn.Module):
    """What a QuantConv2d runs as: NUQuant(x) -> Conv with LUTDequant-rebuilt (`packed`) or dequantized weights."""

    def __init__(self, site: str, conv: QuantConv2d, packed: bool) -> None:
        super().__init__()
        self.site, self.packed = site, packed
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        with torch.no_grad():
            self.register_buffer("act_levels", conv.act_quant.codebook.levels().detach().clone())
            codes, levels = conv.weight_quant.export(conv.weight)
            self.shape, self.bits = list(codes.shape), int(np.log2(levels.shape[-1]))
            if packed:
                self.register_buffer("weight_codes", torch.from_numpy(pack_codes(codes.cpu().numpy(), self.bits)))
                self.register_buffer("weight_levels", levels.detach().clone())
            else:  # levels[c, code]: indexing is exact, in whatever dtype the module is converted to later
                self.register_buffer("weight_levels", levels.detach().clone())
                self.register_buffer("weight_codes", codes.long())
            self.register_buffer("bias", conv.bias.detach().clone() if conv.bias is not None else None)

    def dense_weight(self) -> torch.Tensor:
        """levels[c, code] in the levels' dtype (the tensorrt flavor's constant)."""
        c = self.weight_codes
        return torch.gather(self.weight_levels, 1, c.reshape(c.shape[0], -1)).reshape(c.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nuquant, lut_dequant = _ops()
        x = nuquant(x, self.act_levels, self.site)
        if self.packed:
            w = lut_dequant(self.weight_codes, self.weight_levels, self.bits, self.shape, 0, self.site)
        else:
            w = self.weight
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def deployment_module(model: nn.Module, dtype: torch.dtype, packed: bool) -> nn.Module:
    """A copy of `model` with every QuantConv2d replaced by its DeployedConv, in `dtype`, in eval mode."""
    twin = copy.deepcopy(model).eval()
    for name, conv in list(quantized_sites(twin)):
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent) if parent else twin, child, DeployedConv(name, conv, packed))
    twin = twin.to(dtype)
    for m in twin.modules():
        if isinstance(m, DeployedConv) and not m.packed:  # dense weights: cast levels first, then index exactly
            m.register_buffer("weight", m.dense_weight())
            del m.weight_codes, m.weight_levels
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def trace(model: nn.Module, dtype: torch.dtype, packed: bool, opset: int):
    """torch.onnx.export of the deployment module (input 'input' NCHW with dynamic N, H, W; output 'output')."""
    import logging
    import warnings

    twin = deployment_module(model, dtype, packed)
    multiple = int(getattr(model, "size_multiple", 1))
    side = -(-24 // multiple) * multiple
    example = torch.rand(1, 3, side, side + multiple).to(dtype)
    dim = torch.export.Dim.DYNAMIC
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), schemas_registered():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(twin, (example,), dynamo=True, input_names=["input"],
                                        output_names=["output"], dynamic_shapes=({0: dim, 2: dim, 3: dim},),
                                        opset_version=opset, custom_translation_table=translation_table(),
                                        optimize=True, verbose=False)
        except Exception as exc:  # the exporter's own error types; their messages run over many lines
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            raise I2NQError(f"torch's ONNX exporter cannot trace {getattr(model, 'arch', type(model).__name__)} "
                            f"({type(exc).__name__}: {first[:200]})") from None
    return program.model_proto
