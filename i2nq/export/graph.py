"""The ONNX graph of an EDSR-family or SRResNet model, emitted node by node from its module structure.

Why not torch.onnx.export: walking the (small, fixed) model structure with onnx.helper gives a
deterministic, readable graph in one pass: activation sites become NUQuant nodes, quantized weights
become packed codes + levels rebuilt by LUTDequant, float layers stay plain initializers, and nothing
from the training-time quantizers (STE, observers, float shadow weights) leaks into the file.

Mapping: Conv2d -> Conv, ReLU -> Relu (dropped before a NUQuant whose levels are all >= 0, which maps
every x <= 0 to level 0 anyway: QuantConv2d.absorbs_relu), PixelShuffle(r) -> DepthToSpace(r, mode="CRD") (same channel
order), LeakyReLU -> LeakyRelu, bicubic skip -> Resize(cubic, cubic_coeff_a=-0.75, half_pixel) and bilinear skip
-> Resize(linear, half_pixel), which equal torch's F.interpolate(align_corners=False) including the replicated
border.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper
from torch import nn

from i2nq.errors import I2NQError
from i2nq.export.ops import custom_node
from i2nq.models.edsr import EDSR, ResBlock
from i2nq.models.srresnet import SRResNet
from i2nq.quant import QuantConv2d, pack_codes

INPUT, OUTPUT = "input", "output"


@dataclass
class GraphBuilder:
    """Accumulates nodes and initializers; float tensors are stored in `dtype` (float32 or float16)."""

    dtype: type = np.float32
    nodes: list[NodeProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)
    activation_sites: list[str] = field(default_factory=list)  # NUQuant output names, in graph order
    _count: int = 0

    @property
    def elem_type(self) -> int:
        return TensorProto.FLOAT16 if self.dtype == np.float16 else TensorProto.FLOAT

    def const(self, name: str, value: np.ndarray | torch.Tensor, cast: bool = True) -> str:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if cast and array.dtype.kind == "f":
            array = array.astype(self.dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, prefix: str, x: str, m: nn.Conv2d | QuantConv2d) -> str:
        """A float Conv2d, or a QuantConv2d as NUQuant(x) -> Conv with a LUTDequant-rebuilt weight."""
        if isinstance(m, QuantConv2d):
            weight = self._quant_weight(prefix, m)
            levels = self.const(f"{prefix}.act_levels", m.act_quant.codebook.levels())
            self.nodes.append(custom_node("NUQuant", [x, levels], [f"{prefix}.act_q"], name=f"{prefix}.act_q"))
            self.activation_sites.append(f"{prefix}.act_q")
            x = f"{prefix}.act_q"
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros":
                raise I2NQError(f"cannot export {prefix}: only plain zero-padded convolutions are supported")
            weight = self.const(f"{prefix}.weight", m.weight)
        else:
            raise I2NQError(f"cannot export {prefix}: unsupported module {type(m).__name__}")
        inputs = [x, weight] + ([self.const(f"{prefix}.bias", m.bias)] if m.bias is not None else [])
        ph, pw = m.padding
        return self.node("Conv", inputs, prefix, kernel_shape=list(m.weight.shape[2:]),
                         pads=[ph, pw, ph, pw], strides=list(m.stride))

    def _quant_weight(self, prefix: str, m: QuantConv2d) -> str:
        """Packed codes + per-channel levels (scale folded in), rebuilt into the weight by LUTDequant."""
        codes, levels = m.weight_quant.export(m.weight)
        bits = int(np.log2(levels.shape[-1]))
        if codes.numel() * bits > 2**24:  # LUTDequant's body unpacks in float32 arithmetic
            raise I2NQError(f"cannot export {prefix}: {codes.numel()} weights of {bits} bits exceed 2**24 bits")
        packed = self.const(f"{prefix}.weight_codes", pack_codes(codes.cpu().numpy(), bits), cast=False)
        lv = self.const(f"{prefix}.weight_levels", levels)
        self.nodes.append(custom_node("LUTDequant", [packed, lv], [f"{prefix}.weight"], name=f"{prefix}.weight",
                                      bits=bits, shape=list(codes.shape), axis=0))
        return f"{prefix}.weight"

    def scales(self, scale: int) -> str:
        """The Resize scales of a global skip: [1, 1, scale, scale]."""
        return self.const("skip.scales", np.array([1.0, 1.0, scale, scale], np.float32), cast=False)

    def module(self, prefix: str, x: str, m: nn.Module) -> str:
        """Emit `m` applied to `x`; returns the output name."""
        if isinstance(m, nn.Sequential):
            for name, child in m.named_children():
                x = self.module(f"{prefix}.{name}", x, child)
            return x
        if isinstance(m, ResBlock):
            h = self.conv(f"{prefix}.conv1", x, m.conv1)
            if not (isinstance(m.conv2, QuantConv2d) and m.conv2.absorbs_relu()):  # else NUQuant does its work
                h = self.node("Relu", [h], f"{prefix}.act")
            h = self.conv(f"{prefix}.conv2", h, m.conv2)
            if m.res_scale != 1.0:
                h = self.node("Mul", [h, self.const(f"{prefix}.res_scale", np.array(m.res_scale))], f"{prefix}.scaled")
            return self.node("Add", [x, h], f"{prefix}.out")
        if isinstance(m, nn.ReLU):
            return self.node("Relu", [x], prefix)
        if isinstance(m, nn.LeakyReLU):
            return self.node("LeakyRelu", [x], prefix, alpha=float(m.negative_slope))
        if isinstance(m, nn.PixelShuffle):
            return self.node("DepthToSpace", [x], prefix, blocksize=m.upscale_factor, mode="CRD")
        return self.conv(prefix, x, m)


def build_graph(model: EDSR | SRResNet, dtype: type = np.float32) -> tuple[GraphProto, GraphBuilder]:
    """The export graph of `model` (input "input" [N,3,H,W] -> output "output" [N,3,H*s,W*s])."""
    if not isinstance(model, (EDSR, SRResNet)):
        raise I2NQError(f"cannot export {type(model).__name__}: only i2nq EDSR and SRResNet models are supported")
    b = GraphBuilder(dtype=dtype)
    with torch.no_grad():
        if isinstance(model, SRResNet):
            h = b.module("act", b.module("head", INPUT, model.head), model.act)
            up = b.module("upsample", b.module("body", h, model.body), model.upsample)
            out = b.module("tail", b.module("act_hr", b.module("conv_hr", up, model.conv_hr), model.act), model.tail)
            skip = b.node("Resize", [INPUT, "", b.scales(model.scale)], "skip.bilinear", mode="linear",
                          coordinate_transformation_mode="half_pixel")
        else:
            mean = b.const("rgb_mean", model.rgb_mean)
            h = b.module("head", b.node("Sub", [INPUT, mean], "centered"), model.head)
            body = b.module("body", h, model.body)
            out = b.module("tail", b.node("Add", [body, h], "body.skip"), model.tail)
            skip = mean
            if model.skip == "bicubic":
                skip = b.node("Resize", [INPUT, "", b.scales(model.scale)], "skip.bicubic", mode="cubic",
                              cubic_coeff_a=-0.75, coordinate_transformation_mode="half_pixel", exclude_outside=0)
        b.nodes.append(helper.make_node("Add", [out, skip], [OUTPUT], name="output"))
    inputs = [helper.make_tensor_value_info(INPUT, b.elem_type, ["N", 3, "H", "W"])]
    outputs = [helper.make_tensor_value_info(OUTPUT, b.elem_type, ["N", 3, "Hs", "Ws"])]
    graph = helper.make_graph(b.nodes, f"i2nq_{model.arch}_x{model.scale}", inputs, outputs, b.initializers)
    return graph, b
