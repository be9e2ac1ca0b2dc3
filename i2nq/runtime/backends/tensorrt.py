"""TensorRT backend: runs an i2nq engine (or builds one from an ONNX export via the engine cache) on a CUDA
stream, with CuPy device buffers, and TensorRTOptions, how engines are built and run. tensorrt and cupy are
imported when the backend is opened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from i2nq.errors import I2NQError
from i2nq.runtime.backends.base import Backend
from i2nq.runtime.tiler import default_batch, default_overlap, default_tile

#: Most tiles per call of a default dynamic profile.
DEFAULT_MAX_BATCH = 4
#: Input profile of an engine: (min, opt, max) NCHW shapes.
Profile = tuple[tuple[int, int, int, int], tuple[int, int, int, int], tuple[int, int, int, int]]


@dataclass(frozen=True)
class TensorRTOptions:
    """How the tensorrt backend and `i2nq build-engine` build and run an engine (cf. vs-mlrt's Backend.TRT).

    Input profile (shapes in input pixels, per tile):
      tile, batch: a static engine in those dimensions: tiles of exactly tile = (H, W), batches of exactly
        `batch` (short batches are zero-padded).
      min_shape, opt_shape, max_shape: (N, H, W) bounds of a dynamic profile, and the shape TensorRT optimizes
        for. Either these or tile/batch, not both.
      Unset dimensions follow the one tile rule (i2nq.runtime.tiler.default_tile) from the model's receptive
      field r: H and W in 1..T with T = max(384, 8 r), optimized for the tiler's default tile T x T and batch;
      N in 1..4. The tiler picks the same default tile, so default tiles always fit the default profile.
    fp16: None: precision as the ONNX says (the tensorrt-flavor export is fp16, the portable one fp32; the
      network is strongly typed). True: fp16 kernels for an fp32 export too (TensorRT 10 only: a weakly typed
      network with the FP16 builder flag; TensorRT 11 builds strongly typed only). False: refuse an fp16 export.
    workspace_mib: builder workspace limit (MiB).
    cuda_graphs: run each input shape as a captured CUDA graph (replayed; fewer launch overheads).
    timing_cache: TensorRT's timing cache file (default: one per TensorRT version and GPU in the engine cache).
    verbose: show TensorRT's log down to verbose messages (default: warnings and errors).
    Engine-shaping fields (profile, fp16, workspace) are part of the engine cache key; the others are not.
    """

    tile: tuple[int, int] | None = None
    batch: int | None = None
    min_shape: tuple[int, int, int] | None = None
    opt_shape: tuple[int, int, int] | None = None
    max_shape: tuple[int, int, int] | None = None
    fp16: bool | None = None
    workspace_mib: int = 4096
    cuda_graphs: bool = False
    timing_cache: str | Path | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        def ints(name: str, n: int) -> None:
            value = getattr(self, name)
            if value is None:
                return
            try:
                value = tuple(int(v) for v in value)
            except (TypeError, ValueError):
                value = ()
            if len(value) != n or min(value) < 1:
                raise I2NQError(f"TensorRTOptions.{name} must be {n} positive integers, not {getattr(self, name)!r}")
            object.__setattr__(self, name, value)

        ints("tile", 2)
        for name in ("min_shape", "opt_shape", "max_shape"):
            ints(name, 3)
        if self.batch is not None and (isinstance(self.batch, bool) or int(self.batch) < 1):
            raise I2NQError(f"TensorRTOptions.batch must be a positive integer, not {self.batch!r}")
        if int(self.workspace_mib) < 1:
            raise I2NQError(f"TensorRTOptions.workspace_mib must be positive, not {self.workspace_mib!r}")
        shapes = [n for n in ("min_shape", "opt_shape", "max_shape") if getattr(self, n) is not None]
        static = [n for n in ("tile", "batch") if getattr(self, n) is not None]
        if shapes and static:
            raise I2NQError(f"TensorRTOptions: give either {' and '.join(static)} (a static engine) or "
                            f"{', '.join(shapes)} (a dynamic profile), not both")

    def profile(self, channels: int, receptive_field: int | None) -> Profile:
        """(min, opt, max) NCHW input shapes for a model with this many input channels and receptive field (None:
        unbounded)."""
        side = default_tile(default_overlap(receptive_field))
        rule = (1, 1, 1), (default_batch((side, side)), side, side), (DEFAULT_MAX_BATCH, side, side)
        if self.tile or self.batch:
            low, opt, high = (list(s) for s in rule)
            for s in (low, opt, high):
                if self.batch:
                    s[0] = self.batch
                if self.tile:
                    s[1:] = self.tile
        else:
            low = list(self.min_shape or rule[0])
            high = list(self.max_shape or rule[2])
            opt = list(self.opt_shape or [min(max(o, lo), hi) for o, lo, hi in zip(rule[1], low, high)])
        if not all(lo <= o <= hi for lo, o, hi in zip(low, opt, high)):
            raise I2NQError(f"TensorRT profile (N, H, W) needs min <= opt <= max in every dimension, not min {tuple(low)}, "
                            f"opt {tuple(opt)}, max {tuple(high)}: give consistent min_shape/opt_shape/max_shape")
        return tuple((s[0], channels, s[1], s[2]) for s in (low, opt, high))  # type: ignore[return-value]


def with_static(options: TensorRTOptions | None, tile: tuple[int, int] | None,
                batch: int | None) -> TensorRTOptions:
    """`options`, or TensorRTOptions(tile=tile, batch=batch) without; tile/batch with options is an error."""
    if options is None:
        return TensorRTOptions(tile=tile, batch=batch)
    if tile is not None or batch is not None:
        if (tile is None or tuple(tile) == options.tile) and (batch is None or batch == options.batch):
            return options
        raise I2NQError("give the engine's tile and batch inside TensorRTOptions (tile=, batch=), not beside it")
    return options


class TensorRTBackend(Backend):
    """One engine, one execution context, one stream. `path`: .engine (with its .json sidecar) or .onnx.

    For an ONNX export, `options` (TensorRTOptions; or just `tile` (H, W) and `batch`, which make the engine
    static in those dimensions) say how the engine is built; for an .engine the engine fixes its profile and
    only the run-time options (cuda_graphs, verbose) apply. Batches larger than the engine's maximum are split;
    a batch smaller than its minimum is zero-padded.
    """

    name = "tensorrt"
    #: Most CUDA graphs kept (one per input shape; the tiler uses one or two per frame size).
    MAX_GRAPHS = 8

    def __init__(self, path: Path, device: int = 0, tile: tuple[int, int] | None = None,
                 batch: int | None = None, options: TensorRTOptions | None = None) -> None:
        from i2nq.plugins.engine import build_engine, load_engine
        from i2nq.plugins.gpu import import_cupy, import_tensorrt

        options = with_static(options, tile, batch)
        trt = import_tensorrt()
        self._cp = import_cupy()
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            path = build_engine(path, device=device, options=options)
        self.engine, record = load_engine(trt, path, device, verbose=options.verbose)
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
        if self.fixed_shape is None:
            self.min_tile, self.max_tile = (low[2], low[3]), (high[2], high[3])
        self.max_batch = high[0]
        self._min_batch = low[0]
        self.stream = self._cp.cuda.Stream(non_blocking=True)
        self.cuda_graphs = options.cuda_graphs
        self._graphs: dict[tuple[int, ...], tuple] = {}  # input shape -> (device input, device output, graph)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Upscale a float32 NCHW batch in chunks of at most max_batch tiles."""
        chunks = [self._run_chunk(x[i:i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        cp = self._cp
        n = len(x)
        if n < self._min_batch:  # pad with zero tiles
            x = np.concatenate([x, np.zeros((self._min_batch - n,) + x.shape[1:], x.dtype)])
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        with self.stream:
            if not self.context.set_input_shape(self.input_name, x.shape):
                low, high = self._profile[0], self._profile[2]
                what = (f"exactly {high}" if low == high else f"{low}..{high}") + " (N, C, H, W)"
                raise I2NQError(f"input shape {tuple(x.shape)} does not fit the engine, which takes {what}: "
                                f"rebuild it for these tiles (i2nq build-engine --tile/--batch or --min-shape/"
                                f"--max-shape), or let the tiler choose the tiles")
            out_shape = tuple(self.context.get_tensor_shape(self.output_name))
            if self.cuda_graphs:
                d_out = self._run_graph(x, out_shape)
            else:
                d_in = cp.asarray(x)
                d_out = cp.empty(out_shape, self.output_dtype)
                self._execute(d_in, d_out)
            y = cp.asnumpy(d_out[:n], stream=self.stream)
        self.stream.synchronize()
        return y.astype(np.float32, copy=False)

    def _execute(self, d_in, d_out) -> None:
        self.context.set_tensor_address(self.input_name, d_in.data.ptr)
        self.context.set_tensor_address(self.output_name, d_out.data.ptr)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise I2NQError("TensorRT execution failed; see the TensorRT messages above (--verbose shows more)")

    def _run_graph(self, x: np.ndarray, out_shape: tuple[int, ...]):
        """Run `x` through the CUDA graph of its shape: captured on first use (after one plain run, as TensorRT
        requires before a capture), with device buffers of its own that the graph's addresses point at."""
        cp = self._cp
        entry = self._graphs.get(x.shape)
        if entry is not None:
            d_in, d_out, graph = entry
            d_in.set(x, stream=self.stream)
            graph.launch(self.stream)
            return d_out
        d_in, d_out = cp.empty(x.shape, self.input_dtype), cp.empty(out_shape, self.output_dtype)
        d_in.set(x, stream=self.stream)
        self._execute(d_in, d_out)  # this call's result, and TensorRT's state settled for the capture
        self.stream.begin_capture()
        try:
            captured = self.context.execute_async_v3(self.stream.ptr)
        finally:
            graph = self.stream.end_capture()
        if not captured:
            raise I2NQError("TensorRT execution could not be captured as a CUDA graph; run without cuda_graphs")
        if len(self._graphs) >= self.MAX_GRAPHS:
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[x.shape] = (d_in, d_out, graph)
        return d_out

    def close(self) -> None:
        """Drop the graphs, context and engine (device memory is freed with them)."""
        self._graphs = {}
        self.context = None
        self.engine = None
