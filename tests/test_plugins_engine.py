"""Engine build, cache and load logic (with a stand-in `tensorrt` module: no TensorRT or GPU needed), and the
one-line errors for missing TensorRT, CuPy or i2nq metadata."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from i2nq.cli import main
from i2nq.errors import I2NQError
from i2nq.plugins import engine as engine_mod
from i2nq.plugins.engine import EngineRecord, build_engine, load_engine, profile_shapes, sidecar_path


def fake_tensorrt(version: str = "11.1.0") -> types.ModuleType:
    """Just enough of the TensorRT Python API for build_engine / load_engine; counts engine builds."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # so importlib.util.find_spec sees it
    trt.__version__ = version
    trt.builds = 0

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Parser:
        num_errors = 0

        def __init__(self, network: types.SimpleNamespace, logger: Logger) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            self.network.onnx = path
            return True

    class TimingCache:
        def serialize(self) -> bytes:
            return b"timing"

    class Profile:
        def set_shape(self, name: str, *shapes: tuple) -> None:
            self.shapes = shapes

    class Config:
        def set_memory_pool_limit(self, pool: int, size: int) -> None:
            pass

        def add_optimization_profile(self, profile: Profile) -> None:
            self.profile = profile

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache()

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> None:
            self.cache = cache

        def get_timing_cache(self) -> TimingCache:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int) -> types.SimpleNamespace:
            return types.SimpleNamespace()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: types.SimpleNamespace, config: Config) -> bytes:
            trt.builds += 1
            return json.dumps(dict(n=trt.builds, onnx=network.onnx, profile=config.profile.shapes)).encode()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
            try:
                return FakeEngine(json.loads(data))
            except ValueError:
                return None

    trt.Logger, trt.OnnxParser, trt.Builder, trt.Runtime = Logger, Parser, Builder, Runtime
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = np.dtype
    return trt


