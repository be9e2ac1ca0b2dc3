"""Backend registry: resolve a model reference and open it on the fastest (or the named) backend.

`auto` prefers tensorrt > onnxruntime-CUDA > torch-CUDA > onnxruntime-CPU (> torch-CPU for checkpoints).
Each backend module is imported only when it is used, so torch and tensorrt stay optional.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from i2nq.assets import MODELS
from i2nq.errors import I2NQError
from i2nq.runtime.backends.base import Backend, ModelMeta

BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".param")  # i2nq's, foreign weights, ncnn models

PROBE_SIDE = 16  # input side of the check run every model gets when it is opened

__all__ = ["BACKENDS", "Backend", "ModelMeta", "ModelFiles", "check_backend", "open_backend", "parse_device",
           "resolve_model"]


@dataclass(frozen=True)
class ModelFiles:
    """The files a model reference resolves to: an ONNX export, a torch checkpoint (or name), an engine."""

    onnx: Path | None = None
    checkpoint: str | Path | None = None
    engine: Path | None = None


def resolve_model(model: str | Path) -> ModelFiles:
    """Map a shipped model name, an .onnx file, a checkpoint or a TensorRT .engine to its files."""
    path = Path(model)
    if isinstance(model, str) and path.suffix.lower() not in (".onnx", ".engine", *CHECKPOINT_SUFFIXES) \
            and len(path.parts) == 1 and not path.exists():
        onnx, ckpt = MODELS / f"{model}.onnx", MODELS / f"{model}.safetensors"
        if onnx.is_file() or ckpt.is_file():
            return ModelFiles(onnx=onnx if onnx.is_file() else None, checkpoint=model if ckpt.is_file() else None)
        from i2nq.assets import model_names
        from i2nq.packaged import find_packaged, unknown_model_error

        packaged = find_packaged(model)  # a model of an installed package, e.g. realesr-animevideov3-x4 (torch)
        if packaged is None:
            raise unknown_model_error(model, model_names())
        return ModelFiles(checkpoint=packaged)
    if not path.is_file():
        if path.exists():  # a FIFO or a device: never opened (reading a FIFO would block)
            raise I2NQError(f"model {path} is not a regular file")
        raise I2NQError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return ModelFiles(onnx=path)
    if suffix in CHECKPOINT_SUFFIXES:
        return ModelFiles(checkpoint=path)
    if suffix == ".engine":
        return ModelFiles(engine=path)
    raise I2NQError(f"unsupported model file {path.name!r}: expected .onnx, .engine, a checkpoint "
                    f"({', '.join(CHECKPOINT_SUFFIXES)}) or a shipped model name")


def parse_device(device: str | int | None) -> tuple[bool, int]:
    """(cpu_only, cuda_index) from None (any), 'cpu', 'cuda', 'cuda:N' or N."""
    if device is None:
        return False, 0
    if isinstance(device, int):
        return False, device
    text = str(device).strip().lower()
    if text == "cpu":
        return True, 0
    if text == "cuda":
        return False, 0
    index = text.removeprefix("cuda:")
    if index.isdigit():
        return False, int(index)
    raise I2NQError(f"unknown device {device!r}: use cpu, cuda or cuda:N")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _tensorrt_installed() -> bool:
    """TensorRT, CuPy (its device buffers) and our backend module are all importable."""
    return all(_installed(m) for m in ("tensorrt", "cupy", "i2nq.runtime.backends.tensorrt"))


def _gpu_present() -> bool:
    """Cheap check for an NVIDIA driver before importing anything heavy."""
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()


def _cuda_for(backend: str) -> bool:
    """Whether `backend` can use CUDA here (device unspecified means: a GPU when there is one)."""
    if backend == "tensorrt":
        return True
    if not _gpu_present() or (backend == "torch" and not _installed("torch")):
        return False
    if backend == "torch":
        from i2nq.runtime.backends.torch import cuda_available
    else:
        from i2nq.runtime.backends.onnxruntime import cuda_available
    return cuda_available()


def _no_cuda_reason() -> str:
    if not _gpu_present():
        return "no NVIDIA GPU or driver found"
    return "install onnxruntime-gpu, or TensorRT and CuPy (pip install 'i2nq[gpu]' or 'i2nq[tensorrt]')"


def _auto_choice(files: ModelFiles, cpu_only: bool) -> tuple[str, bool]:
    """(backend name, on_gpu) that `auto` picks for these files."""
    gpu = not cpu_only and _gpu_present()
    if files.engine is not None or (gpu and files.onnx and _tensorrt_installed()):
        return "tensorrt", True
    if gpu and files.onnx:
        from i2nq.runtime.backends.onnxruntime import cuda_available

        if cuda_available():
            return "onnxruntime", True
    if gpu and files.checkpoint is not None and _installed("torch"):
        from i2nq.runtime.backends.torch import cuda_available

        if cuda_available():
            return "torch", True
    if files.onnx:
        return "onnxruntime", False
    if files.checkpoint is not None:
        return "torch", False
    raise I2NQError("no backend can run this model")


def open_backend(model: str | Path, backend: str = "auto", device: str | int | None = None,
                 tile: tuple[int, int] | None = None, batch: int | None = None, tensorrt=None) -> Backend:
    """Load `model` on `backend`. For the tensorrt backend, `tensorrt` (TensorRTOptions) says how the engine is
    built and run; without it, `tile` and `batch` make a static engine. All three are ignored elsewhere.

    The model is checked once before it is handed out (check_backend): a broken one is an I2NQError, never a
    silently wrong result. An explicit CUDA device that cannot be used is an I2NQError, never the CPU."""
    opened = _open(model, backend, device, tile, batch, tensorrt)
    try:
        check_backend(opened, model)
    except BaseException:
        opened.close()
        raise
    return opened


def check_backend(backend: Backend, model: str | Path = "the model") -> None:
    """Run a small probe input through the model once: I2NQError unless its output is scale x the input, as
    its metadata says, and finite."""
    meta = backend.meta
    low = getattr(backend, "min_tile", None) or (1, 1)  # an engine's profile bounds the probe too
    high = getattr(backend, "max_tile", None) or (PROBE_SIDE, PROBE_SIDE)
    h, w = backend.fixed_shape or tuple(max(lo, min(PROBE_SIDE, hi)) for lo, hi in zip(low, high))
    ramp = np.linspace(0.1, 0.9, h * w, dtype=np.float32).reshape(1, 1, h, w)
    x = np.ascontiguousarray(np.broadcast_to(ramp, (1, meta.in_channels, h, w)))
    y = np.asarray(backend.run(x))
    want = (1, meta.in_channels, h * meta.scale, w * meta.scale)
    if y.shape != want:
        got = f"{y.shape[-2]}x{y.shape[-1]}" if y.ndim >= 2 else f"shape {y.shape}"
        raise I2NQError(f"{model}: its metadata says x{meta.scale}, but it turns a {h}x{w} input into {got} "
                        f"(expected {want[2]}x{want[3]}); the model or its metadata is broken")
    if not np.isfinite(y).all():
        raise I2NQError(f"{model} outputs NaN or infinite values on a plain test input; its weights are broken")


def _open(model: str | Path, backend: str, device: str | int | None, tile: tuple[int, int] | None,
          batch: int | None, tensorrt) -> Backend:
    if backend not in BACKENDS:
        raise I2NQError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    files = resolve_model(model)
    cpu_only, index = parse_device(device)
    wants_gpu = device is not None and not cpu_only  # cuda or cuda:N asked for: never fall back to the CPU
    if backend == "auto":
        backend, on_gpu = _auto_choice(files, cpu_only)
        if wants_gpu and not on_gpu:
            raise I2NQError(f"--device {device}: no CUDA here for this model ({_no_cuda_reason()}); "
                            "use --device cpu")
    else:
        on_gpu = not cpu_only and (device is not None or _cuda_for(backend))
    if backend == "onnxruntime":
        if files.onnx is None:
            raise I2NQError("the onnxruntime backend needs an .onnx model (export the checkpoint with i2nq export-onnx)")
        from i2nq.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(files.onnx, device=index if on_gpu else None)
    if backend == "torch":
        if files.checkpoint is None:
            raise I2NQError("the torch backend needs a checkpoint (.safetensors, .pt, .pth) or a shipped model name")
        if not _installed("torch"):
            raise I2NQError("the torch backend needs PyTorch: pip install 'i2nq[torch]'")
        if on_gpu and not _cuda_for("torch"):
            raise I2NQError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
        from i2nq.runtime.backends.torch import TorchBackend

        return TorchBackend(files.checkpoint, device=index if on_gpu else None)
    if cpu_only:
        raise I2NQError("the tensorrt backend runs on a GPU only; drop --device cpu")
    if not _tensorrt_installed():
        raise I2NQError("the tensorrt backend needs TensorRT and CuPy: pip install 'i2nq[tensorrt]'")
    from i2nq.runtime.backends.tensorrt import TensorRTBackend

    source = files.engine or files.onnx
    if source is None:
        raise I2NQError("the tensorrt backend needs an .onnx or .engine model")
    if tensorrt is not None:
        return TensorRTBackend(source, device=index, options=tensorrt)
    return TensorRTBackend(source, device=index, tile=tile, batch=batch)
