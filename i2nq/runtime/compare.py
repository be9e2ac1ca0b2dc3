"""`i2nq compare`: what each model does to a crop of your image or video, before a long run.

Writes a crop sheet (PNG: the input enlarged with nearest neighbours, bicubic, then each model, side by side
with a label above each) and a self-contained HTML page (images inline) that shows the input, and for each
model a slider between bicubic and the model's output. The crop is taken where the input has the most detail
(the window with the largest gradient energy), or where --crop says.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import av
import cv2
import numpy as np

from i2nq.errors import I2NQError, option
from i2nq.files import atomic_output, check_destination, check_source
from i2nq.runtime.image_io import IMAGE_SUFFIXES, read_image
from i2nq.runtime.video import VIDEO_SUFFIXES

DEFAULT_CROP = 96  # input px a side
LABEL_HEIGHT = 24


def input_frame(src: Path, at: float | None = None, max_pixels: int | None = None) -> np.ndarray:
    """An image file as BGR(A) uint8/16, or a video's frame at `at` seconds (None: the middle), as BGR uint8."""
    suffix = src.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        image = read_image(src, max_pixels)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        image = image[..., :3]
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8) if image.dtype == np.uint16 else image
    if suffix not in VIDEO_SUFFIXES:
        raise I2NQError(f"unsupported input type {src.suffix or '(none)'} for {src}: give an image "
                        f"({', '.join(IMAGE_SUFFIXES)}) or a video ({', '.join(VIDEO_SUFFIXES)})")
    try:
        with av.open(str(src)) as c:
            if not c.streams.video:
                raise I2NQError(f"{src} has no video stream")
            stream = c.streams.video[0]
            length = float(stream.duration * stream.time_base) if stream.duration else \
                (c.duration / av.time_base if c.duration else 0.0)
            when = length / 2 if at is None else at
            if at is not None and length and at >= length:
                raise I2NQError(f"{option('--time', 'at=')} {at:g} s is past the end of {src} ({length:.2f} s)")
            if when > 0:
                c.seek(int(when / stream.time_base), stream=stream, backward=True)
            chosen = None
            for frame in c.decode(stream):
                chosen = frame
                if frame.pts is None or frame.pts * stream.time_base >= when:
                    break
            if chosen is None:
                raise I2NQError(f"no video frame in {src}")
            return chosen.to_ndarray(format="bgr24")
    except av.error.FFmpegError as exc:
        raise I2NQError(f"cannot read video {src}: {str(exc).splitlines()[0]}") from None


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """'X,Y,W,H' (or 'X,Y,S' for a square) in input pixels."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 3:
        parts.append(parts[2])
    if len(parts) != 4 or parts[0] < 0 or parts[1] < 0 or parts[2] < 1 or parts[3] < 1:
        raise ValueError(text)
    return parts[0], parts[1], parts[2], parts[3]


def detailed_crop(image: np.ndarray, side: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the side x side window with the largest gradient energy (the whole image if smaller)."""
    height, width = image.shape[:2]
    w, h = min(side, width), min(side, height)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    energy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    window = cv2.boxFilter(energy, -1, (w, h), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    window = window[:height - h + 1, :width - w + 1]
    y, x = np.unravel_index(int(np.argmax(window)), window.shape)
    return int(x), int(y), w, h


def _labelled(image: np.ndarray, label: str) -> np.ndarray:
    bar = np.full((LABEL_HEIGHT, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label[: max(4, image.shape[1] // 8)], (4, LABEL_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, image])


def _png_uri(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", image)
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>i2nq compare: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; background: #f4f4f4; }}
.cmp {{ position: relative; display: inline-block; line-height: 0; }}
.cmp img {{ display: block; image-rendering: pixelated; }}
.cmp .top {{ position: absolute; top: 0; left: 0; height: 100%; overflow: hidden; width: 50%;
             border-right: 2px solid #e33; }}
.cmp input {{ position: absolute; left: 0; bottom: -28px; width: 100%; margin: 0; }}
figure {{ display: inline-block; margin: 0 24px 48px 0; vertical-align: top; }}
figcaption {{ margin-bottom: 6px; }}
</style></head><body>
<h1>{title}</h1>
<p>Crop {crop} of {source}, x{scale}. Drag a slider: left of the red line the model, right of it bicubic.</p>
<figure><figcaption>input (nearest neighbour)</figcaption><div class="cmp"><img alt="input" src="{input}"></div></figure>
{models}
<script>
for (const slider of document.querySelectorAll('.cmp input')) {{
  slider.addEventListener('input', () => {{ slider.parentElement.querySelector('.top').style.width = slider.value + '%'; }});
}}
</script>
</body></html>
"""

FIGURE = """<figure><figcaption>{label} | bicubic</figcaption><div class="cmp">
<img alt="bicubic" src="{bicubic}"><div class="top"><img alt="{label}" src="{model}"></div>
<input type="range" min="0" max="100" value="50" aria-label="{label} against bicubic"></div></figure>"""


def compare(src: str | Path, models: list[str], out: str | Path | None = None, *, backend: str = "auto",
            device: str | int | None = None, crop: tuple[int, int, int, int] | None = None, at: float | None = None,
            overwrite: bool = False, max_pixels: int | None = None) -> tuple[Path, Path]:
    """Write NAME_compare.png (the crop sheet) and NAME_compare.html (sliders) into folder `out` (None: beside
    `src`); returns their paths. crop: (x, y, w, h) in input pixels (None: the most detailed 96 px square)."""
    from i2nq.runtime.upscaler import Upscaler

    src = check_source(src)
    if src.is_dir():
        raise I2NQError(f"{src} is a folder; compare takes one image or video")
    if not models:
        raise I2NQError(f"give at least one {option('--model', 'model')}")
    folder = src.parent if out is None else Path(out)
    if not folder.is_dir():
        raise I2NQError(f"output folder {folder} does not exist")
    sheet_path = check_destination(folder / f"{src.stem}_compare.png", src, overwrite)
    page_path = check_destination(folder / f"{src.stem}_compare.html", src, overwrite)
    image = input_frame(src, at, max_pixels)
    height, width = image.shape[:2]
    x, y, w, h = crop or detailed_crop(image, DEFAULT_CROP)
    if x + w > width or y + h > height:
        raise I2NQError(f"{option('--crop', 'crop=')} {x},{y},{w},{h} is outside the {width}x{height} input")
    piece = np.ascontiguousarray(image[y:y + h, x:x + w])
    outputs, scale = [], None
    for name in models:
        with Upscaler(name, backend, device, max_pixels=max_pixels, progress=False) as up:
            scale = scale or up.scale
            result = up.upscale(piece)
        if result.shape[:2] != (h * scale, w * scale):  # another scale than the first model's: shown at that size
            result = cv2.resize(result, (w * scale, h * scale), interpolation=cv2.INTER_LANCZOS4)
        outputs.append((Path(str(name)).stem if Path(str(name)).suffix else str(name), result))
    size = (w * scale, h * scale)
    nearest = cv2.resize(piece, size, interpolation=cv2.INTER_NEAREST)
    bicubic = cv2.resize(piece, size, interpolation=cv2.INTER_CUBIC)
    columns = [("input", nearest), ("bicubic", bicubic), *outputs]
    gap = np.full((h * scale + LABEL_HEIGHT, 4, 3), 255, np.uint8)
    parts = []
    for label, im in columns:
        parts += [_labelled(im, label), gap]
    sheet = np.hstack(parts[:-1])
    figures = "\n".join(FIGURE.format(label=html.escape(label), bicubic=_png_uri(bicubic), model=_png_uri(im))
                        for label, im in outputs)
    page = PAGE.format(title=html.escape(src.name), crop=f"{x},{y},{w},{h}", source=html.escape(src.name),
                       scale=scale, input=_png_uri(nearest), models=figures)
    with atomic_output(sheet_path) as tmp:
        ok, data = cv2.imencode(".png", sheet)
        data.tofile(tmp)
    with atomic_output(page_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return sheet_path, page_path
