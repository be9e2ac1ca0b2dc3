"""Architectures from spandrel (the model library of chaiNNer and ComfyUI) as i2nq models: Real-ESRGAN Compact
(SRVGGNetCompact), SPAN, ESRGAN/RRDB and the other convolutional SR architectures spandrel detects from a state
dict. The network is spandrel's own module in eval form; re-parameterizable blocks (SPAN's Conv3XC: a 1x1-3x3-1x1
chain plus a 1x1 skip that collapse into one 3x3 convolution at inference) are collapsed into the convolution
they deploy as, so that quantization sees the network that runs."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import sys
import types
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from i2nq.errors import I2NQError
from i2nq.models.info import ModelInfo, describe

SCALES = (1, 2, 3, 4, 8)
_TORCHVISION = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


def import_spandrel() -> types.ModuleType:
    """spandrel, imported even where torchvision cannot be imported.

    spandrel imports torchvision at import time for two architectures i2nq does not use (LaMa inpainting and
    RestoreFormer face restoration). A CPU-only torch next to PyPI's CUDA build of torchvision (what
    `pip install torch==X+cpu spandrel` gives) fails that import; then spandrel is loaded with stand-ins for
    those torchvision names, which raise if those two architectures are ever run, and the stand-ins are removed
    again so that nothing else sees them.
    """
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        importlib.import_module("torchvision.transforms.functional")
        stand_ins = False
    except Exception:  # missing, or a build for another torch (raises RuntimeError on import)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        for name in _TORCHVISION:
            sys.modules[name] = _stand_in(name)
        stand_ins = True
    try:
        return importlib.import_module("spandrel")
    except ModuleNotFoundError as exc:
        if exc.name == "spandrel":
            raise I2NQError("this model needs the Python package spandrel: pip install 'i2nq[torch]'") from None
        raise
    finally:
        if stand_ins:
            for name in _TORCHVISION:
                sys.modules.pop(name, None)


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []

    def missing(*_args, **_kwargs):
        raise ImportError(f"{name} could not be imported; this spandrel architecture needs a working torchvision")

    def attribute(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return missing

    module.__getattr__ = attribute
    return module


def collapse_reparameterized_(net: nn.Module) -> list[str]:
    """Replace every re-parameterizable block (a module with `update_params()` and an `eval_conv`, e.g. SPAN's
    Conv3XC) by the single convolution it runs as in eval mode (followed by its LeakyReLU where it has one);
    returns the names replaced. The output is unchanged: eval mode already runs exactly that convolution."""
    replaced = []
    for name, module in list(net.named_modules()):
        if not (hasattr(module, "update_params") and isinstance(getattr(module, "eval_conv", None), nn.Conv2d)):
            continue
        with torch.no_grad():
            module.update_params()
        conv = module.eval_conv
        conv.weight.requires_grad_(True)
        if conv.bias is not None:
            conv.bias.requires_grad_(True)
        new: nn.Module = conv
        if getattr(module, "has_relu", False):
            new = nn.Sequential(conv, nn.LeakyReLU(0.05))
        parent_name, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent_name) if parent_name else net, child, new)
        replaced.append(name)
    return replaced


class SpandrelSR(nn.Module):
    """An SR network from spandrel with the i2nq model interface: NCHW RGB float in [0, 1] in and out, `scale`,
    `arch` ("spandrel:<id>"), `quant_config`, `info` (receptive field measured on first use)."""

    def __init__(self, net: nn.Module, arch_id: str, scale: int, size_multiple: int = 1,
                 resize: dict | None = None) -> None:
        super().__init__()
        self.net = net
        self.arch, self.spandrel_arch, self.scale = f"spandrel:{arch_id}", arch_id, scale
        self.size_multiple, self.resize = size_multiple, resize
        self.quant_config: dict | None = None  # set by i2nq.quant.quantize_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if self.resize:  # e.g. an x4 network published as x2 with a bicubic downscale of its output
            mode = self.resize["mode"]
            y = F.interpolate(y, scale_factor=self.resize["factor"], mode=mode,
                              align_corners=None if mode == "nearest" else False)
        return y

    def spec(self) -> dict:
        """What rebuilds this network's module (with `rebuild`): spandrel's class and hyperparameters."""
        cls = type(self.net)
        return {"arch_id": self.spandrel_arch, "module": cls.__module__, "class": cls.__qualname__,
                "hyperparameters": json.loads(json.dumps(getattr(self.net, "hyperparameters", {}))),
                "size_multiple": self.size_multiple, "resize": self.resize}

    @cached_property
    def receptive_field(self) -> int | None:
        """Radius in input pixels (None: unbounded), measured (i2nq.models.receptive)."""
        from i2nq.models.receptive import measure_receptive_field

        return measure_receptive_field(self, self.scale, multiple=self.size_multiple)

    @property
    def info(self) -> ModelInfo:
        return describe(self)


def from_state_dict(state: dict[str, torch.Tensor], name: str) -> SpandrelSR:
    """Detect the architecture of a (canonical) state dict with spandrel and load it; I2NQError when spandrel
    does not know it or it is not a 3-channel SR model."""
    spandrel = import_spandrel()
    state = spandrel.canonicalize_state_dict(dict(state))
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise I2NQError(f"{name}: not a model architecture i2nq or spandrel knows (its first keys: "
                        f"{', '.join(list(state)[:3])})") from None
    except Exception as exc:  # spandrel raises many types for state dicts that match an arch but not its shapes
        raise I2NQError(f"{name}: spandrel could not load it ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    return _wrap(descriptor, name)


def _wrap(descriptor, name: str) -> SpandrelSR:
    arch_id = str(descriptor.architecture.id)
    if not isinstance(descriptor, importlib.import_module("spandrel").ImageModelDescriptor):
        raise I2NQError(f"{name}: a {arch_id} model ({type(descriptor).__name__}); i2nq runs image-to-image SR models")
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise I2NQError(f"{name}: a {arch_id} model with {descriptor.input_channels} input and "
                        f"{descriptor.output_channels} output channels; i2nq runs 3-channel RGB models")
    if descriptor.scale not in SCALES:
        raise I2NQError(f"{name}: a x{descriptor.scale} {arch_id} model; supported scales: {SCALES}")
    net = descriptor.model.float().eval()
    collapse_reparameterized_(net)
    for p in net.parameters():
        p.requires_grad_(True)
    req = descriptor.size_requirements
    if req.square:
        raise I2NQError(f"{name}: {arch_id} needs square inputs, which tiling cannot give")
    return SpandrelSR(net, arch_id, int(descriptor.scale), size_multiple=int(req.multiple_of)).eval()


ARCHITECTURES = {"Compact": "spandrel.architectures.Compact", "SPAN": "spandrel.architectures.SPAN",
                 "ESRGAN": "spandrel.architectures.ESRGAN"}  # the ones i2nq builds itself (from ncnn files)


def architecture_class(arch_id: str) -> type[nn.Module]:
    """spandrel's module class of one of ARCHITECTURES (each exports its class under its id)."""
    import_spandrel()
    return getattr(importlib.import_module(ARCHITECTURES[arch_id]), arch_id)


