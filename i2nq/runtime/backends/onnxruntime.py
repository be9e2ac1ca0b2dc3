"""ONNX Runtime backend: runs an exported .onnx model on the CPU, or on CUDA with onnxruntime-gpu."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from i2nq.errors import I2NQError
from i2nq.runtime.backends.base import Backend, ModelMeta


def cuda_available() -> bool:
    """True when the installed onnxruntime can run on CUDA (onnxruntime-gpu)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def intra_op_threads() -> int:
    """Threads for one inference: OMP_NUM_THREADS when set, else one per physical core we may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        import psutil
    except ImportError:
        return 0  # ONNX Runtime's own default: one thread per physical core
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(psutil.cpu_count(logical=False) or usable, usable)


def read_meta(metadata: dict[str, str], path: Path) -> ModelMeta:
    """ModelMeta from an i2nq export's metadata_props; I2NQError for any other ONNX file."""
    if "i2nq.scale" not in metadata:
        raise I2NQError(f"{path} is not an i2nq export (it has no i2nq.scale metadata); export it with i2nq")
    try:
        return ModelMeta(
            arch=metadata.get("i2nq.arch", "unknown"),
            scale=int(metadata["i2nq.scale"]),
            bits=metadata.get("i2nq.bits", "unknown"),
            receptive_field=int(metadata.get("i2nq.receptive_field", "0")),
        )
    except ValueError as exc:
        raise I2NQError(f"{path} has malformed i2nq metadata: {exc}") from None


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session with all graph optimizations; fp16 (tensorrt-flavor) inputs are cast."""

    name = "onnxruntime"

    def __init__(self, path: Path, device: int | None = None) -> None:
        """`device` None runs on the CPU; an int runs on that CUDA device (needs onnxruntime-gpu)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers: list = ["CPUExecutionProvider"]
        if device is not None:
            if not cuda_available():
                raise I2NQError("onnxruntime has no CUDA support here; pip install onnxruntime-gpu or use --device cpu")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device}))
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise I2NQError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from None
        self.meta = read_meta(self.session.get_modelmeta().custom_metadata_map, path)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        self.device = "cpu" if device is None else f"cuda:{device}"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Upscale a float32 NCHW batch."""
        y = self.session.run(None, {self.input_name: x.astype(self.input_dtype, copy=False)})[0]
        return y.astype(np.float32, copy=False)
