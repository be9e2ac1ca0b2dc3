"""`i2nq demo`: upscale the shipped sample image and clip on the CPU and compare the image with bicubic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from i2nq.assets import sample
from i2nq.errors import I2NQError
from i2nq.files import check_destination
from i2nq.metrics import luma, psnr
from i2nq.runtime.image_io import read_image, write_image
from i2nq.runtime.upscaler import Upscaler


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs and how the model compares with bicubic on the sample image."""

    model: str
    lr: Path
    sr: Path
    bicubic: Path
    video: Path
    psnr_model: float
    psnr_bicubic: float

    def __str__(self) -> str:
        return "\n".join([
            f"model: {self.model}",
            f"image: {self.lr} upscaled to {self.sr} (bicubic: {self.bicubic})",
            f"  PSNR-Y against the shipped HR image: model {self.psnr_model:.2f} dB, "
            f"bicubic {self.psnr_bicubic:.2f} dB ({self.psnr_model - self.psnr_bicubic:+.2f} dB)",
            f"video: {self.video}",
        ])


def psnr_y(a: np.ndarray, b: np.ndarray, border: int) -> float:
    """PSNR in dB on the BT.601 luma of two 8-bit BGR images, `border` pixels cropped (SR-literature style)."""
    return psnr(*(luma(x[..., ::-1] / 255.0) for x in (a, b)), border)


def bicubic_down(image: np.ndarray, scale: int) -> np.ndarray:
    """Antialiased bicubic downscaling (a = -0.5, as MATLAB imresize and torch antialias=True), 8-bit
    rounded: the degradation the models are trained on, written in numpy so the demo needs no torch."""

    def matrix(size: int) -> np.ndarray:
        x = np.abs((np.arange(size) + 0.5)[None, :] / scale - (np.arange(size // scale) + 0.5)[:, None])
        w = np.where(x < 1, 1.5 * x**3 - 2.5 * x**2 + 1, np.where(x < 2, -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2, 0))
        return w / w.sum(axis=1, keepdims=True)

    rows, cols = matrix(image.shape[0]), matrix(image.shape[1])
    out = np.einsum("ij,jkc,lk->ilc", rows, image.astype(np.float64), cols, optimize=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def run_demo(out: str | Path = "i2nq-demo", model: str | Path = "default", backend: str = "auto",
             device: str | None = "cpu", overwrite: bool = False, progress: bool = True) -> DemoResult:
    """Downscale the shipped HR sample by the model's scale, upscale it with the model and with bicubic,
    report both PSNRs against the HR image, and upscale the shipped sample clip (audio copied)."""
    out = Path(out)
    if not out.is_dir():
        check_destination(out)
        out.mkdir()
    with Upscaler(model, backend=backend, device=device) as upscaler:
        s = upscaler.scale
        hr = read_image(sample("sample.png"))
        if hr.ndim != 3 or hr.shape[2] != 3 or hr.dtype != np.uint8:
            raise I2NQError("the shipped sample image must be 8-bit BGR")
        hr = hr[:hr.shape[0] // s * s, :hr.shape[1] // s * s]
        lr = bicubic_down(hr, s)
        paths = {name: check_destination(out / f"sample_{name}.png", overwrite=overwrite)
                 for name in ("lr", f"x{s}", f"bicubic_x{s}")}
        video = check_destination(out / f"sample_x{s}.mp4", overwrite=overwrite)
        sr = upscaler.upscale(lr)
        bicubic = cv2.resize(lr, hr.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        for name, image in zip(paths, (lr, sr, bicubic), strict=True):
            write_image(paths[name], image)
        upscaler.upscale_video(sample("sample.mp4"), video, overwrite=overwrite, progress=progress)
        return DemoResult(str(model), paths["lr"], paths[f"x{s}"], paths[f"bicubic_x{s}"], video,
                          psnr_y(sr, hr, s), psnr_y(bicubic, hr, s))
