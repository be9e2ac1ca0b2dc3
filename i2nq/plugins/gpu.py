"""Optional GPU packages (TensorRT, CuPy) imported on demand with one-line errors, the GPU's identity, TensorRT's
logger, and the plugin library's registration (once per process)."""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path
from types import ModuleType

from i2nq.errors import I2NQError
from i2nq.plugins import PLUGIN_NAMESPACE, PLUGIN_VERSION
from i2nq.plugins.library import NO_KERNEL_IMAGE, check_plugin, plugin_device_status, plugin_info

PLUGIN_OPS = ("NUQuant", "LUTDequant")
#: The oldest TensorRT whose ONNX parser imports a node as a registered plugin before trying a model-local
#: function of the same name (onnx-tensorrt 10.7: "prioritizes using plugins over local functions"). Older
#: parsers import every ai.i2nq node as its function body and never call the plugin.
MIN_TENSORRT = (10, 7)


def tensorrt_version(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as '10.13.0.35'."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def import_tensorrt() -> ModuleType:
    """The `tensorrt` module (at least MIN_TENSORRT), or I2NQError saying how to install it."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        raise I2NQError("TensorRT is not installed: install TensorRT (pip install 'i2nq[tensorrt]', or the "
                        "TensorRT SDK's Python wheel) or use another backend") from None
    version = getattr(trt, "__version__", "0")
    if tensorrt_version(version) < MIN_TENSORRT:
        need = ".".join(map(str, MIN_TENSORRT))
        raise I2NQError(f"TensorRT {version} is too old: i2nq needs TensorRT >= {need} (older ONNX parsers run the "
                        f"ai.i2nq nodes as their function bodies, never the plugin): pip install 'tensorrt>={need}'")
    return trt


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


def device_capability(device: int) -> tuple[int, int]:
    """Compute capability (major, minor) of CUDA device `device`."""
    props = import_cupy().cuda.runtime.getDeviceProperties(device)
    return int(props["major"]), int(props["minor"])


def check_plugin_device(path: Path, device: int) -> None:
    """I2NQError unless the plugin library's kernels can run on CUDA device `device`; a note when they only run
    by JIT-compiling PTX (no SASS for this GPU: slow first use, and maybe slower kernels)."""
    status = plugin_device_status(path, device)
    if status == 0 or status == -1:  # -1: no probe (check_plugin refuses such libraries before this)
        archs = plugin_info(path).cuda_archs
        major, minor = device_capability(device)
        sass = {a.removesuffix("-real") for a in archs if not a.endswith("-virtual")}
        if status == 0 and archs and all(a[:1].isdigit() for a in sass) and f"{major}{minor}" not in sass:
            warnings.warn(f"plugin library {path} has no sm_{major}{minor} code (built for {','.join(archs)}): its "
                          f"kernels are JIT-compiled from PTX; rebuild it here with i2nq build-plugin", stacklevel=3)
        return
    major, minor = device_capability(device)
    built = ",".join(plugin_info(path).cuda_archs) or "unknown architectures"
    if status in NO_KERNEL_IMAGE:
        raise I2NQError(f"plugin library {path} has no kernels for this GPU (sm_{major}{minor}; it was built for "
                        f"{built}): rebuild it here with i2nq build-plugin (it builds for this machine's GPU) or "
                        f"with --cuda-arch {major}{minor}")
    raise I2NQError(f"plugin library {path} cannot use CUDA device {device} (CUDA error {status}): check the NVIDIA "
                    f"driver, or rebuild the library with i2nq build-plugin")


def tensorrt_major(trt: ModuleType) -> int:
    return int(trt.__version__.split(".")[0])


_LOGGERS: dict[int, tuple[ModuleType, object]] = {}


def trt_logger(trt: ModuleType, verbose: bool = False):
    """The process's TensorRT logger (TensorRT keeps the first logger it is given, so there is one, whose level is
    set here): messages to stderr, warnings and errors only, or everything down to verbose."""
    entry = _LOGGERS.get(id(trt))
    if entry is None or entry[0] is not trt:
        entry = _LOGGERS[id(trt)] = (trt, trt.Logger(trt.Logger.WARNING))
    logger = entry[1]
    logger.min_severity = trt.Logger.VERBOSE if verbose else trt.Logger.WARNING
    return logger


#: The plugin library registered with TensorRT in this process: (resolved path, error or None).
_REGISTERED: list[tuple[Path, str | None]] = []


def registered_plugin() -> Path | None:
    """The plugin library this process loaded into TensorRT's registry, if any."""
    return _REGISTERED[0][0] if _REGISTERED else None


def register_plugin(trt: ModuleType, path: Path, device: int | None = None) -> None:
    """Load the plugin library into TensorRT's registry, once per process, and check that it provides both i2nq
    creators (and, given a device, that its kernels can run there).

    The same library again is a no-op; another library is refused (TensorRT cannot unload one, and two
    libraries registering the same creators would make which one runs an accident).
    """
    path = Path(path).resolve()
    if _REGISTERED:
        loaded, error = _REGISTERED[0]
        if loaded != path:
            raise I2NQError(f"this process already loaded the i2nq plugin library {loaded}; it cannot also load "
                            f"{path}: use one plugin library per process (the same --plugin / $I2NQ_PLUGIN)")
        if error:
            raise I2NQError(error)
        if device is not None:
            check_plugin_device(path, device)
    else:
        check_plugin(path, trt.__version__)
        if device is not None:
            check_plugin_device(path, device)
        registry = trt.get_plugin_registry()
        try:
            handle = registry.load_library(str(path))
        except Exception as exc:  # bindings may raise instead of returning None
            handle, reason = None, f" ({exc})"
        else:
            reason = ""
        if handle is None:
            raise I2NQError(f"TensorRT {trt.__version__} could not load the plugin library {path}{reason}; rebuild "
                            f"it against this TensorRT with i2nq build-plugin")
        lookup = getattr(registry, "get_creator", None) or registry.get_plugin_creator
        missing = [op for op in PLUGIN_OPS if lookup(op, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None]
        error = (f"plugin library {path} does not register {', '.join(missing)} version {PLUGIN_VERSION} in "
                 f"namespace {PLUGIN_NAMESPACE}; rebuild it with i2nq build-plugin") if missing else None
        _REGISTERED.append((path, error))  # loaded for good: TensorRT keeps it whatever follows
        if error:
            raise I2NQError(error)
