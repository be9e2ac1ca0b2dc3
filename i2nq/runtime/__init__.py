"""Runtime: upscale images and videos with an exported I²NQ model (numpy, onnxruntime, OpenCV, PyAV; no torch).

`Upscaler` is imported on first use, so the pieces that need no PyAV or OpenCV (backends, engine records,
`inspect`) import without them, as on a GPU machine that only builds and runs engines.
"""

from __future__ import annotations

__all__ = ["Upscaler"]


def __getattr__(name: str):
    if name == "Upscaler":
        from i2nq.runtime.upscaler import Upscaler

        return Upscaler
    raise AttributeError(f"module 'i2nq.runtime' has no attribute {name!r}")