class FakeEngine:
    """A 'built engine': the ONNX model run by ONNX Runtime on the host 'device buffers' of fake_cupy, within
    its optimization profile (like a TensorRT engine, it refuses input shapes outside it)."""

    def __init__(self, data: dict) -> None:
        import onnxruntime as ort

        self.n, self.profile = data["n"], [tuple(s) for s in data["profile"]]
        self.session = ort.InferenceSession(data["onnx"], providers=["CPUExecutionProvider"])
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
        scale = int(self.engine.session.get_modelmeta().custom_metadata_map["i2nq.scale"])
        return (n, c, h * scale, w * scale)

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.address[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        if self.shape is None:
            return False
        x = FakeDeviceArray.memory[self.address[self.engine.names[0]]]
        assert x.shape == self.shape and x.dtype == self.engine.dtypes[0]
        self.engine.runs.append(x.shape)
        y = FakeDeviceArray.memory[self.address[self.engine.names[1]]]
        y[...] = self.engine.session.run(None, {self.engine.names[0]: x})[0]
        return True


class FakeDeviceArray:
    """A 'device' array: host memory, addressed by pointer like a CuPy array."""

    memory: dict[int, np.ndarray] = {}

    def __init__(self, a: np.ndarray) -> None:
        self.a, self.shape = a, a.shape
        self.data = types.SimpleNamespace(ptr=a.ctypes.data)
        FakeDeviceArray.memory[a.ctypes.data] = a

    def __getitem__(self, index) -> FakeDeviceArray:
        return FakeDeviceArray(self.a[index])


def fake_cupy() -> types.ModuleType:
    """Just enough of CuPy for the tensorrt backend: one 'GPU', streams, transfers."""
    cp = types.ModuleType("cupy")
    cp.__spec__ = importlib.machinery.ModuleSpec("cupy", None)

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

    cp.asarray = lambda a: FakeDeviceArray(np.array(a))
    cp.empty = lambda shape, dtype: FakeDeviceArray(np.full(shape, np.nan, dtype))
    cp.asnumpy = lambda d, stream=None: d.a.copy()
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"Fake GPU"})
    cp.cuda = types.SimpleNamespace(Stream=Stream, runtime=runtime,
                                    Device=lambda i: types.SimpleNamespace(use=lambda: None))
    return cp


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    """A fake tensorrt on a fake GPU, a private cache, no plugin library."""
    fake = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(engine_mod, "use_device", lambda device: "Fake GPU")
    monkeypatch.setenv("I2NQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("I2NQ_PLUGIN", raising=False)
    return fake


def test_cache_reuses_a_valid_engine_and_rebuilds_a_stale_one(trt: types.ModuleType, tiny_model) -> None:
    onnx = tiny_model()
    path = build_engine(onnx)
    assert trt.builds == 1 and path.is_file()
    record = EngineRecord.load(path)
    assert (record.meta.scale, record.gpu, record.plugin_version) == (2, "Fake GPU", None)
    assert build_engine(onnx) == path and trt.builds == 1
    path.write_bytes(b"truncated")  # a damaged entry is rebuilt, never used
    assert build_engine(onnx) == path and trt.builds == 2
    assert json.loads(path.read_bytes())["n"] == 2
    sidecar_path(path).unlink()  # so is one without its record
    assert build_engine(onnx) == path and trt.builds == 3


def test_cache_key_covers_shape_tensorrt_and_gpu(trt: types.ModuleType, tiny_model,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    onnx = tiny_model()
    dynamic = build_engine(onnx)
    static = build_engine(onnx, tile=(64, 48), batch=2)
    assert static != dynamic and "2x3x64x48" in static.name and "dynamic" in dynamic.name
    assert EngineRecord.load(static).profile == ((2, 3, 64, 48),) * 3
    trt.__version__ = "11.2.0"
    assert build_engine(onnx) != dynamic
    monkeypatch.setattr(engine_mod, "use_device", lambda device: "Other GPU")
    assert len({build_engine(onnx), dynamic}) == 2 and trt.builds == 4


def test_engine_from_another_tensorrt_or_gpu_is_refused(trt: types.ModuleType, tiny_model, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_engine(tiny_model(), tmp_path / "model.engine", tile=(32, 32), batch=1)
    engine, record = load_engine(trt, path)
    assert engine.n == 1 and record.meta.receptive_field == 3
    trt.__version__ = "10.9.0"
    with pytest.raises(I2NQError, match="built by TensorRT 11.1.0.*rebuild"):
        load_engine(trt, path)
    trt.__version__ = "11.1.0"
    monkeypatch.setattr(engine_mod, "use_device", lambda device: "Other GPU")
    with pytest.raises(I2NQError, match="for Fake GPU.*rebuild"):
        load_engine(trt, path)


def test_custom_nodes_without_the_plugin_warn(trt: types.ModuleType, tiny_model) -> None:
    with pytest.warns(UserWarning, match="build-plugin"):
        build_engine(tiny_model(custom_op=True))


def test_engine_without_its_record_is_refused(trt: types.ModuleType, tmp_path: Path) -> None:
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"engine")
    with pytest.raises(I2NQError, match="bare.engine.json"):
        load_engine(trt, bare)


def test_onnx_without_i2nq_metadata_is_refused(tiny_model, tmp_path: Path) -> None:
    with pytest.raises(I2NQError, match="not an i2nq export"):
        build_engine(tiny_model(metadata=False))
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_bytes(b"\x00junk")
    with pytest.raises(I2NQError, match="cannot read ONNX"):
        build_engine(not_onnx)


def test_missing_tensorrt_or_cupy_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tiny_model,
                                                      capsys: pytest.CaptureFixture) -> None:
    from i2nq.plugins.gpu import import_cupy
    from i2nq.runtime.backends.tensorrt import TensorRTBackend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(I2NQError, match="install TensorRT"):
        TensorRTBackend(tiny_model())
    with pytest.raises(I2NQError, match="CuPy"):
        import_cupy()
    assert main(["build-engine", str(tiny_model())]) == 2
    err = capsys.readouterr().err
    assert "install TensorRT" in err and len(err.strip().splitlines()) == 1


def test_profile_shapes() -> None:
    assert profile_shapes(3, (64, 96), 2) == ((2, 3, 64, 96),) * 3
    low, opt, high = profile_shapes(3, None, None)
    assert low[0] == 1 and high[0] >= opt[0] and low[2] <= opt[2] <= high[2]
    with pytest.raises(I2NQError, match="tile"):
        profile_shapes(3, (0, 64), None)


def test_engine_side_needs_neither_pyav_nor_torch(tmp_path: Path) -> None:
    """A GPU machine that builds and runs engines may lack PyAV (the lent H200's image does) and torch: the
    engine, plugin-library and backend modules and `i2nq inspect` import without them."""
    for missing in ("av", "torch"):
        (tmp_path / f"{missing}.py").write_text(f"raise ImportError('no {missing} here (simulated)')\n")
    code = ("import i2nq.plugins.engine, i2nq.plugins.library, i2nq.plugins.gpu, i2nq.runtime.backends, "
            "i2nq.runtime.inspect, i2nq.runtime.backends.tensorrt; "
            "from i2nq.cli import main; raise SystemExit(main(['inspect', 'default']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "edsr-small" in result.stdout


@pytest.fixture
def gpu(trt: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The fake tensorrt plus a fake CuPy: the tensorrt backend runs, its engine computing with ONNX Runtime."""
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    return trt


def _frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


@pytest.mark.parametrize("size", [(40, 37), (10, 12)])  # larger than the engine's tile, and smaller
def test_tensorrt_backend_static_engine_equals_whole_frame(gpu: types.ModuleType, tiny_model, size) -> None:
    """A static 3x3x16x16 engine: every call is exactly that shape (short batches padded, small frames padded),
    and the tiled result equals the whole frame run by ONNX Runtime (for a frame smaller than the tile, away
    from the padded bottom and right edges: the padding is documented as approximate there)."""
    import i2nq

    model = tiny_model()
    up = i2nq.Upscaler(model, backend="tensorrt", device="cuda", tile=16, batch=3)
    assert up.backend.name == "tensorrt" and up.backend.fixed_shape == (16, 16) and up.backend.max_batch == 3
    frame = _frame(*size)
    want = i2nq.Upscaler(model, backend="onnxruntime", device="cpu", tile=0).upscale(frame)
    got = up.upscale(frame)
    assert got.shape == want.shape
    exact_h, exact_w = (size[0] - (16 > size[0]) * 3) * 2, (size[1] - (16 > size[1]) * 3) * 2  # radius 3, x2
    np.testing.assert_array_equal(got[:exact_h, :exact_w], want[:exact_h, :exact_w])
    runs = up.backend.engine.runs
    assert runs and set(runs) == {(3, 3, 16, 16)}


def test_tensorrt_backend_dynamic_engine_chunks_and_fp16(gpu: types.ModuleType, tiny_model) -> None:
    """A dynamic engine of the fp16 (tensorrt-flavor) graph: batches above its maximum go in chunks, inputs are
    cast to fp16 and outputs back to float32, as ONNX Runtime's backend does."""
    import i2nq
    from i2nq.runtime.backends import open_backend

    model = tiny_model(dtype="float16")
    trt_backend = open_backend(model, "tensorrt", "cuda")
    assert trt_backend.fixed_shape is None and trt_backend.max_batch == 4
    x = np.random.default_rng(1).random((10, 3, 12, 9), dtype=np.float32)
    y = trt_backend.run(x)
    assert y.dtype == np.float32 and y.shape == (10, 3, 24, 18)
    assert [r[0] for r in trt_backend.engine.runs] == [1, 4, 4, 2]  # 1: the load-time probe (check_backend)
    np.testing.assert_array_equal(y, open_backend(model, "onnxruntime", "cpu").run(x))
    assert i2nq.Upscaler(model, backend="tensorrt", device="cuda").upscale(_frame(20, 30)).shape == (40, 60, 3)


def test_tensorrt_backend_refuses_shapes_outside_the_profile(gpu: types.ModuleType, tiny_model) -> None:
    from i2nq.runtime.backends import open_backend

    backend = open_backend(tiny_model(), "tensorrt", "cuda", tile=(16, 16), batch=2)
    with pytest.raises(I2NQError, match=r"outside the engine's profile \(2, 3, 16, 16\)"):
        backend.run(np.zeros((2, 3, 20, 16), np.float32))
