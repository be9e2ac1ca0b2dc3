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
            receptive_field=None if metadata.get("i2nq.receptive_field") == "unbounded"
            else int(metadata.get("i2nq.receptive_field", "0")),
        )
    except ValueError as exc:
        raise I2NQError(f"{path} has malformed i2nq metadata: {exc}") from None


CUSTOM_DOMAIN = "ai.i2nq"


def check_codebooks(path: Path) -> None:
    """I2NQError when a codebook of an i2nq export is broken: NUQuant levels must be finite and ascending (its
    thresholds are the midpoints of neighbours), LUTDequant levels finite. A model with such levels would run and
    silently produce garbage. Levels that are not stored as constants are left to the probe run."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not readable as ONNX: ONNX Runtime says so when it loads it
        return
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    tensors.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
                    for a in n.attribute if a.name == "value"})
    for node in graph.node:
        if node.domain != CUSTOM_DOMAIN or node.op_type not in ("NUQuant", "LUTDequant") or len(node.input) < 2:
            continue
        tensor = tensors.get(node.input[1])
        if tensor is None:
            continue
        try:
            levels = numpy_helper.to_array(tensor, base_dir=str(Path(path).parent)).astype(np.float64)
        except Exception as exc:  # e.g. external data missing
            raise I2NQError(f"cannot read the levels of {node.op_type} {node.name or node.input[1]} in {path}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        where = f"{Path(path).name}: {node.op_type} {node.name or node.input[1]}"
        if not np.isfinite(levels).all():
            raise I2NQError(f"{where} has levels that are NaN or infinite; the model is broken (re-export it)")
        if node.op_type == "NUQuant" and levels.size and (np.diff(levels, axis=-1) < 0).any():
            raise I2NQError(f"{where} has levels that are not in ascending order; the model is broken "
                            "(re-export it)")


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
        if device is not None and "CUDAExecutionProvider" not in self.session.get_providers():
            raise I2NQError(f"ONNX Runtime could not use CUDA device {device} (no usable GPU or CUDA libraries); "
                            "use --device cpu")
        self.meta = read_meta(self.session.get_modelmeta().custom_metadata_map, path)
        check_codebooks(path)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        self.device = "cpu" if device is None else f"cuda:{device}"
        self.path = Path(path)
        self._graph_memory: object = _UNSET

    def memory_estimate(self, n: int, h: int, w: int) -> int | None:
        """Bytes ONNX Runtime is estimated to take for a call on n tiles of h x w (i2nq.runtime.memory), or None."""
        if self._graph_memory is _UNSET:
            self._graph_memory = _graph_memory(self.path)
        return None if self._graph_memory is None else self._graph_memory(n, h, w)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Upscale a float32 NCHW batch; MemoryError when ONNX Runtime cannot allocate what it needs."""
        try:
            y = self.session.run(None, {self.input_name: x.astype(self.input_dtype, copy=False)})[0]
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime's own exception types
            text = str(exc)
            if any(s in text for s in ("Failed to allocate memory", "bad_alloc", "out of memory")):
                raise MemoryError(text.splitlines()[0] if text else "out of memory") from None
            raise
        return y.astype(np.float32, copy=False)


_UNSET = object()
_GRAPH_MEMORY: dict[tuple[str, int, int], object] = {}


def _graph_memory(path: Path):
    """GraphMemory of an ONNX file, once per file version in this process."""
    from i2nq.runtime.memory import GraphMemory

    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _GRAPH_MEMORY:
        _GRAPH_MEMORY[key] = GraphMemory.of(path)
    return _GRAPH_MEMORY[key]
