"""Import float models trained elsewhere: EDSR (EDSR-PyTorch, BasicSR) and SRResNet (BasicSR's MSRResNet) into our
own architectures; every architecture spandrel detects (Real-ESRGAN Compact, SPAN, ESRGAN/RRDB, ...) from .pth or
.safetensors weights; and ncnn .param/.bin pairs of Compact, SPAN and RRDB models (i2nq.models.ncnn).

The format is recognized from the state dict's key names and the configuration (blocks, features, scale) from
its shapes. Their EDSRs take RGB in [0, rgb_range] (255) and output the same range; ours take and give [0, 1].
Both subtract the same DIV2K mean first, so the conversion is exact: the head conv's weights are multiplied by
rgb_range and the tail conv's weights and bias divided by it. MSRResNet maps one to one. Files are read without
unpickling code.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from i2nq.errors import I2NQError
from i2nq.models.edsr import EDSR, RGB_MEAN
from i2nq.models.registry import SCALES
from i2nq.models.spandrel_models import SpandrelSR, from_state_dict
from i2nq.models.srresnet import SRResNet

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
NCNN_SUFFIXES = (".param", ".bin")
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net")  # BasicSR, Lightning and others


@dataclass(frozen=True)
class Layout:
    """Where a code base keeps EDSR's parts; `{i}` is a block index, `{j}` an upsampler index."""

    name: str
    head: str
    conv1: str
    conv2: str
    body_tail: str
    upsample: str
    tail: str
    rgb_range: float | None  # None: read from the checkpoint's MeanShift layers

    def ours_to_theirs(self, model: EDSR) -> dict[str, str]:
        """Our state-dict key -> theirs, for every tensor of `model`."""
        n = model.n_blocks
        names = {"head": self.head, f"body.{n}": self.body_tail.format(n=n), "tail.1": self.tail}
        names.update({f"body.{i}.conv{c}": (self.conv1 if c == 1 else self.conv2).format(i=i)
                      for i in range(n) for c in (1, 2)})
        names.update({f"tail.0.{j}": self.upsample.format(j=j)
                      for j, m in enumerate(model.tail[0]) if isinstance(m, torch.nn.Conv2d)})
        return {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in names.items() for p in ("weight", "bias")}


LAYOUTS = (
    Layout("EDSR-PyTorch", "head.0", "body.{i}.body.0", "body.{i}.body.2", "body.{n}", "tail.0.{j}", "tail.1", None),
    Layout("BasicSR", "conv_first", "body.{i}.conv1", "body.{i}.conv2", "conv_after_body", "upsample.{j}",
           "conv_last", 255.0),
)
MEAN_SHIFT_KEYS = ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias")


