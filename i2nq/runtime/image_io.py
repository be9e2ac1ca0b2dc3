"""Image files: decode and encode PNG, JPEG, TIFF and WebP (8/16-bit, gray, BGR, BGRA) with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from i2nq.errors import I2NQError
from i2nq.files import atomic_output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp")  # formats OpenCV writes only at 8 bits
NO_ALPHA = (".jpg", ".jpeg")
# JPEG: apply the EXIF orientation (the output carries no EXIF, so it must be upright); others as stored.
JPEG_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH


def is_image(path: Path) -> bool:
    """Whether the file name has a supported image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> np.ndarray:
    """Decode an image: HxW gray, HxWx3 BGR or HxWx4 BGRA, uint8 or uint16 (JPEGs turned upright)."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise I2NQError(f"cannot read {path}: {exc.strerror or exc}") from None
    flags = JPEG_FLAGS if path.suffix.lower() in NO_ALPHA else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise I2NQError(f"cannot decode {path} as an image (corrupt, or not a {path.suffix} file)")
    if image.dtype not in (np.uint8, np.uint16):
        raise I2NQError(f"{path} has {image.dtype} pixels; only 8- and 16-bit images are supported")
    return image


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode by suffix (16-bit kept where the format allows, alpha dropped for JPEG) via a temp file."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise I2NQError(f"unsupported output image type {suffix!r}: use one of {', '.join(IMAGE_SUFFIXES)}")
    if suffix in EIGHT_BIT_ONLY and image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if suffix in NO_ALPHA and image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
              ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95]}.get(suffix, [])
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise I2NQError(f"OpenCV cannot encode a {image.dtype} image with shape {image.shape} as {suffix}")
    with atomic_output(path) as tmp:
        encoded.tofile(tmp)
