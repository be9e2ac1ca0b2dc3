"""The backend contract: run a batch of equal-shape NCHW tiles through an SR model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelMeta:
    """What the runtime must know about a model (read from ONNX metadata_props or a checkpoint).

    receptive_field: radius in input pixels; a tile overlap of at least this makes tiling exact. None: unbounded
    (or too large for exact tiling to pay): tiles are blended.
    """

    arch: str
    scale: int
    bits: str  # e.g. "w4a4" or "fp32"
    receptive_field: int | None
    in_channels: int = 3


class Backend(ABC):
    """One loaded model on one device.

    `run` takes float32 NCHW RGB in [0, 1] of shape (N, C, h, w) and returns float32 of shape
    (N, C, h*scale, w*scale). `fixed_shape` is (h, w) when the backend accepts only that tile shape
    (a static TensorRT engine), else None; `max_batch` bounds N (None: any). A backend that accepts a range of
    tile shapes (a dynamic TensorRT engine's profile) gives its bounds as `min_tile` and `max_tile` (h, w).
    """

    name: str = "base"
    meta: ModelMeta
    fixed_shape: tuple[int, int] | None = None
    max_batch: int | None = None
    min_tile: tuple[int, int] | None = None
    max_tile: tuple[int, int] | None = None

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:
        """Release device resources (optional)."""
