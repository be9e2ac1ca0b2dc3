"""`i2nq compare`: the crop sheet, the slider page (shown in a real headless browser where one is installed)."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest

from i2nq.cli import main
from i2nq.runtime.compare import detailed_crop

MAGENTA = (255, 0, 255)  # BGR, as in the input; nothing else on the page has this colour


def _input(path, size=(60, 80)):
    """Gray with a magenta and green checkerboard in one corner: the most detailed window is there."""
    image = np.full((*size, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:24, 0:24]
    board = ((yy // 4 + xx // 4) % 2).astype(bool)
    image[30:54, 50:74][board] = MAGENTA
    image[30:54, 50:74][~board] = (0, 200, 0)
    cv2.imwrite(str(path), image)
    return path


def test_detailed_crop_finds_the_detail(tmp_path) -> None:
    image = cv2.imread(str(_input(tmp_path / "in.png")))
    x, y, w, h = detailed_crop(image, 24)
    assert (w, h) == (24, 24) and abs(x - 50) <= 4 and abs(y - 30) <= 4


def test_sheet_and_page(tmp_path, tiny_model, capsys) -> None:
    src = _input(tmp_path / "in.png")
    models = [str(tiny_model(scale=2, nearest=True)), str(tiny_model(scale=2, seed=1))]
    assert main(["compare", str(src), "--model", models[0], "--model", models[1], "--device", "cpu",
                 "--crop", "40,20,32,24"]) == 0
    assert "in_compare.png" in capsys.readouterr().out
    sheet = cv2.imread(str(tmp_path / "in_compare.png"))
    assert sheet.shape == (24 * 2 + 24, 4 * 64 + 3 * 4, 3)  # label row + crop x2; input, bicubic, 2 models
    nearest = sheet[24:, 0:64]
    assert np.array_equal(sheet[24:, 2 * 68:2 * 68 + 64], nearest)  # the nearest-only model: exactly nearest
    page = (tmp_path / "in_compare.html").read_text()
    assert page.count('type="range"') == 2 and page.count("data:image/png;base64,") == 1 + 2 * 2
    assert main(["compare", str(src), "--model", models[0], "--device", "cpu"]) == 2  # outputs exist
    assert "exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--crop", "70,50,20"], "outside the 80x60 input"),
    (["--model", "missing.onnx"], "missing.onnx"),
])
def test_bad_input_is_one_line(tmp_path, tiny_model, capsys, args, message) -> None:
    src = _input(tmp_path / "in.png")
    model = ["--model", str(tiny_model(scale=2))] if "--model" not in args else []
    assert main(["compare", str(src), "--device", "cpu", *model, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_a_video_frame(tmp_path, tiny_model, clip) -> None:
    assert main(["compare", str(clip), "--model", str(tiny_model(scale=2)), "--device", "cpu", "-o", str(tmp_path),
                 "--time", "0.5"]) == 0
    assert cv2.imread(str(tmp_path / f"{clip.stem}_compare.png")).shape[0] == 24 + 2 * 30  # the clip is 40x30


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (Debian's package) for the page")
def test_page_in_a_headless_browser(tmp_path, tiny_model) -> None:
    src = _input(tmp_path / "in.png")
    assert main(["compare", str(src), "--model", str(tiny_model(scale=2, nearest=True)), "--device", "cpu",
                 "--crop", "44,24,36,36"]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--user-data-dir=" + str(tmp_path / "profile"), "--window-size=900,600",
                    f"--screenshot={shot}", (tmp_path / "in_compare.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = cv2.imread(str(shot))
    assert image.shape == (600, 900, 3)
    assert image.std() > 20  # not blank
    magenta = (np.abs(image.astype(int) - MAGENTA).max(axis=2) < 40).sum()
    # the board fills 24x24 of the 36x36 crop, half of it magenta: about 22% of each 72x72 image shown (the
    # input, and model | bicubic); a page whose images did not load has none
    assert magenta > 3 * 72 * 72 * 0.1, magenta
