"""Torch backend: runs a checkpoint (or shipped model name) with PyTorch on the CPU or CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from i2nq.runtime.backends.base import Backend, ModelMeta


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


class TorchBackend(Backend):
    """A model from `i2nq.models.load` in eval mode; torch is imported only here."""

    name = "torch"
    half = False  # fp16 weights and inputs (Upscaler(fp16=True) on CUDA)

    def __init__(self, model: str | Path, device: int | None = None) -> None:
        """`device` None runs on the CPU; an int runs on that CUDA device."""
        import torch

        from i2nq.errors import I2NQError
        from i2nq.models import load

        if device is not None and not 0 <= device < torch.cuda.device_count():
            raise I2NQError(f"no CUDA device {device}: torch sees {torch.cuda.device_count()}; use --device cpu")
        from i2nq.models.edsr import fold_relus_

        self.torch = torch
        self.device = torch.device("cpu" if device is None else f"cuda:{device}")
        self.module = fold_relus_(load(model).to(self.device).eval())
        info = self.module.info
        self.meta = ModelMeta(arch=info.arch, scale=int(info.scale), bits=info.bits,
                              receptive_field=info.receptive_field)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Upscale a float32 NCHW batch."""
        with self.torch.inference_mode():
            t = self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            y = self.module(t.half() if self.half else t)
        return y.float().cpu().numpy()
