"""Upscaler on arrays, image files of every supported kind, folders and model variants."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import i2nq
from i2nq.errors import I2NQError
from i2nq.runtime.image_io import read_image


@pytest.fixture(scope="module")
def upscaler(tiny_model) -> i2nq.Upscaler:
    return i2nq.Upscaler(tiny_model(scale=2), device="cpu", tile=16)


def _image(shape: tuple[int, ...], dtype=np.uint8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


@pytest.mark.parametrize("shape", [(21, 30), (21, 30, 1), (21, 30, 3), (21, 30, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_array_kinds_keep_layout_and_dtype(upscaler, shape, dtype) -> None:
    out = upscaler.upscale(_image(shape, dtype))
    assert out.dtype == dtype and out.shape == (42, 60, *shape[2:])


def test_color_is_the_model_and_alpha_is_bicubic(upscaler) -> None:
    bgra = _image((21, 30, 4))
    out = upscaler.upscale(bgra)
    assert np.array_equal(out[..., :3], upscaler.upscale(np.ascontiguousarray(bgra[..., :3])))
    assert np.array_equal(out[..., 3], cv2.resize(bgra[..., 3], (60, 42), interpolation=cv2.INTER_CUBIC))


def test_gray_runs_as_a_replica(upscaler) -> None:
    gray = _image((21, 30))
    color = upscaler.upscale(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert np.array_equal(upscaler.upscale(gray), cv2.cvtColor(color, cv2.COLOR_BGR2GRAY))


def test_sixteen_bit_matches_eight_bit(upscaler) -> None:
    image = _image((21, 30, 3))
    out8, out16 = upscaler.upscale(image), upscaler.upscale(image.astype(np.uint16) * 257)
    assert np.abs(out16 / 257.0 - out8).max() <= 0.51


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), [[1, 2]]])
def test_bad_arrays_are_refused(upscaler, bad) -> None:
    with pytest.raises(I2NQError):
        upscaler.upscale(bad)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp"])
@pytest.mark.parametrize("kind", ["gray", "bgr", "bgra", "bgr16"])
def test_image_files(upscaler, tmp_path, suffix, kind) -> None:
    if suffix == ".jpg" and kind in ("bgra", "bgr16"):
        pytest.skip("JPEG holds neither alpha nor 16 bits")
    shape, dtype = {"gray": ((21, 30), np.uint8), "bgr": ((21, 30, 3), np.uint8),
                    "bgra": ((21, 30, 4), np.uint8), "bgr16": ((21, 30, 3), np.uint16)}[kind]
    if suffix == ".webp" and dtype == np.uint16:
        pytest.skip("WebP is 8-bit only")
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    assert cv2.imwrite(str(src), _image(shape, dtype))
    assert upscaler.upscale_file(src, dst) == dst
    out = read_image(dst)
    assert out.shape[:2] == (42, 60) and out.dtype == dtype
    assert out.shape[2:] == read_image(src).shape[2:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dst.name])  # no temp files left


@pytest.mark.parametrize("shape", [(21, 30), (21, 30, 3), (21, 30, 4), (1, 1, 3), (300, 7, 3)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_writer_round_trips_through_two_decoders(tmp_path, shape, dtype) -> None:
    """The strip-wise PNG writer: OpenCV and Pillow read back the pixels written, whatever the strips."""
    from PIL import Image

    from i2nq.runtime.image_io import write_image_rows

    image = _image(shape, dtype)
    strips = [image[i:i + 7] for i in range(0, len(image), 7)]
    write_image_rows(tmp_path / "out.png", image.shape, image.dtype, strips)
    assert np.array_equal(read_image(tmp_path / "out.png"), image)
    with Image.open(tmp_path / "out.png") as pil:
        assert pil.size == shape[1::-1]
        if dtype == np.uint8:  # Pillow reads 16-bit colour PNGs as 8-bit
            rgb = image if image.ndim == 2 else image[..., [2, 1, 0, 3][:image.shape[2]]]
            assert np.array_equal(np.asarray(pil), rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_png_writer_compresses_like_opencv(tmp_path) -> None:
    from i2nq.assets import sample
    from i2nq.runtime.image_io import write_image

    photo = cv2.resize(read_image(sample("sample.png")), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    write_image(tmp_path / "ours.png", photo)
    ok, theirs = cv2.imencode(".png", photo)
    assert (tmp_path / "ours.png").stat().st_size <= 1.05 * len(theirs)


def test_upscaled_files_equal_upscaled_arrays(tmp_path, tiny_model) -> None:
    """Files are written strip by strip (alpha resized per strip): the same pixels as upscale() gives."""
    up = i2nq.Upscaler(tiny_model(scale=2), device="cpu", tile=12, batch=2)
    for shape in [(41, 30), (41, 30, 3), (41, 30, 4)]:
        image = _image(shape, np.uint16)
        cv2.imwrite(str(tmp_path / "in.png"), image)
        up.upscale_file(tmp_path / "in.png", tmp_path / "out.png", overwrite=True)
        assert np.array_equal(read_image(tmp_path / "out.png"), up.upscale(image))


def test_sixteen_bit_to_jpeg_is_written_at_eight_bits(upscaler, tmp_path) -> None:
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), _image((21, 30, 4), np.uint16))
    upscaler.upscale_file(src, tmp_path / "out.jpg")
    assert read_image(tmp_path / "out.jpg").shape == (42, 60, 3)


def test_folder(upscaler, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i, suffix in enumerate([".png", ".jpg", ".webp"]):
        cv2.imwrite(str(src / f"{i}{suffix}"), _image((10, 12, 3), seed=i))
    (src / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"left out 1 file that is not an image \(notes.txt\)"):
        written = upscaler.upscale_folder(src, tmp_path / "out")
    assert [p.name for p in written] == ["0.png", "1.jpg", "2.webp"]
    assert all(read_image(p).shape == (20, 24, 3) for p in written)
    before = {p.name: p.stat().st_ino for p in written}
    (src / "notes.txt").unlink()
    assert upscaler.upscale_folder(src, tmp_path / "out") == []  # a rerun skips the finished outputs
    assert {p.name: p.stat().st_ino for p in written} == before
    assert len(upscaler.upscale_folder(src, tmp_path / "out", overwrite=True)) == 3


def test_fp16_model_and_custom_domain_function(tiny_model) -> None:
    image = _image((17, 19, 3))
    fp32 = i2nq.Upscaler(tiny_model(scale=4, convs=2), device="cpu").upscale(image)
    fp16 = i2nq.Upscaler(tiny_model(scale=4, convs=2, dtype="float16"), device="cpu").upscale(image)
    assert np.abs(fp16.astype(int) - fp32).max() <= 2
    custom = i2nq.Upscaler(tiny_model(scale=2, custom_op=True), device="cpu")
    assert custom.upscale(image).shape == (34, 38, 3)


def test_meta_and_repr(tiny_model) -> None:
    upscaler = i2nq.Upscaler(tiny_model(scale=4), device="cpu", tile=32, batch=3)
    assert upscaler.scale == 4 and upscaler.meta.receptive_field == 3 and upscaler.meta.bits == "fp32"
    assert repr(upscaler) == "Upscaler(tiny x4 fp32 on onnxruntime, tile=32x32, overlap=3, batch=3)"


@pytest.mark.parametrize("model,backend,message", [
    ("missing.onnx", "auto", "model file not found"),
    ("no_such_model", "auto", "unknown model"),
    (None, "nope", "unknown backend"),
    (None, "torch", "torch backend needs a checkpoint"),
])
def test_model_errors(tiny_model, model, backend, message) -> None:
    with pytest.raises(I2NQError, match=message):
        i2nq.Upscaler(model or tiny_model(scale=2), backend=backend)


def test_onnx_without_i2nq_metadata_is_refused(tiny_model) -> None:
    with pytest.raises(I2NQError, match="not an i2nq export"):
        i2nq.Upscaler(tiny_model(scale=2, metadata=False))


def test_unknown_model_suffix_and_device(tiny_model, tmp_path) -> None:
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(I2NQError, match="unsupported model file"):
        i2nq.Upscaler(tmp_path / "m.bin")
    with pytest.raises(I2NQError, match="unknown device"):
        i2nq.Upscaler(tiny_model(scale=2), device="tpu")


def test_folder_output_must_be_a_folder(upscaler, tmp_path) -> None:
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), _image((4, 4, 3)))
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(I2NQError, match="is a file"):
        upscaler.upscale_folder(tmp_path / "in", tmp_path / "file.png", overwrite=True)


def test_jpeg_exif_orientation_is_applied(upscaler, tmp_path) -> None:
    pil = pytest.importorskip("PIL.Image")
    exif = pil.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    pil.fromarray(_image((10, 16, 3))).save(tmp_path / "in.jpg", exif=exif)
    upscaler.upscale_file(tmp_path / "in.jpg", tmp_path / "out.png")
    assert read_image(tmp_path / "out.png").shape == (32, 20, 3)
