"""The training loop shared by float training and QAT: L1 (+ optional distillation), Adam, cosine
schedule, resumable state (model, optimizer, step, RNG; i2nq.calib.state) saved atomically every `save_every`
steps and resumed only by the same run."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from i2nq.calib.data import PairSet, quantize8
from i2nq.calib.metrics import psnr_y
from i2nq.calib.state import load_state, run_key, save_state


@dataclass
class TrainConfig:
    steps: int = 20000
    batch: int = 16
    lr_patch: int = 32  # LR patch side; the HR patch is lr_patch * scale
    lr: float = 5e-4
    min_lr: float = 1e-6
    quant_lr: float = 1e-3  # for codebook levels, scales and clips (QAT)
    distill: float = 0.0  # weight of an L1 term against the float teacher's output (QAT)
    feature_distill: float = 0.0  # weight of a term against the teacher's features at every quantized conv (QAT)
    hr_loss: float = 1.0  # weight of the L1 term against the HR patch (0: learn from the teacher alone)
    lr_recipe: str = "bicubic-aa"  # how training LR patches are made: bicubic-aa, cv2-cubic or mixed (both)
    seed: int = 0
    log_every: int = 100
    save_every: int = 250
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default


CADENCE = ("log_every", "save_every", "threads")  # TrainConfig fields that do not change what a run computes


def run_options(cfg: TrainConfig) -> dict:
    """The TrainConfig fields that define a run (a resumed state must have been made with the same)."""
    return {k: v for k, v in asdict(cfg).items() if k not in CADENCE}


def _lr_at(step: int, cfg: TrainConfig, base: float) -> float:
    t = min(step / max(cfg.steps, 1), 1.0)
    return cfg.min_lr + 0.5 * (base - cfg.min_lr) * (1 + math.cos(math.pi * t))


def val_psnr(model: nn.Module, val: PairSet | None) -> float:
    """Mean Y-PSNR on a held-out set (for the log only; never used to choose anything)."""
    if val is None:
        return float("nan")
    was = model.training
    model.eval()
    with torch.no_grad():
        vals = [psnr_y(quantize8(model(lr[None])[0]), hr, val.scale) for lr, hr in zip(val.lr, val.hr)]
    model.train(was)
    return sum(vals) / len(vals)


class FeatureTaps:
    """The outputs of every quantized convolution of a student and of the teacher's convolution of the same
    name, kept by forward hooks during one training step. `loss()` is their mean normalized squared error
    (each site's MSE over the teacher's variance there, so that every site counts alike whatever its scale):
    a gradient at every layer of a deep chain, where the output alone gives a weak one at low bits."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        from i2nq.quant.api import quantized_sites

        self.student: dict[str, torch.Tensor] = {}
        self.teacher: dict[str, torch.Tensor] = {}
        self.hooks = []
        for name, module in quantized_sites(student):
            self.hooks.append(module.register_forward_hook(self._keep(self.student, name)))
            self.hooks.append(teacher.get_submodule(name).register_forward_hook(self._keep(self.teacher, name)))
        if not self.hooks:
            raise ValueError("feature distillation needs a quantized student")

    @staticmethod
    def _keep(store: dict, name: str):
        def hook(module, args, output):
            store[name] = output
        return hook

    def loss(self) -> torch.Tensor:
        terms = [F.mse_loss(s, t) / (t.var() + 1e-8) for name, s in self.student.items()
                 for t in [self.teacher[name]]]
        self.student.clear()
        self.teacher.clear()
        return torch.stack(terms).mean()

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()


def fit(model: nn.Module, data: PairSet, cfg: TrainConfig, state_path: str | os.PathLike | None = None,
        teacher: nn.Module | None = None, val: PairSet | None = None,
        is_quant_param: Callable[[str], bool] = lambda name: False, log: Callable[[str], None] = print,
        run: dict | None = None) -> nn.Module:
    """Train `model` in place on random patches of `data`.

    Resumes from `state_path` when it holds a state of the same run: the same `run` options (what the caller
    says defines the run: model source, data, quantizer), training options and model tensors; any other state
    is ignored with a note, and overwritten at the next save."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not is_quant_param(n)], "base": cfg.lr},
              {"params": [p for n, p in named if is_quant_param(n)], "base": cfg.quant_lr}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.Adam([{"params": g["params"], "lr": g["base"]} for g in groups], betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed)
    state_path = Path(state_path) if state_path else None
    key = run_key(model, {**run_options(cfg), **(run or {})})
    step = load_state(state_path, model, opt, gen, key, log) if state_path else 0
    if step:
        log(f"resumed from {state_path} at step {step}")
    model.train()
    if teacher is not None:
        teacher.eval()
    taps = FeatureTaps(model, teacher) if teacher is not None and cfg.feature_distill > 0 else None
    t0, running, count = time.time(), 0.0, 0
    try:
        while step < cfg.steps:
            for g, pg in zip(groups, opt.param_groups):
                pg["lr"] = _lr_at(step, cfg, g["base"])
            lr_b, hr_b = data.batch(cfg.batch, cfg.lr_patch, gen)
            sr = model(lr_b)
            loss = cfg.hr_loss * F.l1_loss(sr, hr_b) if cfg.hr_loss else sr.new_zeros(())
            if teacher is not None and cfg.distill > 0:
                with torch.no_grad():
                    ref = teacher(lr_b)
                loss = loss + cfg.distill * F.l1_loss(sr, ref)
            if taps is not None:
                if cfg.distill <= 0:  # the teacher has not run on this batch yet
                    with torch.no_grad():
                        teacher(lr_b)
                loss = loss + cfg.feature_distill * taps.loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running += loss.item()
            count += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                log(f"step {step}/{cfg.steps} loss {running / count:.5f} val_psnr {val_psnr(model, val):.3f} "
                    f"lr {opt.param_groups[0]['lr']:.2e} {(time.time() - t0) / count:.3f}s/step")
                running, count, t0 = 0.0, 0, time.time()
            if state_path and (step % cfg.save_every == 0 or step == cfg.steps):
                save_state(state_path, model, opt, gen, step, key)
    finally:
        if taps is not None:
            taps.close()
    model.eval()
    return model
