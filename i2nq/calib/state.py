"""Resumable training state as data only: one .safetensors file (model and optimizer tensors, RNG state) whose
metadata holds JSON (step, optimizer hyperparameters and the options that define the run). Nothing in it can
execute when it is read, unlike a pickle. A state is resumed only by the same run: same options, same model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from i2nq.files import atomic_output

FORMAT = "i2nq-train-state/1"
SUFFIX = ".state.safetensors"


def state_path_for(output: str | os.PathLike) -> Path:
    """The default state file of a run writing `output`: OUTPUT with .state.safetensors."""
    output = Path(output)
    return output.with_name(output.stem + SUFFIX)


def run_key(model: nn.Module, run: dict) -> dict:
    """What defines a run: the caller's options plus every trainable tensor's name and shape, so a state of
    another architecture or bit width never loads."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return json.loads(json.dumps({**run, "tensors": shapes}, sort_keys=True))  # tuples -> lists, as stored


def save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, step: int,
               key: dict) -> None:
    """Write the state atomically (temp file, fsync, rename)."""
    from safetensors.torch import save_file

    tensors = {f"model/{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, dict] = {}
    for idx, entry in opt_state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt/{idx}/{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    tensors["rng"] = gen.get_state()
    meta = {"format": FORMAT, "step": step, "run": key, "param_groups": opt_state["param_groups"],
            "opt_scalars": scalars}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={"i2nq_state": json.dumps(meta, sort_keys=True)})


def load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, key: dict,
               log: Callable[[str], None] = print) -> int:
    """Restore the state at `path` into model/optimizer/generator and return its step; 0 (start fresh, with a
    note) when there is none, it is unreadable, or it belongs to another run."""
    if not path.is_file():
        return 0
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["i2nq_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
    except Exception as exc:  # a corrupt or foreign file: never fatal, never trusted
        log(f"note: ignoring unreadable training state {path} ({type(exc).__name__}); starting fresh")
        return 0
    if meta["run"] != key:
        log(f"note: training state {path} is from another run ({_first_difference(meta['run'], key)}); "
            "starting fresh")
        return 0
    model.load_state_dict({k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt/"):
            _, idx, name = k.split("/", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, entry in meta["opt_scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    gen.set_state(tensors["rng"])
    return int(meta["step"])


def _first_difference(old: dict, new: dict) -> str:
    """A short description of the first option that differs between two run keys."""
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            if name == "tensors":
                return "a different model"
            return f"{name} {_short(old.get(name))} then, {_short(new.get(name))} now"
    return "different options"


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
