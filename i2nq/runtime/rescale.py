"""Output scales other than the model's (Real-ESRGAN's `-s`/`--outscale`): the model's scale, then a resize.

Down (an outscale below the model's scale, e.g. 2 with a x4 model) uses OpenCV's INTER_AREA, which averages
and does not alias; up uses INTER_LANCZOS4. The output size is round(input size x outscale).

`BandResizer` resizes an image given as strips of rows, top to bottom, and hands out strips of the resized
image, holding only the rows a band needs (PNG outputs stay streamed): each band is cut at a row where input
and output grid lines meet (a multiple of the scale ratio's denominator), with a margin of rows the filter
reads on either side, so the bands equal the rows of one whole-image resize (to OpenCV's fixed-point rounding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from fractions import Fraction

import cv2
import numpy as np

from i2nq.errors import I2NQError, option

MARGIN = 8  # rows of context each side of a band, in source rows (Lanczos-4 reads 4; INTER_AREA less than 1/ratio)


def check_outscale(outscale: float | None) -> float | None:
    """The outscale as a float (None: the model's), or I2NQError."""
    if outscale is None:
        return None
    try:
        value = float(outscale)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value <= 64 or not math.isfinite(value):
        raise I2NQError(f"{option('--outscale', 'outscale=')} must be a number in (0, 64], not {outscale!r}")
    return value


def output_size(height: int, width: int, outscale: float) -> tuple[int, int]:
    """(height, width) of the output: the input's times outscale, rounded, at least 1."""
    return max(1, round(height * outscale)), max(1, round(width * outscale))


def interpolation(model_scale: int, outscale: float) -> int:
    return cv2.INTER_AREA if outscale < model_scale else cv2.INTER_LANCZOS4


def resize(image: np.ndarray, size: tuple[int, int], model_scale: int, outscale: float) -> np.ndarray:
    """A whole model output resized to `size` (height, width)."""
    if image.shape[:2] == size:
        return image
    out = cv2.resize(image, (size[1], size[0]), interpolation=interpolation(model_scale, outscale))
    return out.reshape(size + image.shape[2:]) if image.ndim == 3 and out.ndim == 2 else out


class BandResizer:
    """Resize an image of `src_height` rows, arriving in strips, to `dst` (height, width), strip by strip."""

    def __init__(self, src_height: int, dst: tuple[int, int], model_scale: int, outscale: float) -> None:
        self.src_height, self.dst = src_height, dst
        self.flag = interpolation(model_scale, outscale)
        self.ratio = Fraction(dst[0], src_height)  # output rows per source row
        self.step = self.ratio.denominator  # source rows between shared grid lines
        self.margin = -(-MARGIN * max(1, math.ceil(1 / self.ratio)) // self.step) * self.step

    def run(self, strips: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Strips of the resized image (rows top to bottom) from strips of the source image."""
        held: np.ndarray | None = None  # source rows [base, base + len(held))
        base = 0
        done = 0  # source rows whose output is handed out: [0, done)
        for strip in strips:
            held = strip if held is None else np.concatenate([held, strip])
            end = base + len(held)
            # rows up to a grid line at least `margin` below `done` and with `margin` rows available after it
            upto = ((end - self.margin) // self.step) * self.step if end < self.src_height else self.src_height
            if upto > done:
                yield self._band(held, base, done, upto)
                done = upto
                keep = max(0, done - self.margin)  # rows the next band still reads
                held, base = held[keep - base:], keep
        if done < self.src_height:
            raise RuntimeError(f"image strips hold {base + (0 if held is None else len(held))} rows, "
                               f"expected {self.src_height}")

    def _band(self, held: np.ndarray, base: int, start: int, stop: int) -> np.ndarray:
        """Output rows for source rows [start, stop) (grid-aligned), resized from them plus margins (grid-aligned
        too, so the crop's output rows fall on the whole output's rows)."""
        lo = max(base, start - self.margin)
        hi = min(base + len(held), stop + self.margin)
        crop = held[lo - base:hi - base]
        out = cv2.resize(crop, (self.dst[1], int((hi - lo) * self.ratio)), interpolation=self.flag)
        if crop.ndim == 3 and out.ndim == 2:
            out = out[..., None]
        first = int(lo * self.ratio)
        return out[int(start * self.ratio) - first:int(stop * self.ratio) - first]
