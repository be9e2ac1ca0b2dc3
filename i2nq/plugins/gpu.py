"""Optional GPU packages (TensorRT, CuPy) imported on demand with one-line errors, and the GPU's identity."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from i2nq.errors import I2NQError
from i2nq.plugins import PLUGIN_NAMESPACE, PLUGIN_VERSION
from i2nq.plugins.library import check_plugin

PLUGIN_OPS = ("NUQuant", "LUTDequant")


def import_tensorrt() -> ModuleType:
    """The `tensorrt` module, or I2NQError saying how to install it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise I2NQError("TensorRT is not installed: install TensorRT (pip install 'i2nq[tensorrt]', or the "
                        "TensorRT SDK's Python wheel) or use another backend") from None


def import_cupy() -> ModuleType:
    """The `cupy` module (device buffers and streams for TensorRT), or I2NQError saying how to install it."""
    try:
        cp = importlib.import_module("cupy")
    except ImportError:
        raise I2NQError("the tensorrt backend needs CuPy for GPU buffers: pip install cupy-cuda12x "
                        "(or cupy-cuda13x to match your CUDA)") from None
    if cp.cuda.runtime.getDeviceCount() < 1:
        raise I2NQError("no CUDA GPU found: TensorRT needs an NVIDIA GPU and driver")
    return cp


def use_device(device: int) -> str:
    """Make CUDA device `device` current (TensorRT builds and runs there) and return its name."""
    cp = import_cupy()
    count = cp.cuda.runtime.getDeviceCount()
    if not 0 <= device < count:
        raise I2NQError(f"no CUDA device {device}: this machine has {count} (0..{count - 1})")
    cp.cuda.Device(device).use()
    name = cp.cuda.runtime.getDeviceProperties(device)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def tensorrt_major(trt: ModuleType) -> int:
    return int(trt.__version__.split(".")[0])


def register_plugin(trt: ModuleType, path: Path) -> None:
    """Load the plugin library into TensorRT's registry and check that it provides both i2nq creators."""
    registry = trt.get_plugin_registry()
    registry.load_library(str(check_plugin(path)))
    lookup = getattr(registry, "get_creator", None) or registry.get_plugin_creator
    missing = [op for op in PLUGIN_OPS if lookup(op, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None]
    if missing:
        raise I2NQError(f"plugin library {path} does not register {', '.join(missing)} version {PLUGIN_VERSION} "
                        f"in namespace {PLUGIN_NAMESPACE}; rebuild it with i2nq build-plugin")
