"""Issue 10: outputs are atomic and never replace what they may not, signals clean up, hostile inputs are
one-line errors, broken models never run, folder batches go on past bad files. bench/results/attacks.md lists
which test covers which attack."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import types
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import i2nq
from i2nq import files
from i2nq.cli import main
from i2nq.errors import I2NQError
from i2nq.files import atomic_output, check_destination, clean_stale_temps
from i2nq.runtime.backends import onnxruntime as ort_backend
from i2nq.runtime.image_io import read_image


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("i2nq: error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8))
    return path


# --- 1. publishing: never replace what was not there at start, unless allowed -------------------------------------


def test_a_file_created_meanwhile_is_kept_and_the_result_too(tmp_path) -> None:
    dst = check_destination(tmp_path / "out.png")  # free when the run starts
    with pytest.raises(I2NQError, match="created by another run or user") as info:
        with atomic_output(dst) as tmp:
            tmp.write_bytes(b"ours")
            dst.write_bytes(b"theirs")  # another user, while this run writes
    assert dst.read_bytes() == b"theirs"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.i2nq-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"ours" and str(kept[0]) in str(info.value)
    assert _names(tmp_path) == {"out.png", kept[0].name}  # no temp file left


def test_two_runs_to_one_output_the_second_to_finish_keeps_its_result_aside(tmp_path) -> None:
    dst = tmp_path / "out.bin"
    with pytest.raises(I2NQError, match="created by another run"):
        with atomic_output(dst) as first:
            first.write_bytes(b"first")
            with atomic_output(dst) as second:
                second.write_bytes(b"second")
    assert dst.read_bytes() == b"second"
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"first", b"second"]


def test_overwrite_replaces_and_is_what_check_destination_allowed(tmp_path) -> None:
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"old")
    os.chmod(dst, 0o640)
    with pytest.raises(I2NQError, match="exists; pass overwrite=True to replace it$"):  # the API's words
        check_destination(dst)
    check_destination(dst, overwrite=True)
    with atomic_output(dst) as tmp:
        tmp.write_bytes(b"new")
    assert dst.read_bytes() == b"new" and dst.stat().st_mode & 0o777 == 0o640
    # a path check_destination found free is never replaced, even if it exists when writing starts
    other = check_destination(tmp_path / "other.bin")
    other.write_bytes(b"theirs")
    with pytest.raises(I2NQError, match="created by another run"), atomic_output(other) as tmp:
        tmp.write_bytes(b"ours")
    assert other.read_bytes() == b"theirs"


def test_a_file_the_caller_keeps_is_replaced(tmp_path) -> None:
    """A path never checked (a training state saved every N steps) is replaced when it existed at the start."""
    state = tmp_path / "run.state.safetensors"
    for step in (b"1", b"2"):
        with atomic_output(state) as tmp:
            tmp.write_bytes(step)
    assert state.read_bytes() == b"2"


def test_data_is_flushed_before_the_name_appears(tmp_path, monkeypatch) -> None:
    events = []
    real_fsync, real_link = os.fsync, os.link
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "link", lambda a, b, **kw: events.append(("link", str(b))) or real_link(a, b, **kw))
    dst = tmp_path / "out.bin"
    with atomic_output(dst) as tmp:
        tmp.write_bytes(b"x")
    link = events.index(("link", str(dst)))
    assert events[link - 1][0] == "fsync" and ".part" in events[link - 1][1]  # the file, then the name
    assert events[link + 1] == ("fsync", str(tmp_path))  # then the folder


def test_an_output_created_during_an_upscale_is_not_replaced(good, tiny_model, capsys, monkeypatch) -> None:
    out = good.with_name("out.png")
    real = ort_backend.OnnxRuntimeBackend.run
    calls = []

    def run(self, x):
        calls.append(1)
        if len(calls) == 2:  # the first call is the load-time probe; then another user creates the output
            out.write_bytes(b"someone else's")
        return real(self, x)

    monkeypatch.setattr(ort_backend.OnnxRuntimeBackend, "run", run)
    assert main(["upscale", str(good), "-o", str(out), "--model", str(tiny_model(scale=2)), "--tile", "8"]) == 2
    err = _one_line_error(capsys, "created by another run or user", "out.i2nq-")
    kept = Path(err.rsplit(" ", 1)[-1])
    assert out.read_bytes() == b"someone else's" and read_image(kept).shape == (24, 32, 3)


def test_build_engine_and_build_plugin_refuse_to_replace_without_overwrite(tiny_model, tmp_path, monkeypatch,
                                                                           capsys) -> None:
    from i2nq.plugins import engine as engine_mod

    monkeypatch.setenv("I2NQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("I2NQ_PLUGIN", raising=False)
    monkeypatch.setattr(engine_mod, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.7.0"))
    monkeypatch.setattr(engine_mod, "trt_logger", lambda trt, verbose=False: None)
    monkeypatch.setattr(engine_mod, "use_device", lambda device: "Fake GPU")
    monkeypatch.setattr(engine_mod, "_serialize", lambda trt, logger, model, record, options: (b"ENGINE", 0))
    out = tmp_path / "m.engine"
    out.write_bytes(b"precious")
    args = ["build-engine", str(tiny_model()), "-o", str(out)]
    assert main(args) == 2
    _one_line_error(capsys, "exists; pass --overwrite")
    assert out.read_bytes() == b"precious"
    assert main(args + ["--overwrite"]) == 0
    assert out.read_bytes() == b"ENGINE" and json.loads(Path(f"{out}.json").read_text())["engine_sha256"]
    assert main(["build-engine", str(tiny_model()), "-o", str(tmp_path / "n.engine")]) == 0
    capsys.readouterr()

    lib = tmp_path / "libi2nq_trt.so"
    lib.write_bytes(b"precious")  # refused before CMake is even looked for
    assert main(["build-plugin", "-o", str(lib)]) == 2
    _one_line_error(capsys, "exists; pass --overwrite")
    assert lib.read_bytes() == b"precious"


# --- 2. signals and leftovers -------------------------------------------------------------------------------------

SLOW_CLI = textwrap.dedent("""
    import sys, time
    from i2nq.runtime.backends import onnxruntime as ort_backend
    real = ort_backend.OnnxRuntimeBackend.run
    def slow(self, x):
        time.sleep(0.05)
        return real(self, x)
    ort_backend.OnnxRuntimeBackend.run = slow
    from i2nq.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _start_slow_upscale(tmp_path: Path, tiny_model, out: Path) -> subprocess.Popen:
    src = tmp_path / "big.png"
    cv2.imwrite(str(src), np.random.default_rng(0).integers(0, 256, (160, 160, 3), np.uint8))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "upscale", str(src), "-o", str(out), "--model",
                             str(tiny_model(scale=2)), "--tile", "16", "--batch", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(".part" in p.name for p in out.parent.iterdir()):  # the output is being written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc


def test_sigterm_cleans_up_like_ctrl_c(tmp_path, tiny_model) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start_slow_upscale(tmp_path, tiny_model, out_dir / "x.png")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip() == "i2nq: terminated by SIGTERM; unfinished outputs were removed"
    assert not any(out_dir.iterdir())


def test_sigkill_leftovers_are_removed_by_the_next_run(tmp_path, tiny_model, good) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start_slow_upscale(tmp_path, tiny_model, out_dir / "x.png")
    proc.kill()
    proc.communicate(timeout=60)
    [leftover] = [p for p in out_dir.iterdir()]
    assert files.TEMP_NAME.match(leftover.name)
    result = subprocess.run([sys.executable, "-m", "i2nq.cli", "upscale", str(good), "-o", str(out_dir / "y.png"),
                             "--model", str(tiny_model(scale=2))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "i2nq: note: removed 1 unfinished temp file" in result.stderr and leftover.name in result.stderr
    assert _names(out_dir) == {"y.png"}


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from i2nq.files import atomic_output
    with atomic_output(Path(sys.argv[1])) as tmp:
        tmp.write_bytes(b"partial")
        print(tmp.name, flush=True)
        sys.stdin.readline()  # a live run, busy elsewhere
""")


def test_a_live_runs_temp_file_is_never_removed(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "out.mp4")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        temp = tmp_path / proc.stdout.readline().strip()
        old = time.time() - 3600
        os.utime(temp, (old, old))  # as old as a leftover: only its lock tells that its writer is alive
        assert clean_stale_temps(tmp_path, force=True) == [] and temp.exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with pytest.warns(UserWarning, match="removed 1 unfinished temp file"):
        assert clean_stale_temps(tmp_path, force=True) == [temp]


def test_only_old_unlocked_regular_files_of_our_naming_are_removed(tmp_path) -> None:
    old = time.time() - 3600
    leftover = tmp_path / ".a.0123abcd.part.png"
    young = tmp_path / ".b.0123abcd.part.png"  # newer than this run: maybe a run that has not locked it yet
    lookalikes = [tmp_path / "a.0123abcd.part.png", tmp_path / ".a.xyz.part.png", tmp_path / ".a.0123abcd.png"]
    for path in (leftover, young, *lookalikes):
        path.write_bytes(b"x")
    for path in (leftover, *lookalikes):
        os.utime(path, (old, old))
    os.mkfifo(tmp_path / ".c.0123abcd.part.png")
    os.symlink(tmp_path / "a.0123abcd.part.png", tmp_path / ".d.0123abcd.part.png")
    with pytest.warns(UserWarning):
        assert clean_stale_temps(tmp_path, force=True) == [leftover]
    assert not leftover.exists() and young.exists() and all(p.exists() for p in lookalikes)
    assert (tmp_path / ".c.0123abcd.part.png").exists() and (tmp_path / ".d.0123abcd.part.png").is_symlink()


# --- 3. hostile inputs: one line, exit 2, nothing decoded ---------------------------------------------------------


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A small real PNG whose IHDR claims another size."""
    ok, data = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    data = bytearray(data.tobytes())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _jpeg_claiming(path: Path, width: int, height: int) -> Path:
    ok, data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(data.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def _png_bomb(path: Path, side: int) -> Path:
    """A valid 1-bit gray PNG of side x side zeros: a few hundred kB that decode to side^2 bytes."""
    z = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("make", [lambda p: _png_claiming(p / "huge.png", 100000, 100000),
                                  lambda p: _jpeg_claiming(p / "huge.jpg", 65000, 65000),
                                  lambda p: _png_bomb(p / "bomb.png", 30000)])
def test_oversized_images_are_refused_from_the_header(tmp_path, tiny_model, capsys, monkeypatch, make) -> None:
    src = make(tmp_path)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded an image over the limit"))
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.png"), "--model", str(tiny_model(scale=2))]) == 2
    _one_line_error(capsys, "megapixels, over the limit of 200 megapixels", "--max-pixels")
    assert not (tmp_path / "out.png").exists()


def test_max_pixels_raises_the_limit(tmp_path, tiny_model, capsys) -> None:
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.zeros((40, 50, 3), np.uint8))
    args = ["upscale", str(src), "-o", str(tmp_path / "out.png"), "--model", str(tiny_model(scale=2))]
    assert main(args + ["--max-pixels", "1999"]) == 2
    _one_line_error(capsys, "40 = 0 megapixels", "limit of 0.001999 megapixels")
    assert main(args + ["--max-pixels", "2K"]) == 0
    with pytest.raises(I2NQError, match="over the limit"):
        i2nq.Upscaler(tiny_model(scale=2), max_pixels=100).upscale_file(src, tmp_path / "api.png")
    with pytest.raises(SystemExit):
        main(args + ["--max-pixels", "lots"])


@pytest.mark.parametrize("failure", [cv2.error("OpenCV(5.0.0) loadsave.cpp:99: error: (-215:Assertion failed) "
                                               "Insufficient memory in function 'imdecode_'"), MemoryError()])
def test_decoder_failures_are_one_line(good, tiny_model, capsys, monkeypatch, failure) -> None:
    def imdecode(*args):
        raise failure

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    assert main(["upscale", str(good), "-o", str(good.with_name("o.png")), "--model", str(tiny_model(scale=2)),
                 "--max-pixels", "0"]) == 2
    _one_line_error(capsys, str(good))


@pytest.mark.parametrize("metadata", ["[1, 2]", "\"text\"", "not json", "null"])
def test_checkpoint_metadata_that_is_not_a_json_object(tmp_path, capsys, metadata) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"i2nq": metadata})
    assert main(["inspect", str(path)]) == 2
    _one_line_error(capsys, "not an i2nq checkpoint")
    from i2nq.models import load

    with pytest.raises(I2NQError, match="not an i2nq checkpoint"):
        load(path)


