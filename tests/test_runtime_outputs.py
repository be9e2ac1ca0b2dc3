"""Outputs as users of Real-ESRGAN and its kin expect (default names, -o DIR, --suffix, --format, --quality,
--outscale, --recursive, --skip-existing, the summary line), the memory guard, progress bars and --quiet, and
messages that speak CLI in the CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import i2nq
from i2nq.cli import main
from i2nq.errors import I2NQError
from i2nq.runtime.image_io import read_image


def _image(path: Path, size: tuple[int, int] = (10, 12), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8))
    return path


def _names(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def model(tiny_model) -> str:
    return str(tiny_model(scale=2))


def test_default_names_beside_the_input_and_in_a_folder(tmp_path, model, capsys) -> None:
    src = _image(tmp_path / "photo.png")
    assert main(["upscale", str(src), "--model", model]) == 0
    assert read_image(tmp_path / "photo_x2.png").shape == (20, 24, 3)
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'photo_x2.png'}"
    out = tmp_path / "out"
    out.mkdir()
    assert main(["upscale", str(src), "-o", str(out), "--model", model, "--suffix=-big", "--format", "jpg",
                 "--quality", "40"]) == 0
    assert _names(out) == {"photo-big.jpg"}
    assert main(["upscale", str(src), "-o", str(out / "q90.jpg"), "--model", model, "--quality", "90"]) == 0
    assert (out / "photo-big.jpg").stat().st_size < (out / "q90.jpg").stat().st_size  # quality reached the encoder


def test_outscale_any_factor(tmp_path, model) -> None:
    src = _image(tmp_path / "photo.png", (10, 12))
    assert main(["upscale", str(src), "--model", model, "-s", "1.5"]) == 0
    assert read_image(tmp_path / "photo_x1.5.png").shape == (15, 18, 3)
    assert main(["upscale", str(src), "--model", model, "--outscale", "3"]) == 0
    assert read_image(tmp_path / "photo_x3.png").shape == (30, 36, 3)
    up = i2nq.Upscaler(model, device="cpu", outscale=1)
    image = read_image(src)
    assert up.upscale(image).shape == image.shape


def test_outscale_bands_equal_a_whole_resize(tiny_model, tmp_path) -> None:
    """A PNG is written in strips; with an outscale the strips are resized band by band, which must equal the
    resize of the whole model output (to 1 level: OpenCV's fixed-point rounding)."""
    image = np.random.default_rng(3).integers(0, 256, (70, 50, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), image)
    up = i2nq.Upscaler(tiny_model(scale=2), device="cpu", tile=16, outscale=1.3)
    whole = up.upscale(image)
    assert whole.shape == (91, 65, 3)
    streamed = read_image(up.upscale_file(tmp_path / "in.png", tmp_path / "out.png", progress=False))
    assert np.abs(streamed.astype(int) - whole.astype(int)).max() <= 1


def test_folder_recursive_summary_and_left_out_files(tmp_path, model, capsys) -> None:
    src = tmp_path / "in"
    _image(src / "a.png")
    _image(src / "sub" / "b.jpg", seed=1)
    _image(src / "sub" / "deeper" / "c.webp", seed=2)
    (src / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"left out 1 subfolder \(--recursive goes into them\); 1 file that is "
                                         r"not an image \(notes.txt\)"):  # the CLI prints it as a note
        assert main(["upscale", str(src), "--model", model]) == 0
    captured = capsys.readouterr()
    assert _names(tmp_path / "in_x2") == {"a.png"}
    assert captured.out.strip() == f"1 written to {tmp_path / 'in_x2'}, 0 skipped (already there), 0 failed, " \
                                   "2 left out (not images)"
    with pytest.warns(UserWarning, match="notes.txt"):
        assert main(["upscale", str(src), "--model", model, "-r"]) == 0
    assert _names(tmp_path / "in_x2") == {"a.png", "sub/b.jpg", "sub/deeper/c.webp"}
    assert capsys.readouterr().out.startswith("2 written to")
    assert read_image(tmp_path / "in_x2" / "sub" / "deeper" / "c.webp").shape == (20, 24, 3)
    with pytest.warns(UserWarning, match="notes.txt"):
        assert main(["upscale", str(src), "-o", str(tmp_path / "named"), "--model", model, "-r", "--suffix", "_2x",
                     "--format", "png"]) == 0
    assert _names(tmp_path / "named") == {"a_2x.png", "sub/b_2x.png", "sub/deeper/c_2x.png"}


def test_skip_existing(tmp_path, model, capsys) -> None:
    src = _image(tmp_path / "photo.png")
    (tmp_path / "photo_x2.png").write_bytes(b"mine")
    assert main(["upscale", str(src), "--model", model]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("exists; pass --overwrite to replace it") and "overwrite=True" not in err
    assert len(err.splitlines()) == 1
    assert main(["upscale", str(src), "--model", model, "--skip-existing"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (tmp_path / "photo_x2.png").read_bytes() == b"mine"


@pytest.mark.parametrize("args,message", [
    (["-o", "{tmp}/f.png", "{tmp}/folder"], "looks like a file name"),
    (["--format", "gif", "{tmp}/photo.png"], "--format gif is not an image format"),
    (["--format", "jpg", "-o", "{tmp}/x.png", "{tmp}/photo.png"], "does not match the output file"),
    (["--quality", "0", "{tmp}/photo.png"], "--quality must be 1-100"),
    (["--outscale", "-2", "{tmp}/photo.png"], "--outscale must be a number"),
    (["-o", "{tmp}/missing/", "{tmp}/photo.png"], "does not exist"),
])
def test_bad_output_options_are_one_line_errors(tmp_path, model, capsys, args, message) -> None:
    _image(tmp_path / "photo.png")
    _image(tmp_path / "folder" / "a.png")
    before = _names(tmp_path)
    assert main(["upscale", *[a.format(tmp=tmp_path) for a in args], "--model", model]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("i2nq: error: ") and message in err, err
    assert _names(tmp_path) == before


def test_memory_guard_names_a_tile_that_fits(tmp_path, model, capsys) -> None:
    src = _image(tmp_path / "photo.png", (200, 300))
    assert main(["upscale", str(src), "--model", model, "--tile", "0", "--max-memory", "2M"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "whole 300x200 frames (--tile 0) would need about" in err
    assert "over the memory budget of 2 MiB (--max-memory)" in err
    tile = int(err.split("--tile ")[-1].split()[0])
    assert not (tmp_path / "photo_x2.png").exists()
    assert main(["upscale", str(src), "--model", model, "--tile", str(tile), "--max-memory", "2M"]) == 0  # it fits
    assert main(["upscale", str(src), "--model", model, "--tile", str(2 * tile), "--max-memory", "2M",
                 "--overwrite"]) == 2
    assert "fits" in capsys.readouterr().err
    up = i2nq.Upscaler(model, device="cpu", max_memory=2 << 20)  # the default tile shrinks to fit
    assert up.tiler.tile[0] <= tile and up.tiler.memory(up.tiler.batch, *up.tiler.tile) <= 2 << 20
    with pytest.raises(I2NQError, match=r"\(tile=0\).*max_memory"):  # the API's words
        i2nq.Upscaler(model, device="cpu", tile=0, max_memory=2 << 20).upscale(read_image(src))


def test_memory_estimate_grows_with_the_tile(tiny_model) -> None:
    up = i2nq.Upscaler(tiny_model(scale=2), device="cpu")
    small, large = up.tiler.memory(1, 64, 64), up.tiler.memory(1, 256, 256)
    assert 0 < small < large and up.tiler.memory(4, 64, 64) > small
    # at least the input and output tensors of one call (float32, 3 channels, scale 2)
    assert large >= 4 * 3 * 256 * 256 * (1 + 4)


def test_progress_bars_and_quiet(tmp_path, model, capsys) -> None:
    src = _image(tmp_path / "in" / "a.png", (40, 30))
    _image(tmp_path / "in" / "b.png", (20, 30), seed=1)
    assert main(["upscale", str(src), "-o", str(tmp_path), "--model", model, "--progress", "--tile", "16"]) == 0
    err = capsys.readouterr().err
    assert "a.png" in err and "1.20k/1.20k" in err  # input pixels, done of total
    assert main(["upscale", str(tmp_path / "in"), "--model", model, "--progress", "--tile", "16"]) == 0
    err = capsys.readouterr().err
    assert "in 2/2" in err and "1.80k/1.80k" in err  # files and pixels of the whole folder
    assert main(["upscale", str(tmp_path / "in"), "--model", model, "--progress", "--quiet", "--overwrite"]) == 0
    assert capsys.readouterr().err == ""


def test_api_messages_keep_the_api_words(tmp_path, model) -> None:
    src = _image(tmp_path / "photo.png")
    (tmp_path / "photo_x2.png").write_bytes(b"mine")
    up = i2nq.Upscaler(model, device="cpu")
    with pytest.raises(I2NQError, match=r"pass overwrite=True to replace it$"):
        up.upscale_file(src)
    with pytest.raises(I2NQError, match=r"fp16=True runs on a GPU"):
        i2nq.Upscaler(model, device="cpu", fp16=True)
