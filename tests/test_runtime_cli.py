"""`i2nq upscale` and `i2nq demo`: results, and one-line errors without partial outputs on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from i2nq.cli import main
from i2nq.runtime.image_io import read_image


@pytest.fixture
def workdir(tmp_path: Path, clip: Path) -> Path:
    """A folder with a good image, random bytes named .png, a truncated mp4 and an unsupported file."""
    cv2.imwrite(str(tmp_path / "good.png"), np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8))
    (tmp_path / "random.png").write_bytes(np.random.default_rng(1).bytes(2000))
    (tmp_path / "truncated.mp4").write_bytes(clip.read_bytes()[:4000])
    (tmp_path / "notes.xyz").write_text("hello")
    return tmp_path


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*")}


def test_upscale_image(workdir, tiny_model, capsys) -> None:
    assert main(["upscale", str(workdir / "good.png"), "-o", str(workdir / "big.png"),
                 "--model", str(tiny_model(scale=2)), "--tile", "8", "--batch", "2"]) == 0
    assert read_image(workdir / "big.png").shape == (24, 32, 3)
    assert "big.png" in capsys.readouterr().out


def test_upscale_video_and_folder(workdir, tiny_model, clip) -> None:
    model = str(tiny_model(scale=2))
    assert main(["upscale", str(clip), "-o", str(workdir / "big.mp4"), "--model", model, "--crf", "30",
                 "--preset", "ultrafast", "--no-progress"]) == 0
    folder = workdir / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert main(["upscale", str(folder), "-o", str(workdir / "out"), "--model", model]) == 0
    assert read_image(workdir / "out" / "a.png").shape == (16, 16, 3)


@pytest.mark.parametrize("src,dst,message", [
    ("missing.png", "out.png", "input not found"),
    ("random.png", "out.png", "cannot decode"),
    ("truncated.mp4", "out.mp4", "cannot read video"),
    ("notes.xyz", "out.png", "unsupported input type"),
    ("good.png", "out.xyz", "unsupported image output type"),
    ("good.png", "no/such/folder/out.png", "does not exist"),
    ("good.png", "good.png/out.png", "does not exist or is not a folder"),  # the parent is a regular file
    ("good.png", "good.png", "is the input"),
    ("good.png", "random.png", "exists; pass --overwrite"),
])
def test_bad_input_is_one_line_error(workdir, tiny_model, capsys, src, dst, message) -> None:
    before = _files(workdir)
    code = main(["upscale", str(workdir / src), "-o", str(workdir / dst), "--model", str(tiny_model(scale=2))])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("i2nq: error: ") and message in err and "\n" not in err
    assert _files(workdir) == before  # no partial (or temp) output


def test_read_only_output_folder(workdir, tiny_model, capsys, monkeypatch) -> None:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != workdir / "ro" and real_access(path, mode))
    (workdir / "ro").mkdir()
    assert main(["upscale", str(workdir / "good.png"), "-o", str(workdir / "ro" / "x.png"),
                 "--model", str(tiny_model(scale=2))]) == 2
    assert "not writable" in capsys.readouterr().err
    assert not any((workdir / "ro").iterdir())


def test_bad_options(workdir, tiny_model, capsys) -> None:
    args = ["upscale", str(workdir / "good.png"), "-o", str(workdir / "o.png"), "--model", str(tiny_model(scale=2))]
    assert main(args + ["--tile", "4"]) == 2
    assert "twice the overlap" in capsys.readouterr().err
    assert main(args + ["--device", "tpu"]) == 2
    assert "unknown device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--backend", "nope"])


def test_overwrite(workdir, tiny_model) -> None:
    model = str(tiny_model(scale=2))
    assert main(["upscale", str(workdir / "good.png"), "-o", str(workdir / "random.png"), "--model", model,
                 "--overwrite"]) == 0
    assert read_image(workdir / "random.png").shape == (24, 32, 3)


def test_error_in_a_real_process_has_no_traceback(workdir) -> None:
    result = subprocess.run([sys.executable, "-c", "import sys; from i2nq.cli import main; sys.exit(main())",
                             "upscale", str(workdir / "random.png"), "-o", str(workdir / "x.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("i2nq: error: ")


def test_demo(tiny_model, tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--model", str(tiny_model(scale=2))]) == 0
    out = capsys.readouterr().out
    assert "PSNR-Y" in out and "bicubic" in out and str(tmp_path / "demo") in out
    assert _files(tmp_path / "demo") == {"sample_lr.png", "sample_x2.png", "sample_bicubic_x2.png", "sample_x2.mp4"}
    assert main(["demo", "--out", str(tmp_path / "demo"), "--model", str(tiny_model(scale=2))]) == 2


def test_shipped_default_model_beats_bicubic(tmp_path) -> None:
    from i2nq.assets import sample
    from i2nq.runtime import Upscaler
    from i2nq.runtime.demo import bicubic_down, psnr_y

    upscaler = Upscaler("default", device="cpu")
    assert upscaler.backend.name == "onnxruntime"
    s = upscaler.scale
    hr = read_image(sample("sample.png"))
    hr = hr[:hr.shape[0] // s * s, :hr.shape[1] // s * s]
    lr = bicubic_down(hr, s)
    bicubic = cv2.resize(lr, hr.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    assert psnr_y(upscaler.upscale(lr), hr, s) > psnr_y(bicubic, hr, s)
    assert main(["upscale", str(sample("sample.png")), "-o", str(tmp_path / "x.png"), "--device", "cpu"]) == 0