def test_disk_full_while_writing_an_image_leaves_nothing(good, tiny_model, capsys, monkeypatch) -> None:
    from i2nq.runtime import image_io

    def full(f, *args):
        f.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(image_io, "_write_png", full)
    assert main(["upscale", str(good), "-o", str(good.with_name("out.png")), "--model", str(tiny_model(scale=2))]) == 2
    _one_line_error(capsys, "cannot write", "no space left on device")
    assert _names(good.parent) == {"good.png"}


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 256 kB tmpfs: a real full disk (needs root; skipped where mounting is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount")
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=30)


def test_disk_full_for_real(tiny_disk, tmp_path, tiny_model, capsys) -> None:
    src = tmp_path / "noise.png"
    cv2.imwrite(str(src), np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8))  # ~470 kB at x2
    assert main(["upscale", str(src), "-o", str(tiny_disk / "out.png"), "--model", str(tiny_model(scale=2))]) == 2
    _one_line_error(capsys, "no space left on device")
    assert not any(tiny_disk.iterdir())
    if pytest.importorskip("torch"):
        from i2nq.models import build, save

        with pytest.raises(I2NQError, match="no space left on device"):
            save(build("edsr-small", 4), tiny_disk / "m.safetensors")  # safetensors raises its own error type
        assert not any(tiny_disk.iterdir())


