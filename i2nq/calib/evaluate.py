"""Evaluation as in the SR literature: bicubic-downscaled HR images, Y-channel PSNR/SSIM with a
`scale`-pixel border cropped, the model output rounded to 8 bits, and the bicubic baseline beside it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from i2nq.calib.data import bicubic_down, bicubic_up, crop_to_scale, quantize8, read_folder
from i2nq.calib.metrics import psnr_y, ssim_y


@dataclass
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float
    bicubic_psnr_y: float
    bicubic_ssim_y: float


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@torch.no_grad()
def score_image(model: nn.Module, name: str, hr: torch.Tensor, scale: int) -> ImageScore:
    hr = crop_to_scale(hr, scale)
    lr = bicubic_down(hr, scale)
    sr = quantize8(model(lr[None])[0])
    bic = quantize8(bicubic_up(lr, scale))
    return ImageScore(name, psnr_y(sr, hr, scale), ssim_y(sr, hr, scale),
                      psnr_y(bic, hr, scale), ssim_y(bic, hr, scale))


def evaluate(model: nn.Module, hr_dir: str | os.PathLike) -> dict:
    """Scores per image and their means: {'psnr_y', 'ssim_y', 'bicubic_psnr_y', 'bicubic_ssim_y', 'images'}."""
    model.eval()
    rows = [score_image(model, name, hr, model.scale) for name, hr in read_folder(hr_dir)]
    keys = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")
    return {**{k: mean([getattr(r, k) for r in rows]) for k in keys},
            "model": model.info.__dict__, "images": [asdict(r) for r in rows]}


def format_table(result: dict) -> str:
    lines = [f"{'image':<24}{'PSNR-Y':>9}{'SSIM-Y':>9}{'bicubic':>9}{'gain dB':>9}"]
    for r in result["images"] + [{"name": "mean", **result}]:
        lines.append(f"{r['name']:<24}{r['psnr_y']:>9.3f}{r['ssim_y']:>9.4f}{r['bicubic_psnr_y']:>9.3f}"
                     f"{r['psnr_y'] - r['bicubic_psnr_y']:>+9.3f}")
    return "\n".join(lines)