@dataclass(frozen=True)
class Imported:
    """What an import found: the model and how it was read (recorded in the converted checkpoint)."""

    model: EDSR | SRResNet | SpandrelSR
    source: dict


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a .pt/.pth/.ckpt (plain or wrapped state dict) or a .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise I2NQError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise I2NQError(f"not a readable safetensors checkpoint: {path} ({type(exc).__name__})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's weights-only unpickler names the class or function it refused as a pickle GLOBAL ("Unsupported
        # global: GLOBAL x", or in torch 2.13 for a blocked module "unsupported GLOBAL posix.system"); anything else
        # (an unsupported opcode, a bad zip) is a garbled or foreign file
        unsafe = isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc)
        raise I2NQError(f"{path.name}: " + (
            "it pickles Python objects, not just tensors, and is not unpickled for safety; "
            "save the model's state_dict() instead" if unsafe
            else f"not a readable torch checkpoint ({type(exc).__name__})")) from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise I2NQError(f"{path.name}: not a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def import_checkpoint(path: str | os.PathLike, *, res_scale: float | None = None,
                      rgb_range: float | None = None) -> Imported:
    """Read a float EDSR (EDSR-PyTorch or BasicSR) or SRResNet (BasicSR's MSRResNet) checkpoint as the i2nq
    model of the same architecture (eval mode, [0, 1] RGB).

    res_scale is not stored in the weights: by default 0.1 for EDSR with 256 features (EDSR's paper model,
    BasicSR's EDSR-L) and 1 otherwise (EDSR-baseline, EDSR-M, MSRResNet). rgb_range: BasicSR EDSR's img_range
    (default 255); an EDSR-PyTorch checkpoint records it in its MeanShift layers; MSRResNet works in [0, 1].
    """
    path = Path(path)
    if path.suffix.lower() in NCNN_SUFFIXES:
        return import_ncnn(path.with_suffix(".param"))
    state = read_state_dict(path)
    if "conv_hr.weight" in state and "upconv1.weight" in state:
        return _import_msrresnet(state, path, res_scale, rgb_range)
    layout = next((lay for lay in LAYOUTS if f"{lay.head}.weight" in state and f"{lay.tail}.weight" in state), None)
    if layout is None:
        if res_scale is not None or rgb_range is not None:
            raise I2NQError(f"{path.name}: --res-scale and --rgb-range apply to EDSR and MSRResNet weights only")
        model = from_state_dict(state, path.name)
        return Imported(model, dict(format="spandrel", arch=model.spandrel_arch, file=path.name))
    n_feats = _head_features(state[f"{layout.head}.weight"], path)
    n_blocks = _count_blocks(state, layout.conv1)
    scale = _scale(state, layout.upsample, n_feats, path)
    if res_scale is None:
        res_scale = 0.1 if n_feats >= 256 else 1.0
    if rgb_range is None:
        rgb_range = layout.rgb_range or _mean_shift_range(state, path)
    elif layout.rgb_range is None:
        _mean_shift_range(state, path)  # still validates the mean and std
    if not rgb_range > 0:
        raise I2NQError(f"rgb_range must be positive, got {rgb_range}")

    arch = "edsr" if n_feats >= 256 else "edsr-baseline"
    model = EDSR(scale=scale, arch=arch, n_blocks=n_blocks, n_feats=n_feats, res_scale=res_scale, skip="none")
    extra = set(MEAN_SHIFT_KEYS) if layout.rgb_range is None else set()
    ours = _mapped(state, layout.ours_to_theirs(model), extra, f"{layout.name} EDSR", path)
    ours["head.weight"] = ours["head.weight"] * rgb_range
    ours["tail.1.weight"] = ours["tail.1.weight"] / rgb_range
    ours["tail.1.bias"] = ours["tail.1.bias"] / rgb_range
    _load(model, ours, path)
    return Imported(model.eval(), dict(format=layout.name, file=path.name, rgb_range=rgb_range, res_scale=res_scale))


def import_ncnn(param: str | os.PathLike, label: str | None = None) -> Imported:
    """An ncnn model (.param and the .bin beside it) of a Compact, SPAN or RRDB network, exactly, as a SpandrelSR."""
    from i2nq.models.ncnn import output_resize, read_ncnn, to_state_dict
    from i2nq.models.spandrel_models import wrap_module

    param = Path(param)
    layers, resize = output_resize(read_ncnn(param))
    arch_id, hp, state = to_state_dict(layers, param.name)
    model = wrap_module(arch_id, hp, state, label or param.stem, resize)
    return Imported(model, dict(format="ncnn", arch=arch_id, file=label or param.name,
                                **({"output_resize": resize} if resize else {})))


def _import_msrresnet(state: dict[str, torch.Tensor], path: Path, res_scale: float | None,
                      rgb_range: float | None) -> Imported:
    """BasicSR's MSRResNet: conv_first, body.{i}.conv1/conv2, upconv1 (and upconv2 at x4), conv_hr, conv_last."""
    if rgb_range not in (None, 1):
        raise I2NQError(f"{path.name}: MSRResNet works on pixels in [0, 1]; rgb_range does not apply")
    n_feats = _head_features(state["conv_first.weight"], path)
    scale = _scale(state, "upconv{j}", n_feats, path, first=1, step=1)
    res_scale = 1.0 if res_scale is None else res_scale
    model = SRResNet(scale=scale, n_blocks=_count_blocks(state, "body.{i}.conv1"), n_feats=n_feats,
                     res_scale=res_scale)
    names = {"head": "conv_first", "conv_hr": "conv_hr", "tail": "conv_last"}
    names.update({f"body.{i}.conv{c}": f"body.{i}.conv{c}" for i in range(model.n_blocks) for c in (1, 2)})
    convs = [j for j, m in enumerate(model.upsample) if isinstance(m, torch.nn.Conv2d)]
    names.update({f"upsample.{j}": f"upconv{k + 1}" for k, j in enumerate(convs)})
    mapping = {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in names.items() for p in ("weight", "bias")}
    _load(model, _mapped(state, mapping, set(), "BasicSR MSRResNet", path), path)
    return Imported(model.eval(), dict(format="BasicSR", file=path.name, rgb_range=1.0, res_scale=res_scale))


