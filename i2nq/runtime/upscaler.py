"""`Upscaler`: the Python API that upscales arrays, image files, folders and videos with an I²NQ model."""

from __future__ import annotations

import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from i2nq.errors import I2NQError
from i2nq.runtime.backends.tensorrt import TensorRTOptions
from i2nq.files import check_destination, check_source
from i2nq.runtime.backends import Backend, ModelMeta, open_backend
from i2nq.runtime.image_io import (DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, check_output_size, is_image, read_image,
                                   write_image_rows)
from i2nq.runtime.tiler import Tiler
from i2nq.runtime.video import VIDEO_SUFFIXES, Span, VideoOptions, is_video, upscale_video


class Upscaler:
    """An SR model on a backend, with a tiler.

    model: a shipped model name ('default', 'default-x2'), an .onnx export, a TensorRT .engine or a checkpoint
    (.safetensors, or EDSR/MSRResNet weights as .pt/.pth: torch backend). backend: 'auto' (fastest available), 'onnxruntime', 'torch' or
    'tensorrt'. device: None (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N'. tile: max tile side in
    input pixels (None: a default from the receptive field, 0: whole frames). overlap: tile margin in input
    pixels (None: the receptive field, which makes tiling exact). batch: tiles per model call. max_pixels: the
    largest input image or video frame (width x height) read from a file, checked from its header before
    decoding (default 200 megapixels; None or 0: no limit).

    tensorrt: TensorRTOptions for the tensorrt backend (profile, fp16, workspace, CUDA graphs, timing cache,
    verbose), e.g. Upscaler("model.onnx", backend="tensorrt", tensorrt=TensorRTOptions(cuda_graphs=True)).
    Without it, `tile` and `batch` make the engine static in those dimensions; with it, the options alone
    define the engine and `tile`/`batch` only the tiling (which must fit the engine's profile).
    """

    def __init__(self, model: str | Path = "default", backend: str = "auto", device: str | int | None = None,
                 tile: int | None = None, overlap: int | None = None, batch: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, *, tensorrt: TensorRTOptions | None = None) -> None:
        if max_pixels is not None and max_pixels < 0:
            raise I2NQError(f"max_pixels must be >= 0 (0: no limit), not {max_pixels}")
        engine_tile = (tile, tile) if tile else None
        self.backend: Backend = open_backend(model, backend, device, tile=engine_tile, batch=batch, tensorrt=tensorrt)
        self.tiler = Tiler(self.backend, tile=tile, overlap=overlap, batch=batch)
        self.max_pixels = max_pixels

    @property
    def meta(self) -> ModelMeta:
        """The model's scale, architecture, bits and receptive field."""
        return self.backend.meta

    @property
    def scale(self) -> int:
        """Upscaling factor."""
        return self.backend.meta.scale

    def __repr__(self) -> str:
        tile = "whole" if self.tiler.tile is None else "x".join(map(str, self.tiler.tile))
        return (f"Upscaler({self.meta.arch} x{self.scale} {self.meta.bits} on {self.backend.name}, "
                f"tile={tile}, overlap={self.tiler.overlap}, batch={self.tiler.batch})")

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """Upscale an HxW gray, HxWx3 BGR or HxWx4 BGRA uint8/uint16 array (OpenCV order); same dtype back.

        Gray runs through the model as a 3-channel replica and returns to gray; alpha is upscaled by
        bicubic interpolation (cheap, and smooth masks gain nothing from the model).
        """
        channels = _channels(image)
        if channels == 1:
            color = self.tiler.run([cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)])[0]
            return cv2.cvtColor(color, cv2.COLOR_BGR2GRAY).reshape(color.shape[:2] + image.shape[2:])
        if channels == 4:
            color = self.tiler.run([image[..., :3]])[0]
            alpha = cv2.resize(image[..., 3], color.shape[1::-1], interpolation=cv2.INTER_CUBIC)
            return np.dstack([color, alpha])
        return self.tiler.run([image])[0]

    def upscale_rows(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """Upscale like `upscale`, handing the output out top to bottom in strips of whole rows as they are
        finished: memory holds one row of tiles' output, not the whole upscaled image."""
        channels = _channels(image)  # (each strip is let go before the next is made)
        if channels == 1:
            for _, strip in self.tiler.stream(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)):
                yield cv2.cvtColor(strip, cv2.COLOR_BGR2GRAY).reshape(strip.shape[:2] + image.shape[2:])
                del strip
        elif channels == 4:
            color = np.ascontiguousarray(image[..., :3])
            for row, strip in self.tiler.stream(color):
                yield np.dstack([strip, _resize_rows(image[..., 3], self.scale, row, row + len(strip))])
                del strip
        else:
            for _, strip in self.tiler.stream(image):
                yield strip
                del strip

    def upscale_file(self, src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
        """Upscale one image file into `dst` (format from its suffix); returns `dst`. The output is encoded as
        it is computed (PNG in strips), so a large image needs memory for its input, not for its output."""
        src = _check_kind(check_source(src), IMAGE_SUFFIXES, "input image")
        dst = _check_kind(check_destination(dst, src, overwrite), IMAGE_SUFFIXES, "output image")
        image = read_image(src, self.max_pixels)
        height, width = image.shape[0] * self.scale, image.shape[1] * self.scale
        check_output_size(dst, height, width)
        write_image_rows(dst, (height, width, *image.shape[2:]), image.dtype, self.upscale_rows(image), overwrite)
        return dst

    def upscale_folder(self, src: str | Path, dst: str | Path, overwrite: bool = False,
                       on_error: Callable[[Path, str], None] | None = None) -> list[Path]:
        """Upscale every image in folder `src` into folder `dst` (created if its parent exists), same names.

        An image that fails (unreadable, too large, ...) is reported through `on_error(path, message)` (default:
        a warning) and skipped; the others go on, and I2NQError at the end says how many failed. An output that
        exists already is complete (outputs appear only when finished) and is skipped, unless `overwrite`.
        Hidden files (names starting with a dot) are ignored. Returns the outputs written by this call."""
        src, dst = check_source(src), Path(dst)
        if not src.is_dir():
            raise I2NQError(f"{src} is not a folder")
        images = sorted(p for p in src.iterdir()  # hidden files (and so other runs' temp files) are skipped
                        if is_image(p) and not p.name.startswith(".") and not p.is_dir())
        if not images:
            raise I2NQError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {src}")
        if dst.resolve() == src.resolve():
            raise I2NQError(f"output folder {dst} is the input folder; choose another")
        if dst.exists() and not dst.is_dir():
            raise I2NQError(f"output {dst} is a file; a folder of images needs an output folder")
        if not dst.is_dir():
            check_destination(dst)
            dst.mkdir()
        report = on_error or _warn
        written, skipped, failed = [], [], []
        for image in images:
            out = dst / image.name
            if not overwrite and _is_file(out):
                skipped.append(out)
                continue
            try:
                written.append(self.upscale_file(image, out, overwrite))
            except (I2NQError, MemoryError) as exc:
                failed.append(image)
                message = str(exc) if isinstance(exc, I2NQError) else f"not enough memory to upscale {image}"
                report(image, message if image.name in message else f"{image}: {message}")
        if failed:
            raise FolderError(written, skipped, failed, dst)
        return written

    def upscale_video(self, src: str | Path, dst: str | Path, codec: str = "libx264", crf: int = 18,
                      preset: str = "medium", overwrite: bool = False, progress: bool = True,
                      start: float = 0.0, duration: float | None = None) -> Path:
        """Upscale a video into `dst`: every frame with its timestamp, audio and subtitles copied.

        start/duration (seconds) select a part, e.g. a preview; it is rebased to start at 0 in `dst`."""
        span = Span(start, duration)
        src = _check_kind(check_source(src), VIDEO_SUFFIXES, "input video")
        dst = _check_kind(check_destination(dst, src, overwrite), VIDEO_SUFFIXES, "output video")
        upscale_video(src, dst, self.tiler, VideoOptions(codec=codec, crf=crf, preset=preset), progress, span,
                      max_pixels=self.max_pixels)
        return dst

    def upscale_path(self, src: str | Path, dst: str | Path, overwrite: bool = False,
                     on_error: Callable[[Path, str], None] | None = None, **video_options) -> Path:
        """Upscale an image, a folder of images or a video (chosen by what `src` is) into `dst`.

        on_error: for a folder, called with each image that fails (see upscale_folder)."""
        kind = check_job(src, dst, overwrite)
        if kind != "video" and (video_options.get("start") or video_options.get("duration") is not None):
            raise I2NQError("start and duration select a part of a video; the input is not a video")
        if kind == "folder":
            self.upscale_folder(src, dst, overwrite, on_error)
            return Path(dst)
        if kind == "video":
            return self.upscale_video(src, dst, overwrite=overwrite, **video_options)
        return self.upscale_file(src, dst, overwrite)

    def close(self) -> None:
        """Release the backend's device resources."""
        self.backend.close()

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_job(src: str | Path, dst: str | Path, overwrite: bool = False) -> str:
    """'image', 'video' or 'folder' for a valid job; I2NQError for a bad input or output path."""
    src = check_source(src)
    if src.is_dir():
        return "folder"
    kind = "video" if is_video(src) else "image"
    _check_kind(src, VIDEO_SUFFIXES if kind == "video" else IMAGE_SUFFIXES, "input")
    _check_kind(check_destination(dst, src, overwrite), VIDEO_SUFFIXES if kind == "video" else IMAGE_SUFFIXES,
                f"{kind} output")
    return kind


def upscale(src: str | Path, dst: str | Path, model: str | Path = "default", backend: str = "auto",
            device: str | int | None = None, tile: int | None = None, overlap: int | None = None,
            batch: int | None = None, overwrite: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
            on_error: Callable[[Path, str], None] | None = None, tensorrt: TensorRTOptions | None = None,
            workers: int | None = None, ray_address: str | None = None, **video_options) -> Path:
    """Check the job, then load the model and upscale an image, folder or video (what `i2nq upscale` runs).
    workers / ray_address: on the workers of a Ray cluster instead (i2nq.runtime.distributed)."""
    check_job(src, dst, overwrite)  # bad paths fail before a model is loaded
    if workers is not None or ray_address is not None:
        from i2nq.runtime.distributed import upscale_on_ray

        return upscale_on_ray(src, dst, model, backend, device, tile, overlap, batch, overwrite, max_pixels, on_error,
                              tensorrt, workers=workers, ray_address=ray_address, **video_options)
    with Upscaler(model, backend, device, tile, overlap, batch, max_pixels, tensorrt=tensorrt) as upscaler:
        return upscaler.upscale_path(src, dst, overwrite, on_error, **video_options)


class FolderError(I2NQError):
    """Some images of a folder failed (each was reported as it failed); the others were upscaled."""

    def __init__(self, written: list[Path], skipped: list[Path], failed: list[Path], dst: Path) -> None:
        self.written, self.skipped, self.failed = written, skipped, failed
        total = len(written) + len(skipped) + len(failed)
        done = f"{len(written)} written to {dst}" + (f", {len(skipped)} already there" if skipped else "")
        super().__init__(f"{len(failed)} of {total} images failed ({done}); rerun to retry them: finished "
                         "outputs are skipped")


def _warn(path: Path, message: str) -> None:
    warnings.warn(f"skipped {message}", stacklevel=3)


def _is_file(path: Path) -> bool:
    """Whether `path` is an existing output (a regular file or a link to one)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return path.is_symlink()


def _channels(image: np.ndarray) -> int:
    """1, 3 or 4 for an array `upscale` takes, else I2NQError."""
    if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
        raise I2NQError("upscale() takes a uint8 or uint16 numpy array")
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    if channels not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise I2NQError(f"upscale() takes HxW, HxWx1, HxWx3 or HxWx4 images, not shape {image.shape}")
    return channels


def _resize_rows(plane: np.ndarray, s: int, start: int, stop: int) -> np.ndarray:
    """Output rows [start, stop) of the bicubic x`s` upscale of `plane`, from the input rows they need plus a
    margin: equal to those rows of the whole upscale (bicubic reads 2 rows either side; the margin keeps the
    crop's replicated border away from them)."""
    a, b = max(0, start // s - 4), min(len(plane), -(-stop // s) + 4)
    crop = cv2.resize(plane[a:b], (plane.shape[1] * s, (b - a) * s), interpolation=cv2.INTER_CUBIC)
    return crop[start - a * s:stop - a * s]


def _check_kind(path: Path, suffixes: tuple[str, ...], kind: str) -> Path:
    """The path, or I2NQError when its suffix is not one of `suffixes`."""
    if path.suffix.lower() not in suffixes:
        raise I2NQError(f"unsupported {kind} type {path.suffix or '(no suffix)'!r} for {path.name}: "
                        f"use one of {', '.join(suffixes)}")
    return path
