"""Engine build, cache and load logic (with a stand-in `tensorrt` module: no TensorRT or GPU needed), and the
one-line errors for missing TensorRT, CuPy or i2nq metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from i2nq.cli import main
from i2nq.errors import I2NQError
from i2nq.plugins import engine as engine_mod
from i2nq.plugins.engine import EngineRecord, build_engine, load_engine, profile_shapes, sidecar_path


def fake_tensorrt(version: str = "11.1.0") -> types.ModuleType:
    """Just enough of the TensorRT Python API for build_engine / load_engine; counts engine builds."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = 0

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Parser:
        num_errors = 0

        def __init__(self, network: object, logger: Logger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
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

        def create_network(self, flags: int) -> object:
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: object, config: Config) -> bytes:
            trt.builds += 1
            return f"engine #{trt.builds} {config.profile.shapes}".encode()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> tuple:
            return ("engine", data)

    trt.Logger, trt.OnnxParser, trt.Builder, trt.Runtime = Logger, Parser, Builder, Runtime
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    return trt


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
    assert path.read_bytes().startswith(b"engine #2")
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
    assert engine[0] == "engine" and record.meta.receptive_field == 3
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