# --- 4. broken models never run -----------------------------------------------------------------------------------


def _shipped_with(tmp_path: Path, name: str, change) -> Path:
    import onnx
    from onnx import numpy_helper

    from i2nq.assets import MODELS

    model = onnx.load(str(MODELS / "default.onnx"))
    [tensor] = [t for t in model.graph.initializer if t.name.endswith(name)][:1]
    tensor.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(tensor).copy()), tensor.name))
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    return path


def _nan_first(levels: np.ndarray) -> np.ndarray:
    levels.flat[0] = np.nan
    return levels


@pytest.mark.parametrize("name,change,message", [
    ("act_levels", lambda lv: lv[::-1], "not in ascending order"),
    ("act_levels", _nan_first, "NaN or infinite"),
    ("weight_levels", _nan_first, "NaN or infinite"),
])
def test_broken_codebooks_are_refused_at_load(tmp_path, capsys, good, name, change, message) -> None:
    path = _shipped_with(tmp_path, name, change)
    with pytest.raises(I2NQError, match=message):
        i2nq.Upscaler(path, device="cpu")
    assert main(["upscale", str(good), "-o", str(tmp_path / "o.png"), "--model", str(path), "--device", "cpu"]) == 2
    _one_line_error(capsys, message)


def test_scale_in_metadata_must_match_the_model(tmp_path, tiny_model) -> None:
    import onnx

    model = onnx.load(str(tiny_model(scale=4)))
    for prop in model.metadata_props:
        if prop.key == "i2nq.scale":
            prop.value = "2"
    path = tmp_path / "lies.onnx"
    onnx.save(model, str(path))
    with pytest.raises(I2NQError, match=r"metadata says x2, but it turns a 16x16 input into 64x64 \(expected 32x32\)"):
        i2nq.Upscaler(path, device="cpu")


