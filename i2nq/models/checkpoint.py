"""Checkpoints: one .safetensors file whose metadata holds the JSON config (arch, scale, quantizer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from i2nq import __version__
from i2nq.errors import I2NQError
from i2nq.files import atomic_output
from i2nq.models.foreign import NCNN_SUFFIXES, TORCH_SUFFIXES, import_checkpoint
from i2nq.models.registry import ARCHS, SRModel, build
from i2nq.models.spandrel_models import SpandrelSR, rebuild

FORMAT = "i2nq-checkpoint/1"


def config_of(model: SRModel, **extra) -> dict:
    """The JSON config that, with the tensors, rebuilds `model` exactly: the architecture (ours with its
    overrides, or spandrel's class and hyperparameters) and, for a quantized model, the quantizer and its sites."""
    from i2nq.quant import site_record

    if isinstance(model, SpandrelSR):
        arch = {"spandrel": model.spec()}
    else:
        arch = {"arch_overrides": {k: getattr(model, k) for k in ARCHS[model.arch]
                                   if getattr(model, k) != ARCHS[model.arch][k]}}
    quant = {**model.quant_config, "sites": site_record(model)} if model.quant_config else None
    return {"format": FORMAT, "i2nq_version": __version__, "arch": model.arch, "scale": model.scale, **arch,
            "quant": quant, **extra}


def save(model: SRModel, path: str | os.PathLike, **extra) -> Path:
    """Write `model` (float or quantized) atomically to `path` (.safetensors); `extra` goes into the config."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise I2NQError(f"checkpoint path must end in .safetensors: {path}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"i2nq": json.dumps(config_of(model, **extra), sort_keys=True)}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _metadata(path: Path) -> dict:
    """The metadata of a safetensors file; I2NQError if it is missing or unreadable."""
    from safetensors import safe_open

    if not path.is_file():
        raise I2NQError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise I2NQError(f"not a readable safetensors checkpoint: {path} ({type(exc).__name__})") from None


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is an i2nq checkpoint (a .safetensors file with i2nq metadata), not foreign weights."""
    path = Path(path)
    return path.suffix.lower() == ".safetensors" and "i2nq" in _metadata(path)


def read_config(path: str | os.PathLike) -> dict:
    """The JSON config stored in an i2nq checkpoint; I2NQError if it is not one."""
    path = Path(path)
    return _config(_metadata(path), path)


def _config(meta: dict, path: Path) -> dict:
    if "i2nq" not in meta:
        raise I2NQError(f"not an i2nq checkpoint (no i2nq config in its metadata): {path}")
    try:
        cfg = json.loads(meta["i2nq"])
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        raise I2NQError(f"not an i2nq checkpoint (its i2nq metadata is not a JSON object): {path}")
    if cfg.get("format") != FORMAT:
        raise I2NQError(f"unsupported checkpoint format {cfg.get('format')!r} in {path}")
    return cfg


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A shipped model name ('default'), a model of an installed package by its stem ('realesr-animevideov3-x4',
    'spanx4_ch48': its .param file) or a path to a checkpoint (.safetensors, foreign .pt/.pth/.ckpt, ncnn .param)."""
    p = Path(name_or_path)
    if p.suffix.lower() in (".safetensors", *TORCH_SUFFIXES, *NCNN_SUFFIXES) or p.exists():
        if not p.is_file():
            raise I2NQError(f"checkpoint not found: {p}")
        return p
    from i2nq.assets import MODELS, model_names
    from i2nq.packaged import find_packaged, unknown_model_error

    if (MODELS / f"{p}.safetensors").is_file():
        return MODELS / f"{p}.safetensors"
    packaged = find_packaged(str(name_or_path))
    if packaged is None:
        raise unknown_model_error(str(name_or_path), model_names())
    return packaged


def load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> SRModel:
    """Load a shipped model by name or a checkpoint path; returns the module in eval mode.

    The module maps NCHW RGB float in [0, 1] to the upscaled image in the same convention;
    `module.info` describes it (arch, scale, bits, receptive field). Float weights from elsewhere are imported
    with default options (`i2nq.models.foreign.import_checkpoint`): EDSR (EDSR-PyTorch, BasicSR) and MSRResNet
    (BasicSR) .pt/.pth/.ckpt, any architecture spandrel detects (.pth, or .safetensors without i2nq metadata),
    ncnn .param/.bin pairs of Compact, SPAN and RRDB networks, and the models of installed packages by name.
    """
    from safetensors.torch import load_file

    path = resolve(name_or_path)
    meta = _metadata(path) if path.suffix.lower() == ".safetensors" else {}
    if "i2nq" not in meta:  # foreign weights
        return import_checkpoint(path).model.to(device)
    cfg = _config(meta, path)
    if str(cfg.get("arch", "")).startswith("spandrel:"):
        model = rebuild(cfg["spandrel"], cfg["scale"])
    else:
        model = build(cfg["arch"], cfg["scale"], **cfg.get("arch_overrides", {}))
    try:
        state = load_file(str(path))
        if cfg.get("quant"):
            _quantize_like(model, cfg["quant"], state)
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise I2NQError(f"checkpoint {path} does not match its config ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]})") from None
    return model.eval().to(device)


def _quantize_like(model: SRModel, quant: dict, state: dict[str, torch.Tensor]) -> None:
    """Quantize a freshly built model at the sites a checkpoint holds, with their zero levels (checkpoints before
    site records: the sites are the tensors' owners, and a zero level is an anchor stored as exactly 0)."""
    from i2nq.quant import config_from_dict, quantize_, restore_sites_

    record = quant.get("sites")
    if record is None:
        names = sorted({k.split(".act_quant.")[0] for k in state if ".act_quant." in k})
        anchors = {n: state.get(f"{n}.act_quant.codebook.first", state.get(f"{n}.act_quant.codebook.lo")) for n in names}
        record = {n: {"zero_level": a is not None and bool(a.float().eq(0).all())} for n, a in anchors.items()}
    quantize_(model, config_from_dict(quant), init_weights=False, sites=list(record))
    restore_sites_(model, record)


def load_any(model: nn.Module | str | os.PathLike) -> SRModel:
    """A module passes through; a name or path is loaded."""
    return model if isinstance(model, nn.Module) else load(model)
