"""i2nq: deploy I²NQ (inter and intra nonuniform quantization) super-resolution models.

The runtime (`i2nq.Upscaler`) needs only numpy, onnxruntime, OpenCV and PyAV; torch is imported
only by the quantization, model, calibration and export subpackages.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Upscaler", "DistributedUpscaler", "TensorRTOptions", "I2NQError", "__version__"]

from i2nq.errors import I2NQError


def __getattr__(name: str):
    if name == "Upscaler":
        from i2nq.runtime import Upscaler

        return Upscaler
    if name == "DistributedUpscaler":  # scale-out on Ray (imports Ray only when one is made)
        from i2nq.runtime.distributed import DistributedUpscaler

        return DistributedUpscaler
    if name == "TensorRTOptions":
        from i2nq.runtime.backends.tensorrt import TensorRTOptions

        return TensorRTOptions
    raise AttributeError(f"module 'i2nq' has no attribute {name!r}")