def _head_features(head: torch.Tensor, path: Path) -> int:
    if head.ndim != 4 or head.shape[1:] != (3, 3, 3):
        raise I2NQError(f"{path.name}: the head conv takes {tuple(head.shape[1:])} (channels, kh, kw); "
                        "only 3-channel RGB models with 3x3 convolutions are supported")
    return head.shape[0]


def _count_blocks(state: dict[str, torch.Tensor], conv1: str) -> int:
    n = 0
    while f"{conv1.format(i=n)}.weight" in state:
        n += 1
    return n


def _mapped(state: dict[str, torch.Tensor], mapping: dict[str, str], extra: set[str], what: str,
            path: Path) -> dict[str, torch.Tensor]:
    """Our state dict from theirs by `mapping` (ours -> theirs); every key of theirs must be mapped or `extra`."""
    expected = set(mapping.values()) | extra
    if expected != set(state):
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        detail = "; ".join(f"{kind} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
        raise I2NQError(f"{path.name}: {what} checkpoint with an unexpected structure ({detail})")
    return {k: state[theirs].float() for k, theirs in mapping.items()}


def _load(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise I2NQError(f"{path.name}: tensor shapes do not form the model "
                        f"({str(exc).splitlines()[-1].strip()})") from None


def _scale(state: dict[str, torch.Tensor], upsample: str, n_feats: int, path: Path, first: int = 0,
           step: int = 2) -> int:
    """The upscale factor from the upsampler convs' output channels (4n per x2 stage, 9n for x3); `upsample`
    names conv j, numbered from `first` in steps of `step`."""
    names = []
    j = first
    while f"{upsample.format(j=j)}.weight" in state:
        names.append(f"{upsample.format(j=j)}.weight")
        j += step
    factors = [{4 * n_feats: 2, 9 * n_feats: 3}.get(state[n].shape[0], 0) for n in names]
    scale = math.prod(factors)
    if not factors or 0 in factors or (3 in factors and len(factors) > 1) or scale not in SCALES:
        raise I2NQError(f"{path.name}: unsupported upsampler (output channels {[state[n].shape[0] for n in names]} "
                        f"for {n_feats} features); supported scales: {', '.join(map(str, SCALES))}")
    return scale


def _mean_shift_range(state: dict[str, torch.Tensor], path: Path) -> float:
    """rgb_range from EDSR-PyTorch's MeanShift convs (bias = -/+ rgb_range * mean, weight = identity)."""
    eye = torch.eye(3).view(3, 3, 1, 1)
    mean = torch.tensor(RGB_MEAN)
    try:
        sub_w, sub_b, add_w, add_b = (state[k].float() for k in MEAN_SHIFT_KEYS)
    except KeyError as exc:
        raise I2NQError(f"{path.name}: EDSR-PyTorch checkpoint without its MeanShift layer {exc}") from None
    if sub_w.shape != eye.shape or not (torch.allclose(sub_w, eye) and torch.allclose(add_w, eye)):
        raise I2NQError(f"{path.name}: its MeanShift divides by an rgb_std other than 1, which is not supported")
    ratio = -sub_b / mean
    if not (torch.allclose(ratio, ratio.mean(), rtol=1e-3) and torch.allclose(add_b, -sub_b, rtol=1e-4)):
        raise I2NQError(f"{path.name}: its MeanShift uses an RGB mean other than DIV2K's {RGB_MEAN}, "
                        "which is not supported")
    return round(float(ratio.mean()), 3)
