"""Image files: decode and encode PNG, JPEG, TIFF and WebP (8/16-bit, gray, BGR, BGRA) with OpenCV.

Reading checks the size the file's header claims (imagesize reads it without decoding) against a pixel limit
before anything is decoded, so a header claiming 100000x100000 or a decompression bomb is a one-line error.
PNG is written in strips as they arrive (a zlib stream, as OpenCV writes it: Sub filter, level 1, RLE), so an
output of any size needs memory for one strip only; the other formats are encoded whole by OpenCV.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import cv2
import imagesize
import numpy as np

from i2nq.errors import I2NQError, option
from i2nq.files import atomic_output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp")  # formats OpenCV writes only at 8 bits
NO_ALPHA = (".jpg", ".jpeg")
# JPEG: apply the EXIF orientation (the output carries no EXIF, so it must be upright); others as stored.
JPEG_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
#: Largest input image read by default, in pixels (width x height). 200 megapixels is above every camera
#: sensor on sale (150 MP medium format) and decodes to 600 MB (8-bit BGR) or 1.6 GB (16-bit BGRA); larger
#: panoramas or scans need max_pixels / --max-pixels raised.
DEFAULT_MAX_PIXELS = 200_000_000
#: Largest side each output format can hold (OpenCV's encoders refuse more).
MAX_SIDE = {".png": 2**31 - 1, ".jpg": 65535, ".jpeg": 65535, ".webp": 16383, ".tif": 2**32 - 1, ".tiff": 2**32 - 1}
PNG_STRIP_ROWS = 256  # rows filtered and compressed at a time: bounds the encoder's scratch memory


def is_image(path: Path) -> bool:
    """Whether the file name has a supported image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_size(path: Path, file: BinaryIO | None = None) -> tuple[int, int]:
    """(width, height) as the file's header states it (as stored, before any EXIF rotation), without decoding;
    I2NQError when the header cannot be read."""
    try:
        if file is not None:
            file.seek(0)
        width, height = imagesize.get(file if file is not None else path, exif_rotation=False)
    except OSError as exc:
        raise I2NQError(f"cannot read {path}: {exc.strerror or exc}") from None
    if width < 1 or height < 1:
        raise I2NQError(f"cannot decode {path} as an image (corrupt, or not a {path.suffix} file)")
    return width, height