def test_a_model_that_outputs_nan_is_refused(tmp_path) -> None:
    """Its first float convolution weight all NaN (the codebooks are fine, so only the probe run can tell)."""
    import onnx
    from onnx import numpy_helper

    from i2nq.assets import MODELS

    model = onnx.load(str(MODELS / "default.onnx"))
    tensor = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4)
    tensor.CopyFrom(numpy_helper.from_array(np.full(tuple(tensor.dims), np.nan, np.float32), tensor.name))
    path = tmp_path / "nan.onnx"
    onnx.save(model, str(path))
    with pytest.raises(I2NQError, match="outputs NaN"):
        i2nq.Upscaler(path, device="cpu")


# --- 5. folder batches --------------------------------------------------------------------------------------------


def test_folder_batch_goes_on_past_bad_files_and_a_rerun_skips_finished_outputs(tmp_path, tiny_model, capsys) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "c.jpg", "e.png"):
        cv2.imwrite(str(src / name), np.random.default_rng(len(name)).integers(0, 256, (10, 12, 3), np.uint8))
    (src / "b.png").write_bytes(b"not a png")
    _png_claiming(src / "d.png", 100000, 100000)
    os.mkfifo(src / "f.png")
    (src / ".hidden.png").write_bytes(b"ignored")
    (src / ".e.0123abcd.part.png").write_bytes(b"another run's temp file")
    args = ["upscale", str(src), "-o", str(out), "--model", str(tiny_model(scale=2))]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("i2nq: error: ") for line in lines) and len(lines) == 4
    assert "b.png" in lines[0] and "cannot decode" in lines[0]
    assert "d.png" in lines[1] and "over the limit" in lines[1]
    assert "f.png" in lines[2] and "FIFO" in lines[2]
    assert "3 of 6 images failed (3 written to" in lines[3]
    assert _names(out) == {"a.png", "c.jpg", "e.png"}
    inodes = {p.name: p.stat().st_ino for p in out.iterdir()}

    (src / "b.png").unlink()  # fixed by the user; the rerun only does what is left
    cv2.imwrite(str(src / "b.png"), np.zeros((10, 12, 3), np.uint8))
    assert main(args) == 2
    assert "3 of 7 images failed (1 written to" not in (err := capsys.readouterr().err)
    assert "2 of 6 images failed (1 written to" in err and "3 already there" in err
    assert {p.name: p.stat().st_ino for p in out.iterdir() if p.name != "b.png"} == inodes
    (src / "d.png").unlink()
    (src / "f.png").unlink()
    assert main(args + ["--overwrite"]) == 0
    assert {p.name: p.stat().st_ino for p in out.iterdir() if p.name != "b.png"} != inodes


def test_folder_batch_api_reports_each_failure(tmp_path, tiny_model) -> None:
    from i2nq.runtime.upscaler import FolderError

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((6, 6, 3), np.uint8))
    (src / "b.png").write_bytes(b"junk")
    seen = []
    with pytest.raises(FolderError, match="1 of 2 images failed") as info:
        i2nq.Upscaler(tiny_model(scale=2)).upscale_folder(src, tmp_path / "out", on_error=lambda p, m: seen.append(p))
    assert seen == [src / "b.png"] and info.value.failed == [src / "b.png"]
    assert [p.name for p in info.value.written] == ["a.png"]


# --- 6. streaming: memory bounded by the tile row, not the frame ------------------------------------------------


