"""Engine build, cache and load logic (with a stand-in `tensorrt` module: no TensorRT or GPU needed), and the
one-line errors for missing TensorRT, CuPy or i2nq metadata."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from i2nq.cli import main
from i2nq.errors import I2NQError
from i2nq.plugins import engine as engine_mod
from i2nq.plugins.engine import EngineRecord, build_engine, load_engine, sidecar_path
from i2nq.runtime.backends.tensorrt import TensorRTOptions
from trt_standin import stub_plugin


@pytest.fixture
def gpu(trt: types.ModuleType) -> types.ModuleType:
    """The stand-in tensorrt with its CuPy (the tensorrt backend runs, its engine computing with ONNX Runtime)."""
    return trt


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
    with pytest.raises(I2NQError, match=r"does not fit the engine, which takes exactly \(2, 3, 16, 16\)"):
        backend.run(np.zeros((2, 3, 20, 16), np.float32))


# --- the plugin library: registered once per process, checked before TensorRT loads it, and really used ------


def test_plugin_library_is_registered_once_per_process(trt: types.ModuleType, tiny_model, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    lib = stub_plugin(tmp_path, "i2nq_ok")
    model = tiny_model(custom_op=True)
    path = build_engine(model, plugin=lib)
    record = EngineRecord.load(path)
    assert (record.plugin_version, record.plugin_layers, record.custom_nodes) == ("1", 1, 1)
    load_engine(trt, path, plugin=lib)
    build_engine(model, plugin=lib, tile=(32, 32), batch=1)  # another engine, the same library
    link = tmp_path / "link.so"
    link.symlink_to(lib)
    build_engine(model, plugin=link, batch=2)  # the same file by another name
    monkeypatch.setenv("I2NQ_CACHE_DIR", str(tmp_path / "other-cache"))  # nothing named, none built there:
    assert EngineRecord.load(build_engine(model, batch=3)).plugin_layers == 1  # the loaded one is used
    assert trt.loaded_libraries == [str(lib.resolve())]
    other = stub_plugin(tmp_path, "i2nq_other")
    capsys.readouterr()
    assert main(["build-engine", str(model), "--plugin", str(other), "--batch", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(r"already loaded .*libi2nq_ok\.so; it cannot also load", err)
    assert trt.loaded_libraries == [str(lib.resolve())]


def test_a_model_without_custom_nodes_does_not_load_the_plugin(trt: types.ModuleType, tiny_model,
                                                               tmp_path: Path) -> None:
    record = EngineRecord.load(build_engine(tiny_model(), plugin=stub_plugin(tmp_path, "i2nq_unused")))
    assert (record.plugin_version, record.plugin_layers, record.custom_nodes) == (None, 0, 0)
    assert trt.loaded_libraries == []


@pytest.mark.parametrize("probes,message", [
    (dict(tensorrt="10.16.1"), r"built against TensorRT 10\.16\.1 headers; this is TensorRT 11\.1\.0: rebuild it"),
    (dict(tensorrt=None), r"does not say which TensorRT it was built for .*rebuild it"),
    (dict(version="2"), r"implements ai\.i2nq version 2, this i2nq needs 1; rebuild it"),
    (dict(archs="75-real", device_status=209),
     r"has no kernels for this GPU \(sm_90; it was built for 75-real\): rebuild it here .*--cuda-arch 90"),
    (dict(device_status=35), r"cannot use CUDA device 0 \(CUDA error 35\)"),
])
def test_a_plugin_library_for_another_tensorrt_or_gpu_is_a_one_line_error(
        trt: types.ModuleType, tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture, probes: dict,
        message: str) -> None:
    lib = stub_plugin(tmp_path, "i2nq_bad", **probes)
    assert main(["build-engine", str(tiny_model(custom_op=True)), "--plugin", str(lib)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert trt.loaded_libraries == [] and trt.builds == 0  # refused before TensorRT saw it


def test_a_plugin_library_without_code_for_this_gpu_runs_by_jit_with_a_note(trt: types.ModuleType, tiny_model,
                                                                             tmp_path: Path) -> None:
    lib = stub_plugin(tmp_path, "i2nq_ptx", archs="80-real,86")  # PTX of compute_86 runs (JIT) on sm_90
    with pytest.warns(UserWarning, match=r"no sm_90 code \(built for 80-real,86\).*JIT"):
        build_engine(tiny_model(custom_op=True), plugin=lib)


def test_tensorrt_before_10_7_is_refused(trt: types.ModuleType, tiny_model, capsys: pytest.CaptureFixture) -> None:
    """Older ONNX parsers import a node naming a model-local function as that function: the plugin would never
    run, silently."""
    trt.__version__ = "10.6.0"
    assert main(["build-engine", str(tiny_model())]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TensorRT 10.6.0 is too old: i2nq needs TensorRT >= 10.7" in err


def test_every_custom_node_must_become_a_plugin_layer(trt: types.ModuleType, tiny_model, tmp_path: Path) -> None:
    """Checked after parsing, so that the record tells the truth whatever the parser did."""
    lib = stub_plugin(tmp_path, "i2nq_ok")
    trt.parser_prefers_plugins = False  # a parser that imports the model-local function first
    with pytest.raises(I2NQError, match=r"made 0 of the 1 ai\.i2nq nodes of .* plugin layers.*TensorRT >= 10\.7"):
        build_engine(tiny_model(custom_op=True), plugin=lib)
    assert trt.builds == 0
    trt.parser_prefers_plugins = True
    assert EngineRecord.load(build_engine(tiny_model(custom_op=True), plugin=lib)).plugin_layers == 1


def test_without_the_plugin_the_record_says_so(trt: types.ModuleType, tiny_model) -> None:
    with pytest.warns(UserWarning, match="function bodies"):
        record = EngineRecord.load(build_engine(tiny_model(custom_op=True)))
    assert (record.plugin_version, record.plugin_layers, record.custom_nodes) == (None, 0, 1)


# --- the engine cache: one build per engine at a time, atomic files, timing cache --------------------------------


def test_concurrent_builds_of_one_engine_build_it_once(trt: types.ModuleType, tiny_model) -> None:
    """The second build waits on the first one's lock, then finds the engine built. (Without the lock it would
    build too: the first build holds until the second has started.)"""
    onnx = tiny_model()
    second_started = threading.Event()
    paths: list[Path] = []

    def hold_first_build() -> None:
        if trt.builds == 1:
            assert second_started.wait(30)
            time.sleep(0.3)  # time for the second build to reach the lock (or, without one, its own build)

    trt.build_hook = hold_first_build
    first = threading.Thread(target=lambda: paths.append(build_engine(onnx)))
    first.start()
    for _ in range(3000):
        if trt.builds:
            break
        time.sleep(0.01)

    def second() -> None:
        second_started.set()
        paths.append(build_engine(onnx))

    other = threading.Thread(target=second)
    other.start()
    first.join(60)
    other.join(60)
    assert trt.builds == 1 and len(paths) == 2 and paths[0] == paths[1]
    assert EngineRecord.load(paths[0]).engine_sha256 == engine_mod.file_sha256(paths[0])


def test_files_are_written_under_unique_names_and_renamed(trt: types.ModuleType, tiny_model, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import i2nq.files as files

    published: list[tuple[str, str]] = []
    publish = files._publish
    monkeypatch.setattr(files, "_publish",
                        lambda tmp, dst, overwrite: published.append((str(tmp), str(dst))) or publish(tmp, dst, overwrite))
    build_engine(tiny_model(), tmp_path / "model.engine", batch=1)
    build_engine(tiny_model(), tmp_path / "model.engine", batch=1, overwrite=True)
    engine_temps = [src for src, dst in published if dst == str(tmp_path / "model.engine")]
    assert len(engine_temps) == 2 and len(set(engine_temps)) == 2
    assert all(Path(src).parent == tmp_path and files.TEMP_NAME.match(Path(src).name) for src in engine_temps)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def _timing_cache() -> Path:
    return next((Path(os.environ["I2NQ_CACHE_DIR"]) / "engines").glob("timing-*.cache"))


def _entries(cache: Path) -> list[str]:
    return json.loads(cache.read_bytes()[len(b"timing:"):])


def test_a_corrupt_timing_cache_is_discarded_with_a_note(trt: types.ModuleType, tiny_model) -> None:
    onnx = tiny_model()
    build_engine(onnx)
    cache = _timing_cache()
    assert len(_entries(cache)) == 1
    cache.write_bytes(b"\x00not a timing cache")  # TensorRT cannot read it
    with pytest.warns(UserWarning, match=r"timing cache .* is unreadable .*: discarded"):
        build_engine(onnx, batch=1)
    assert len(_entries(cache)) == 1  # rebuilt from this build only
    cache.write_bytes(b"timing:[]")  # readable, but not what i2nq wrote (the recorded hash differs)
    with pytest.warns(UserWarning, match="discarded"):
        build_engine(onnx, batch=2)
    assert len(_entries(cache)) == 1


def test_timing_cache_keeps_what_other_builds_saved_meanwhile(trt: types.ModuleType, tiny_model,
                                                              tmp_path: Path) -> None:
    own = tmp_path / "own.cache"
    onnx = tiny_model()

    def another_process_saves() -> None:
        engine_mod.write_atomic(own, b'timing:["from another build"]')
        engine_mod.write_atomic(own.with_name("own.cache.sha256"),
                                hashlib.sha256(b'timing:["from another build"]').hexdigest().encode())

    trt.build_hook = another_process_saves
    build_engine(onnx, options=TensorRTOptions(timing_cache=own))
    assert len(_entries(own)) == 2 and "from another build" in _entries(own)


# --- options: precision, workspace, log level ---------------------------------------------------------------------


def test_fp16_option(trt: types.ModuleType, tiny_model) -> None:
    fp32, fp16 = tiny_model(), tiny_model(dtype="float16")
    with pytest.raises(I2NQError, match=r"builds strongly typed networks only: export the fp16 graph"):
        build_engine(fp32, options=TensorRTOptions(fp16=True))  # TensorRT 11
    with pytest.raises(I2NQError, match=r"fp16 is off: export the portable flavor"):
        build_engine(fp16, options=TensorRTOptions(fp16=False))
    trt.__version__ = "10.13.0.35"
    weak = build_engine(fp32, options=TensorRTOptions(fp16=True))
    assert "FP16" in trt.last_config.flags and trt.last_network.flags == 0 and EngineRecord.load(weak).fp16_flag
    strong = build_engine(fp32)
    assert strong != weak and not trt.last_config.flags and trt.last_network.flags == 1  # STRONGLY_TYPED
    assert build_engine(fp16, options=TensorRTOptions(fp16=True)) == build_engine(fp16)  # fp16 already: same engine
    assert trt.builds == 3


def test_workspace_shapes_the_engine(trt: types.ModuleType, tiny_model) -> None:
    onnx = tiny_model()
    small = build_engine(onnx, options=TensorRTOptions(workspace_mib=512))
    assert trt.last_config.workspace == 512 << 20 and EngineRecord.load(small).workspace_mib == 512
    assert build_engine(onnx) != small and trt.last_config.workspace == 4096 << 20


def test_verbose_shows_tensorrt_log(trt: types.ModuleType, tiny_model, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    onnx, out = str(tiny_model()), str(tmp_path / "m.engine")
    assert main(["build-engine", onnx, "-o", out]) == 0
    err = capsys.readouterr().err
    assert "[TRT] builder warning" in err and "verbose detail" not in err
    assert main(["build-engine", onnx, "-o", out, "--verbose", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "[TRT] parsed" in err and "[TRT] tactic timing (verbose detail)" in err
    assert main(["build-engine", onnx, "-o", out, "--overwrite"]) == 0
    assert "verbose detail" not in capsys.readouterr().err
    assert len(trt.loggers) == 1  # TensorRT keeps the first logger it is given: one, whose level changes


def test_upscale_verbose_shows_tensorrt_log(gpu: types.ModuleType, tiny_model, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    import cv2

    image = tmp_path / "in.png"
    cv2.imwrite(str(image), _frame(12, 10))
    args = ["upscale", str(image), "-o", str(tmp_path / "out.png"), "--model", str(tiny_model()),
            "--backend", "tensorrt", "--no-progress", "--overwrite"]
    assert main(args + ["--verbose"]) == 0
    assert "verbose detail" in capsys.readouterr().err
    assert cv2.imread(str(tmp_path / "out.png")).shape == (24, 20, 3)


# --- bad input through the CLI: one line, exit status 2 ------------------------------------------------------------


def test_bad_engines_and_tiles_are_one_line_errors(gpu: types.ModuleType, tiny_model, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    import cv2

    engine = build_engine(tiny_model(), tmp_path / "model.engine", tile=(16, 16), batch=1)
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), _frame(40, 30))
    capsys.readouterr()  # the build's TensorRT warning
    base = ["upscale", str(image), "-o", str(tmp_path / "out.png"), "--model", str(engine), "--backend", "tensorrt",
            "--no-progress"]
    cases = [(["--tile", "32"], {}, r"takes tiles of exactly 16x16, not 32x32: drop --tile"),
             ([], {"__version__": "11.2.0"}, r"built by TensorRT 11\.1\.0 .*this is TensorRT 11\.2\.0.*rebuild"),
             ([], {"__version__": "10.2.0"}, r"TensorRT 10\.2\.0 is too old")]
    for extra, attrs, message in cases:
        saved = {k: getattr(gpu, k) for k in attrs}
        for k, v in attrs.items():
            setattr(gpu, k, v)
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
        for k, v in saved.items():
            setattr(gpu, k, v)
    assert main(base) == 0
