"""The library calls behind `i2nq train` and `i2nq quantize`."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from i2nq.calib.data import TRAIN_RECIPES, VAL_PHOTOS, PairSet, skimage_photos, training_images
from i2nq.errors import I2NQError
from i2nq.calib.state import state_path_for
from i2nq.calib.train import TrainConfig, fit, val_psnr
from i2nq.models import build, save
from i2nq.models.checkpoint import config_of, load_any
from i2nq.models.registry import SRModel
from i2nq.quant import QuantConfig, calibrate_, is_quant_param, quantize_


def training_sets(scale: int, lr_patch: int, data: str | os.PathLike | None = None,
                  frames: int = 32, lr_recipe: str = "bicubic-aa") -> tuple[PairSet, PairSet]:
    """Training pairs from `data` (a folder of images or `frames` frames of a video; default scikit-image's
    photographs) with LR patches made by `lr_recipe` (TRAIN_RECIPES), and the held-out photograph for the
    validation log (antialiased bicubic LR)."""
    if lr_recipe not in TRAIN_RECIPES:
        raise I2NQError(f"unknown LR recipe {lr_recipe!r} (choose from: {', '.join(TRAIN_RECIPES)})")
    images = skimage_photos() if data is None else training_images(data, frames)
    return (PairSet.from_images(images, scale, lr_patch, TRAIN_RECIPES[lr_recipe]),
            PairSet.from_images(skimage_photos(VAL_PHOTOS), scale))


def _data_record(data: str | os.PathLike | None, frames: int) -> dict:
    """What a checkpoint records of its training data."""
    if data is None:
        return {"data": "scikit-image photographs"}
    return {"data": Path(data).name, **({"frames": frames} if Path(data).is_file() else {})}


def train_float(arch: str, scale: int, out: str | os.PathLike, cfg: TrainConfig,
                state: str | os.PathLike | None = None, log: Callable[[str], None] = print,
                data: str | os.PathLike | None = None, frames: int = 32,
                init: str | os.PathLike | None = None) -> SRModel:
    """Train a float model on `data` (see training_sets) and save it to `out`: from scratch, or fine-tune the float
    checkpoint `init` (its architecture then decides; `arch` and `scale` must match it)."""
    if init is None:
        model = build(arch, scale)
    else:
        model = load_any(init)
        if model.quant_config or (model.arch, model.scale) != (arch, scale):
            raise I2NQError(f"--init {init}: a {model.info.bits} {model.arch} x{model.scale} model; fine-tuning "
                            f"needs a float {arch} x{scale} checkpoint")
    train, val = training_sets(scale, cfg.lr_patch, data, frames, cfg.lr_recipe)
    state = Path(state) if state else state_path_for(out)
    record = _data_record(data, frames) | ({"init": Path(init).name if Path(str(init)).suffix else str(init)}
                                           if init else {})
    fit(model, train, cfg, state_path=state, val=val, log=log,
        run={"kind": "float", "model": _model_key(model), **record,
             **({"init_weights": _weights_digest(model)} if init else {})})
    save(model, out, training={"kind": "float", **asdict(cfg), **record})
    state.unlink(missing_ok=True)  # the run is complete: nothing to resume
    return model


def quantize_model(float_model: str | os.PathLike | SRModel, config: QuantConfig,
                   out: str | os.PathLike | None,
                   cfg: TrainConfig, calib_batches: int = 8, state: str | os.PathLike | None = None,
                   sets: tuple[PairSet, PairSet | None] | None = None, log: Callable[[str], None] = print,
                   data: str | os.PathLike | None = None, frames: int = 32,
                   start: str | os.PathLike | SRModel | None = None) -> SRModel:
    """Float model -> trained I²NQ (or uniform baseline) model: calibrate codebooks and scales on
    training patches, then QAT with `cfg.hr_loss` x L1 to the HR patch plus `cfg.distill` x L1 to the float
    parent's output (a pretrained parent trained for other degradations: hr_loss 0, distillation only, which needs
    input images only), plus `cfg.feature_distill` x the parent's features at every quantized conv (FeatureTaps);
    saves to `out`.

    Training patches come from `data` (see training_sets), or from `sets` (training, validation) as given.
    `start`: begin from the float weights of another model of the same network, such as a QAT model at more bits
    (progressive quantization: W4A4 QAT, then W3A3 from it); its quantizers are dropped and fitted again here, and
    the float parent stays the teacher."""
    teacher = load_any(float_model)
    student = copy.deepcopy(teacher)
    started = {}
    if start is not None:
        _load_float_weights(student, load_any(start))
        started = {"start_weights": _weights_digest(student)}
    quantize_(student, config)
    train, val = sets or training_sets(teacher.scale, cfg.lr_patch, data, frames, cfg.lr_recipe)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    calibrate_(student, (train.batch(cfg.batch, cfg.lr_patch, gen)[0] for _ in range(calib_batches)))
    log(f"calibrated: val_psnr {val_psnr(student, val):.3f} (float {val_psnr(teacher, val):.3f})")
    record = {} if sets else _data_record(data, frames)
    state_path = Path(state) if state else (state_path_for(out) if out else None)
    if cfg.steps > 0:
        run = {"kind": "qat", "parent": _model_key(teacher), "parent_weights": _weights_digest(teacher),
               "quant": config.to_dict(), "calib_batches": calib_batches, **started, **record}
        distilled = cfg.distill > 0 or cfg.feature_distill > 0
        fit(student, train, cfg, state_path=state_path, teacher=teacher if distilled else None, val=val,
            is_quant_param=is_quant_param, log=log, run=run)
    if out:
        save(student, out, training={"kind": "qat", "calib_batches": calib_batches, **asdict(cfg), **started, **record})
        if state_path:
            state_path.unlink(missing_ok=True)  # the run is complete: nothing to resume
    return student.eval()


def _load_float_weights(model: SRModel, source: SRModel) -> None:
    """Copy `source`'s float tensors (a quantized conv keeps its float weight and bias under the names the float
    conv has) into the float `model`; every tensor of `model` must be there, with the same shape."""
    have = source.state_dict()
    want = model.state_dict()
    missing = [k for k, v in want.items() if k not in have or have[k].shape != v.shape]
    if missing:
        raise I2NQError(f"the start model is not the same network as the parent (no {missing[0]!r} of that shape)")
    model.load_state_dict({k: have[k] for k in want})


def _model_key(model: SRModel) -> dict:
    """The architecture part of a run's identity (the checkpoint config without version stamps)."""
    return {k: v for k, v in config_of(model).items() if k not in ("i2nq_version", "format")}


def _weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's tensors: a QAT run resumes only on the same parent weights."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