class _Nearest:
    """A numpy x4 nearest-neighbour 'model' (no native allocations, so tracemalloc sees everything)."""

    name, fixed_shape, max_batch = "nearest", None, None

    def __init__(self) -> None:
        from i2nq.runtime.backends import ModelMeta

        self.meta = ModelMeta("nearest", 4, "fp32", 0)

    def run(self, x: np.ndarray) -> np.ndarray:
        return x.repeat(4, axis=2).repeat(4, axis=3)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("channels", [3, 4])
def test_image_files_are_written_without_holding_the_output(tmp_path, monkeypatch, channels) -> None:
    import tracemalloc

    from i2nq.runtime import upscaler as upscaler_mod

    monkeypatch.setattr(upscaler_mod, "open_backend", lambda *a, **k: _Nearest())
    up = i2nq.Upscaler("nearest", tile=64, batch=2)
    image = np.random.default_rng(0).integers(0, 256, (2400, 250, channels), np.uint8)
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), image)
    output_bytes = 9600 * 1000 * channels  # 29-38 MB; the whole frame in memory would take that and more
    tracemalloc.start()
    try:
        up.upscale_file(src, tmp_path / "out.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < output_bytes / 2, peak  # input + a batch + one row of tiles + encoder scratch: ~8 MB
    assert np.array_equal(read_image(tmp_path / "out.png"), up.upscale(image))


def test_output_format_limits_are_checked_before_upscaling(tmp_path, tiny_model, capsys, monkeypatch) -> None:
    src = tmp_path / "wide.png"
    cv2.imwrite(str(src), np.zeros((4, 8200, 3), np.uint8))
    monkeypatch.setattr(ort_backend.OnnxRuntimeBackend, "run", lambda self, x: x.repeat(2, 2).repeat(2, 3))
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.webp"), "--model", str(tiny_model(scale=2))]) == 2
    _one_line_error(capsys, "16400x8", ".webp images hold at most 16383")


# --- 7. devices and non-regular files -----------------------------------------------------------------------------


def test_cuda_without_a_gpu_is_an_error_not_the_cpu(tiny_model, good, capsys, monkeypatch) -> None:
    from i2nq.runtime import backends

    monkeypatch.setattr(backends, "_gpu_present", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(I2NQError, match="no CUDA here"):
            i2nq.Upscaler(tiny_model(scale=2), device=device)
    assert main(["upscale", str(good), "-o", str(good.with_name("o.png")), "--model", str(tiny_model(scale=2)),
                 "--device", "cuda"]) == 2
    _one_line_error(capsys, "--device cuda", "use --device cpu")
    assert not ort_backend.cuda_available() or pytest.skip("onnxruntime has CUDA here")
    with pytest.raises(I2NQError, match="no CUDA support"):
        i2nq.Upscaler(tiny_model(scale=2), backend="onnxruntime", device="cuda")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "chardev"])
def test_non_regular_inputs_are_refused_without_blocking(tmp_path, tiny_model, capsys, kind) -> None:
    src = tmp_path / "x.png"
    if kind == "fifo":
        os.mkfifo(src)
    else:
        src.symlink_to("/dev/zero")
    assert main(["upscale", str(src), "-o", str(tmp_path / "o.png"), "--model", str(tiny_model(scale=2))]) == 2
    _one_line_error(capsys, "not a regular file", "FIFO" if kind == "fifo" else "character device")
    with pytest.raises(I2NQError, match="not a regular file"):
        read_image(src)
    assert main(["inspect", str(src.rename(tmp_path / "m.onnx"))]) == 2
    _one_line_error(capsys, "is not a regular file")


def test_a_fifo_or_device_output_is_never_replaced(tmp_path, good, tiny_model, capsys) -> None:
    os.mkfifo(tmp_path / "o.png")
    assert main(["upscale", str(good), "-o", str(tmp_path / "o.png"), "--model", str(tiny_model(scale=2)),
                 "--overwrite"]) == 2
    _one_line_error(capsys, "is a FIFO, not a regular file; it is never replaced")
    assert (tmp_path / "o.png").is_fifo()
