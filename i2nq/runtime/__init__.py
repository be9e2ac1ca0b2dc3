"""Runtime: upscale images and videos with an exported I²NQ model (numpy, onnxruntime, OpenCV, PyAV; no torch)."""

from __future__ import annotations

from i2nq.runtime.upscaler import Upscaler

__all__ = ["Upscaler"]
