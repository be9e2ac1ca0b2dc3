"""The library calls behind `i2nq train` and `i2nq quantize`."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from i2nq.calib.data import VAL_PHOTOS, PairSet, skimage_photos, training_images
from i2nq.calib.train import TrainConfig, fit, val_psnr
from i2nq.models import build, save
from i2nq.models.checkpoint import load_any
from i2nq.models.registry import SRModel
from i2nq.quant import QuantConfig, calibrate_, is_quant_param, quantize_


def training_sets(scale: int, lr_patch: int, data: str | os.PathLike | None = None,
                  frames: int = 32) -> tuple[PairSet, PairSet]:
    """Training pairs from `data` (a folder of images or `frames` frames of a video; default scikit-image's
    photographs), and the held-out photograph for the validation log."""
    images = skimage_photos() if data is None else training_images(data, frames)
    return PairSet.from_images(images, scale, lr_patch), PairSet.from_images(skimage_photos(VAL_PHOTOS), scale)


def _data_record(data: str | os.PathLike | None, frames: int) -> dict:
    """What a checkpoint records of its training data."""
    if data is None:
        return {"data": "scikit-image photographs"}
    return {"data": Path(data).name, **({"frames": frames} if Path(data).is_file() else {})}


def train_float(arch: str, scale: int, out: str | os.PathLike, cfg: TrainConfig,
                state: str | os.PathLike | None = None, log: Callable[[str], None] = print,
                data: str | os.PathLike | None = None, frames: int = 32) -> SRModel:
    """Train a float model from scratch on `data` (see training_sets) and save it to `out`."""
    model = build(arch, scale)
    train, val = training_sets(scale, cfg.lr_patch, data, frames)
    state = Path(state) if state else Path(out).with_suffix(".state.pt")
    fit(model, train, cfg, state_path=state, val=val, log=log)
    save(model, out, training={"kind": "float", **asdict(cfg), **_data_record(data, frames)})
    return model


def quantize_model(float_model: str | os.PathLike | SRModel, config: QuantConfig,
                   out: str | os.PathLike | None,
                   cfg: TrainConfig, calib_batches: int = 8, state: str | os.PathLike | None = None,
                   sets: tuple[PairSet, PairSet | None] | None = None, log: Callable[[str], None] = print,
                   data: str | os.PathLike | None = None, frames: int = 32) -> SRModel:
    """Float model -> trained I²NQ (or uniform baseline) model: calibrate codebooks and scales on
    training patches, then QAT with L1 plus `cfg.distill` x L1 to the float parent; saves to `out`.

    Training patches come from `data` (see training_sets), or from `sets` (training, validation) as given."""
    teacher = load_any(float_model)
    student = copy.deepcopy(teacher)
    quantize_(student, config)
    train, val = sets or training_sets(teacher.scale, cfg.lr_patch, data, frames)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    calibrate_(student, (train.batch(cfg.batch, cfg.lr_patch, gen)[0] for _ in range(calib_batches)))
    log(f"calibrated: val_psnr {val_psnr(student, val):.3f} (float {val_psnr(teacher, val):.3f})")
    if cfg.steps > 0:
        state_path = Path(state) if state else (Path(out).with_suffix(".state.pt") if out else None)
        fit(student, train, cfg, state_path=state_path, teacher=teacher if cfg.distill > 0 else None,
            val=val, is_quant_param=is_quant_param, log=log)
    if out:
        record = {} if sets else _data_record(data, frames)
        save(student, out, training={"kind": "qat", "calib_batches": calib_batches, **asdict(cfg), **record})
    return student.eval()
