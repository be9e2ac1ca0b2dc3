"""TensorRT backend: runs an i2nq engine (or builds one from an ONNX export via the engine cache) on a CUDA
stream, with CuPy device buffers. tensorrt and cupy are imported when the backend is opened."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from i2nq.errors import I2NQError
from i2nq.runtime.backends.base import Backend


class TensorRTBackend(Backend):
    """One engine, one execution context, one stream. `path`: .engine (with its .json sidecar) or .onnx.

    For an ONNX export, `tile` (H, W) and `batch` make the engine static in those dimensions (else a dynamic
    profile); for an .engine they are fixed by the engine and ignored. Batches larger than the engine's
    maximum are split; with a static batch, a short batch is zero-padded.
    """

    name = "tensorrt"

    def __init__(self, path: Path, device: int = 0, tile: tuple[int, int] | None = None,
                 batch: int | None = None) -> None:
        from i2nq.plugins.engine import build_engine, load_engine
        from i2nq.plugins.gpu import import_cupy, import_tensorrt

        trt = import_tensorrt()
        self._cp = import_cupy()
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            path = build_engine(path, tile=tile, batch=batch, device=device)
        self.engine, record = load_engine(trt, path, device)
        self.meta = record.meta
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self._profile = [tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0)]
        low, _, high = self._profile
        self.fixed_shape = (high[2], high[3]) if low[2:] == high[2:] else None
        self.max_batch = high[0]
        self._min_batch = low[0]
        self.stream = self._cp.cuda.Stream(non_blocking=True)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Upscale a float32 NCHW batch in chunks of at most max_batch tiles."""
        chunks = [self._run_chunk(x[i:i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        cp = self._cp
        n = len(x)
        if n < self._min_batch:  # static batch: pad with zero tiles
            x = np.concatenate([x, np.zeros((self._min_batch - n,) + x.shape[1:], x.dtype)])
        with self.stream:
            d_in = cp.asarray(np.ascontiguousarray(x, dtype=self.input_dtype))
            if not self.context.set_input_shape(self.input_name, d_in.shape):
                raise I2NQError(f"input shape {tuple(d_in.shape)} is outside the engine's profile "
                                f"{self._profile[0]}..{self._profile[2]}; rebuild it with i2nq build-engine")
            d_out = cp.empty(tuple(self.context.get_tensor_shape(self.output_name)), self.output_dtype)
            self.context.set_tensor_address(self.input_name, d_in.data.ptr)
            self.context.set_tensor_address(self.output_name, d_out.data.ptr)
            if not self.context.execute_async_v3(self.stream.ptr):
                raise I2NQError("TensorRT execution failed; see the TensorRT messages above")
            y = cp.asnumpy(d_out[:n], stream=self.stream)
        self.stream.synchronize()
        return y.astype(np.float32, copy=False)

    def close(self) -> None:
        """Drop the context and engine (device memory is freed with them)."""
        self.context = None
        self.engine = None