def check_pixels(path: Path | str, width: int, height: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """I2NQError when width x height is above `max_pixels` (None or 0: no limit)."""
    if max_pixels and width * height > max_pixels:
        raise I2NQError(f"{path} is {width}x{height} = {width * height / 1e6:.0f} megapixels, over the limit of "
                        f"{max_pixels / 1e6:g} megapixels; pass {option('--max-pixels', 'max_pixels=')} to raise it")


def read_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image: HxW gray, HxWx3 BGR or HxWx4 BGRA, uint8 or uint16 (JPEGs turned upright).

    The size in its header is checked against `max_pixels` before decoding; only regular files are read (a
    FIFO is refused without blocking)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise I2NQError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise I2NQError(f"input {path} is not a regular file")
        width, height = image_size(path, f)
        check_pixels(path, width, height, max_pixels)
        f.seek(0)
        try:
            data = np.frombuffer(f.read(), np.uint8)
        except OSError as exc:
            raise I2NQError(f"cannot read {path}: {exc.strerror or exc}") from None
    flags = JPEG_FLAGS if path.suffix.lower() in NO_ALPHA else cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as exc:
        raise I2NQError(f"cannot decode {path} ({width}x{height}): {_cv_reason(exc)}") from None
    except MemoryError:
        raise I2NQError(f"not enough memory to decode {path} ({width}x{height})") from None
    if image is None:
        raise I2NQError(f"cannot decode {path} as an image (corrupt, or not a {path.suffix} file)")
    if image.dtype not in (np.uint8, np.uint16):
        raise I2NQError(f"{path} has {image.dtype} pixels; only 8- and 16-bit images are supported")
    return image


def check_output_size(path: Path, height: int, width: int) -> None:
    """I2NQError when an image of this size cannot be written in `path`'s format (checked before upscaling)."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise I2NQError(f"unsupported output image type {suffix!r}: use one of {', '.join(IMAGE_SUFFIXES)}")
    if max(height, width) > MAX_SIDE[suffix]:
        raise I2NQError(f"the output would be {width}x{height}; {suffix} images hold at most {MAX_SIDE[suffix]} "
                        f"pixels a side: write .png or .tif")


DEFAULT_QUALITY = 95  # JPEG and WebP


def write_image(path: Path, image: np.ndarray, overwrite: bool | None = None, quality: int | None = None) -> None:
    """Encode by suffix (16-bit kept where the format allows, alpha dropped for JPEG) via a temp file."""
    write_image_rows(path, image.shape, image.dtype, [image], overwrite, quality)


def write_image_rows(path: Path, shape: tuple[int, ...], dtype: np.dtype, strips: Iterable[np.ndarray],
                     overwrite: bool | None = None, quality: int | None = None) -> None:
    """Encode an image of `shape` (HxW, HxWxC) and `dtype` given as strips of whole rows, top to bottom, via a
    temp file. PNG is encoded strip by strip as the strips come; other formats are gathered first.

    overwrite: as atomic_output (None: as check_destination decided). quality: JPEG/WebP quality 1-100 (default
    95; lossless formats ignore it)."""
    path = Path(path)
    suffix = path.suffix.lower()
    height, width = shape[:2]
    check_output_size(path, height, width)
    with atomic_output(path, overwrite) as tmp:
        if suffix == ".png":
            with open(tmp, "wb") as f:
                _write_png(f, shape, np.dtype(dtype), strips)
            return
        image = np.empty(shape, dtype)
        _gather(image, strips)
        encoded = _encode(suffix, image, quality)
        encoded.tofile(tmp)


def _gather(image: np.ndarray, strips: Iterable[np.ndarray]) -> None:
    row = 0
    for strip in strips:
        image[row:row + len(strip)] = strip
        row += len(strip)
        del strip
    if row != len(image):
        raise RuntimeError(f"image strips hold {row} rows, expected {len(image)}")


def _encode(suffix: str, image: np.ndarray, quality: int | None = None) -> np.ndarray:
    if suffix in EIGHT_BIT_ONLY and image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if suffix in NO_ALPHA and image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    q = DEFAULT_QUALITY if quality is None else int(quality)
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, q], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, q],
              ".webp": [cv2.IMWRITE_WEBP_QUALITY, q]}.get(suffix, [])
    try:
        ok, encoded = cv2.imencode(suffix, image, params)
    except cv2.error as exc:
        raise I2NQError(f"OpenCV cannot encode a {image.dtype} image with shape {image.shape} as {suffix}: "
                        f"{_cv_reason(exc)}") from None
    if not ok:
        raise I2NQError(f"OpenCV cannot encode a {image.dtype} image with shape {image.shape} as {suffix}")
    return encoded


def _write_png(f: BinaryIO, shape: tuple[int, ...], dtype: np.dtype, strips: Iterable[np.ndarray]) -> None:
    """PNG from strips of rows: IHDR, the rows Sub-filtered into one zlib stream cut into IDAT chunks, IEND.

    Python's zlib does the compression; the container is four fields and a CRC per chunk (PNG 1.2, ISO 15948).
    Same settings as OpenCV's encoder (filter Sub, zlib level 1, Z_RLE): same speed, same size, while pypng
    (filter None only) writes files 1.7x larger."""
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    if dtype not in (np.uint8, np.uint16) or channels not in (1, 3, 4):
        raise I2NQError(f"cannot write a {dtype} image with {channels} channels as PNG")
    depth = 16 if dtype == np.uint16 else 8
    bpp = channels * depth // 8  # bytes per pixel: the Sub filter's distance
    order = {1: [0], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[channels]  # BGR(A) -> RGB(A)
    f.write(b"\x89PNG\r\n\x1a\n")
    _png_chunk(f, b"IHDR", struct.pack(">IIBBBBB", width, height, depth, {1: 0, 3: 2, 4: 6}[channels], 0, 0, 0))
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    pending = bytearray()
    rows = 0
    for strip in _row_chunks(strips, PNG_STRIP_ROWS):
        n = len(strip)
        rows += n
        if rows > height:
            break
        pixels = strip.reshape(n, width, channels)[..., order].astype(">u2" if depth == 16 else np.uint8,
                                                                      copy=False)
        raw = pixels.reshape(n, width * channels).view(np.uint8)
        line = np.empty((n, width * bpp + 1), np.uint8)
        line[:, 0] = 1  # filter type Sub
        line[:, 1:bpp + 1] = raw[:, :bpp]
        np.subtract(raw[:, bpp:], raw[:, :-bpp], out=line[:, bpp + 1:])
        pending += z.compress(line)
        del strip, pixels, raw, line  # before the next strip is made
        if len(pending) >= 1 << 20:
            _png_chunk(f, b"IDAT", pending)
            pending = bytearray()
    if rows != height:
        raise RuntimeError(f"image strips hold {rows} rows, expected {height}")
    pending += z.flush()
    _png_chunk(f, b"IDAT", pending)
    _png_chunk(f, b"IEND", b"")


def _png_chunk(f: BinaryIO, kind: bytes, data: bytes | bytearray) -> None:
    f.write(struct.pack(">I", len(data)) + kind)
    f.write(data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))


def _row_chunks(strips: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """The strips cut into pieces of at most `rows` rows (views, no copies)."""
    for strip in strips:
        for start in range(0, len(strip), rows):
            yield strip[start:start + rows]
        del strip  # not held while the next one is made


def _cv_reason(exc: cv2.error) -> str:
    """The message of an OpenCV error without its source location."""
    text = str(exc).strip().splitlines()
    last = text[-1] if text else ""
    return last.split(") ", 1)[-1].strip(" :") or "OpenCV error"
