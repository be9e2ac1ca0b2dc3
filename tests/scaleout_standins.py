"""Stand-in backends for the scale-out tests, made in the Ray workers by a factory (pickled by value)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from i2nq.runtime.backends.base import Backend


class KillOnce(Backend):
    """A real ONNX Runtime backend on `model`, whose process SIGKILLs itself in its `after`-th model call, once
    for all processes: the first to get there leaves `marker` (its pid) behind."""

    name = "kill-once"

    def __init__(self, model: str, marker: str, after: int) -> None:
        from i2nq.runtime.backends.onnxruntime import OnnxRuntimeBackend

        self.inner = OnnxRuntimeBackend(Path(model))
        self.meta, self.marker, self.after, self.calls = self.inner.meta, Path(marker), after, 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.after:
            try:
                fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.run(x)


class Slow(Backend):
    """A real ONNX Runtime backend that sleeps `seconds` per call; after `hang_after` calls in this process it
    sleeps for an hour at each call while the file `hang` exists (so that a job can be killed in the middle, and
    the same factory finishes it once the file is gone)."""

    name = "slow"

    def __init__(self, model: str, seconds: float, hang: str | None = None, hang_after: int = 0) -> None:
        from i2nq.runtime.backends.onnxruntime import OnnxRuntimeBackend

        self.inner = OnnxRuntimeBackend(Path(model))
        self.meta, self.seconds, self.calls = self.inner.meta, seconds, 0
        self.hang, self.hang_after = Path(hang) if hang else None, hang_after

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.hang is not None and self.calls > self.hang_after and self.hang.exists():
            time.sleep(3600)
        time.sleep(self.seconds)
        return self.inner.run(x)