def wrap_module(arch_id: str, hyperparameters: dict, state: dict[str, torch.Tensor], name: str,
                resize: dict | None = None) -> SpandrelSR:
    """A SpandrelSR of spandrel's `arch_id` built with `hyperparameters` and loaded with `state` (its module's own
    state dict, e.g. converted from ncnn), collapsed for deployment, optionally resizing its output."""
    net = architecture_class(arch_id)(**hyperparameters)
    net.load_state_dict(state, strict=True)
    net = net.float().eval()
    collapse_reparameterized_(net)
    model = SpandrelSR(net, arch_id, 1, resize=resize).eval()
    with torch.no_grad():
        side = model(torch.zeros(1, 3, 8, 8)).shape[-1]
    if side % 8 or side // 8 not in SCALES:
        raise I2NQError(f"{name}: a x{side / 8:g} {arch_id} model; supported scales: {SCALES}")
    model.scale = side // 8
    return model


def rebuild(spec: dict, scale: int) -> SpandrelSR:
    """An untrained SpandrelSR of the architecture `spec` (from SpandrelSR.spec) describes, collapsed as at import;
    the weights come from the checkpoint."""
    if not str(spec.get("module", "")).startswith("spandrel.architectures."):
        raise I2NQError(f"checkpoint names a module outside spandrel's architectures: {spec.get('module')!r}")
    import_spandrel()
    try:
        cls = getattr(importlib.import_module(spec["module"]), spec["class"])
        net = cls(**spec["hyperparameters"]).float().eval()
    except Exception as exc:
        raise I2NQError(f"cannot rebuild spandrel {spec.get('arch_id')} with this spandrel version "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    collapse_reparameterized_(net)
    return SpandrelSR(net, spec["arch_id"], scale, size_multiple=int(spec.get("size_multiple", 1)),
                      resize=spec.get("resize")).eval()
