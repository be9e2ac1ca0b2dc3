"""Stand-ins for the `tensorrt` and `cupy` modules (no TensorRT or GPU needed), used through the `trt` fixture of
conftest.py, and stub plugin libraries (a few C functions with the probes of libi2nq_trt.so, built with gcc).

The stand-in TensorRT does what i2nq's engine code relies on: a parser that turns each ai.i2nq node into a
plugin layer when a library registered the creators (and the parser prefers plugins, as from TensorRT 10.7)
or into function-body layers otherwise; strongly/weakly typed networks; a timing cache that refuses a corrupt
blob; one process-wide logger level; a plugin registry that records load_library calls. Its 'engine' runs the
ONNX file with ONNX Runtime on the host arrays of the stand-in CuPy (or, with trt.compute = "nearest", a cheap
nearest-neighbour upscale), within its optimization profile, and CUDA graphs record and replay executions.
"""

from __future__ import annotations

import importlib.machinery
import json
import shutil
import subprocess
import sys
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

#: Executions recorded by an active CUDA graph capture (None: not capturing).
CAPTURE: list | None = None


def fake_tensorrt(version: str = "11.1.0") -> types.ModuleType:
    """Just enough of the TensorRT Python API for build_engine / load_engine; counts engine builds."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # so importlib.util.find_spec sees it
    trt.__version__ = version
    trt.builds = 0
    trt.parser_prefers_plugins = True  # False: an ONNX parser before TensorRT 10.7 (local functions first)
    trt.library_creators = ("NUQuant", "LUTDequant")  # what a loaded plugin library registers
    trt.creators: set[str] = set()
    trt.loaded_libraries: list[str] = []
    trt.loggers: list = []
    trt.build_hook = None  # called inside every build (tests of concurrent builds)
    trt.compute = "onnxruntime"  # or "nearest": engines upscale by repetition (cheap, for shape tests)
    trt.last_config = trt.last_network = None

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self, min_severity: int = 2) -> None:
            self.min_severity = min_severity
            trt.loggers.append(self)

        def log(self, severity: int, msg: str) -> None:
            if severity <= self.min_severity:
                print(f"[TRT] {msg}", file=sys.stderr)

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.layers, self.onnx = flags, [], None

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, i: int) -> types.SimpleNamespace:
            return self.layers[i]

    class Parser:
        num_errors = 0

        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.logger = network, logger

        def parse_from_file(self, path: str) -> bool:
            import onnx

            self.network.onnx = path
            for node in onnx.load(path).graph.node:
                if node.domain == "ai.i2nq":
                    plugin = node.op_type in trt.creators and trt.parser_prefers_plugins
                    kinds = ["PLUGIN_V3"] if plugin else ["UNARY", "ELEMENTWISE", "ELEMENTWISE"]  # its body
                else:
                    kinds = ["CONVOLUTION" if node.op_type == "Conv" else "OTHER"]
                self.network.layers += [types.SimpleNamespace(type=k, name=node.name) for k in kinds]
            self.logger.log(Logger.VERBOSE, f"parsed {len(self.network.layers)} layers (verbose detail)")
            return True

    class TimingCache:
        def __init__(self, entries: set[str] | None = None) -> None:
            self.entries = set(entries or ())

        def serialize(self) -> bytes:
            return b"timing:" + json.dumps(sorted(self.entries)).encode()

        def combine(self, other: TimingCache, ignore_mismatch: bool) -> bool:
            self.entries |= other.entries
            return True

    class Profile:
        def set_shape(self, name: str, *shapes: tuple) -> None:
            self.shapes = shapes

    class Config:
        def __init__(self) -> None:
            self.flags, self.cache = set(), None

        def set_memory_pool_limit(self, pool: int, size: int) -> None:
            self.workspace = size

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, profile: Profile) -> None:
            self.profile = profile

        def create_timing_cache(self, data: bytes) -> TimingCache | None:
            if not data:
                return TimingCache()
            if not data.startswith(b"timing:"):
                return None  # TensorRT logs an error and returns null for a blob it cannot read
            return TimingCache(json.loads(data[7:]))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger
            logger.log(Logger.WARNING, "builder warning (always shown)")

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            trt.builds += 1
            trt.last_config, trt.last_network = config, network
            if trt.build_hook:
                trt.build_hook()
            config.cache.entries.add(f"{Path(network.onnx).name}:{config.profile.shapes}")
            self.logger.log(Logger.VERBOSE, "tactic timing (verbose detail)")
            return json.dumps(dict(n=trt.builds, onnx=network.onnx, profile=config.profile.shapes,
                                   strongly_typed=bool(network.flags), fp16="FP16" in config.flags)).encode()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
            try:
                return FakeEngine(json.loads(data), trt.compute)
            except ValueError:
                return None

    class Registry:
        def load_library(self, path: str) -> object:
            trt.loaded_libraries.append(path)
            trt.creators |= set(trt.library_creators)
            return object()

        def get_creator(self, name: str, version: str, namespace: str) -> object | None:
            return object() if name in trt.creators and (version, namespace) == ("1", "i2nq") else None

    registry = Registry()
    trt.get_plugin_registry = lambda: registry
    trt.Logger, trt.OnnxParser, trt.Builder, trt.Runtime = Logger, Parser, Builder, Runtime
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    trt.LayerType = types.SimpleNamespace(PLUGIN_V3="PLUGIN_V3")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = np.dtype
    return trt


class FakeEngine:
    """A 'built engine': the ONNX model run by ONNX Runtime on the host 'device buffers' of fake_cupy, within
    its optimization profile (like a TensorRT engine, it refuses input shapes outside it)."""

    def __init__(self, data: dict, compute: str = "onnxruntime") -> None:
        import onnxruntime as ort

        self.n, self.profile, self.compute = data["n"], [tuple(s) for s in data["profile"]], compute
        self.strongly_typed, self.fp16 = data["strongly_typed"], data["fp16"]
        self.session = ort.InferenceSession(data["onnx"], providers=["CPUExecutionProvider"])
        self.scale = int(self.session.get_modelmeta().custom_metadata_map["i2nq.scale"])
        io = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.names = [v.name for v in io]
        self.dtypes = [np.float16 if "float16" in v.type else np.float32 for v in io]
        self.num_io_tensors = 2
        self.runs: list[tuple[int, ...]] = []

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == self.names[0] else "output"

    def get_tensor_dtype(self, name: str) -> type:
        return self.dtypes[self.names.index(name)]

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return self.profile

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.compute == "nearest":
            return x.repeat(self.scale, 2).repeat(self.scale, 3)
        return self.session.run(None, {self.names[0]: x})[0]


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.shape, self.address = engine, None, {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.profile
        ok = len(shape) == 4 and all(lo <= d <= hi for lo, d, hi in zip(low, shape, high))
        self.shape = tuple(shape) if ok else None
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        n, c, h, w = self.shape
        return (n, c, h * self.engine.scale, w * self.engine.scale)

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.address[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        if self.shape is None:
            return False
        engine, shape = self.engine, self.shape
        x_ptr, y_ptr = self.address[engine.names[0]], self.address[engine.names[1]]

        def execute() -> None:  # the addresses are baked in, as in a captured CUDA graph
            x = FakeDeviceArray.memory[x_ptr]
            assert x.shape == shape and x.dtype == engine.dtypes[0]
            engine.runs.append(x.shape)
            FakeDeviceArray.memory[y_ptr][...] = engine.infer(x)

        if CAPTURE is not None:
            CAPTURE.append(execute)
        else:
            execute()
        return True


class FakeDeviceArray:
    """A 'device' array: host memory, addressed by pointer like a CuPy array."""

    memory: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def __init__(self, a: np.ndarray, allocation: bool = True) -> None:
        self.a, self.shape = a, a.shape
        self.data = types.SimpleNamespace(ptr=a.ctypes.data)
        if allocation:  # views share their allocation's address
            FakeDeviceArray.memory[a.ctypes.data] = a

    def __getitem__(self, index) -> FakeDeviceArray:
        return FakeDeviceArray(self.a[index], allocation=False)

    def set(self, host: np.ndarray, stream: object = None) -> None:
        assert host.shape == self.a.shape and host.dtype == self.a.dtype
        self.a[...] = host


class FakeGraph:
    def __init__(self, executions: list) -> None:
        self.executions, self.launches = executions, 0

    def launch(self, stream: object = None) -> None:
        self.launches += 1
        for execute in self.executions:
            execute()


def fake_cupy() -> types.ModuleType:
    """Just enough of CuPy for the tensorrt backend: one 'GPU' (compute capability 9.0), streams with CUDA graph
    capture, transfers."""
    cp = types.ModuleType("cupy")
    cp.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    cp.graphs: list[FakeGraph] = []

    class Stream:
        ptr = 0

        def __init__(self, non_blocking: bool = False) -> None:
            pass

        def __enter__(self) -> Stream:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def synchronize(self) -> None:
            pass

        def begin_capture(self) -> None:
            global CAPTURE
            assert CAPTURE is None, "nested capture"
            CAPTURE = []

        def end_capture(self) -> FakeGraph:
            global CAPTURE
            graph, CAPTURE = FakeGraph(CAPTURE), None
            cp.graphs.append(graph)
            return graph

    cp.asarray = lambda a: FakeDeviceArray(np.array(a))
    cp.empty = lambda shape, dtype: FakeDeviceArray(np.full(shape, np.nan, dtype))
    cp.asnumpy = lambda d, stream=None: d.a.copy()
    props = {"name": b"Fake GPU", "major": 9, "minor": 0}
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: props)
    cp.cuda = types.SimpleNamespace(Stream=Stream, runtime=runtime,
                                    Device=lambda i: types.SimpleNamespace(use=lambda: None))
    return cp


def stub_plugin(folder: Path, name: str, version: str = "1", tensorrt: str | None = "11.1.0", archs: str = "90",
                device_status: int = 0) -> Path:
    """A shared library with the probes of libi2nq_trt.so returning these values (tensorrt None: no
    i2nqTensorRTVersion, like a library built before it existed). Distinct names: dlopen caches by path."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    src, lib = folder / f"{name}.c", folder / f"lib{name}.so"
    probes = [f'const char* i2nqPluginVersion(void) {{ return "{version}"; }}',
              f'const char* i2nqCudaArchs(void) {{ return "{archs}"; }}',
              f"int i2nqCheckDevice(int device) {{ return device == 0 ? {device_status} : 101; }}"]
    if tensorrt is not None:
        probes.append(f'const char* i2nqTensorRTVersion(void) {{ return "{tensorrt}"; }}')
    src.write_text("\n".join(probes) + "\n")
    subprocess.run(["gcc", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True, timeout=60)
    return lib
