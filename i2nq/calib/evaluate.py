"""Evaluation as in the SR literature: bicubic-downscaled HR images, Y-channel PSNR/SSIM with a
`scale`-pixel border cropped, the model output rounded to 8 bits, and the bicubic baseline beside it.

Two extras: another LR recipe (OpenCV's aliased INTER_CUBIC, see calib.data.downscale), and the fidelity of a
model to a reference (its float parent): the Y-PSNR of one's output against the other's, meaningful for models
trained for other degradations, whose PSNR against bicubic-made HR pairs says little."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from i2nq.calib.data import bicubic_up, crop_to_scale, downscale, quantize8, read_folder
from i2nq.calib.metrics import psnr_y, ssim_y


@dataclass
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float
    bicubic_psnr_y: float
    bicubic_ssim_y: float
    fidelity_psnr_y: float | None = None  # vs the reference model's output


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@torch.no_grad()
def score_image(model: nn.Module, name: str, hr: torch.Tensor, scale: int, lr_recipe: str = "bicubic-aa",
                reference: nn.Module | None = None) -> ImageScore:
    hr = crop_to_scale(hr, scale)
    lr = downscale(hr, scale, lr_recipe)
    sr = quantize8(model(lr[None])[0])
    bic = quantize8(bicubic_up(lr, scale))
    fidelity = None if reference is None else psnr_y(sr, quantize8(reference(lr[None])[0]), scale)
    return ImageScore(name, psnr_y(sr, hr, scale), ssim_y(sr, hr, scale),
                      psnr_y(bic, hr, scale), ssim_y(bic, hr, scale), fidelity)


def evaluate(model: nn.Module, hr_dir: str | os.PathLike, lr_recipe: str = "bicubic-aa",
             reference: nn.Module | None = None) -> dict:
    """Scores per image and their means: {'psnr_y', 'ssim_y', 'bicubic_psnr_y', 'bicubic_ssim_y', 'images'}, plus
    'fidelity_psnr_y' against `reference` when one is given; LR images made by `lr_recipe`."""
    model.eval()
    if reference is not None:
        reference.eval()
    rows = [score_image(model, name, hr, model.scale, lr_recipe, reference) for name, hr in read_folder(hr_dir)]
    keys = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y") + (("fidelity_psnr_y",) if reference else ())
    return {**{k: mean([getattr(r, k) for r in rows]) for k in keys}, "lr_recipe": lr_recipe,
            "model": model.info.__dict__, "images": [asdict(r) for r in rows]}


def format_table(result: dict) -> str:
    fidelity = "fidelity_psnr_y" in result
    lines = [f"{'image':<24}{'PSNR-Y':>9}{'SSIM-Y':>9}{'bicubic':>9}{'gain dB':>9}" + (f"{'vs ref':>9}" if fidelity else "")]
    for r in result["images"] + [{"name": "mean", **result}]:
        lines.append(f"{r['name']:<24}{r['psnr_y']:>9.3f}{r['ssim_y']:>9.4f}{r['bicubic_psnr_y']:>9.3f}"
                     f"{r['psnr_y'] - r['bicubic_psnr_y']:>+9.3f}" + (f"{r['fidelity_psnr_y']:>9.3f}" if fidelity else ""))
    return "\n".join(lines)
