"""PSNR and SSIM on the Y channel (BT.601) with a `scale`-pixel border cropped, as in the SR literature."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from i2nq.metrics import BT601_RGB, psnr


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """3xHxW RGB in [0, 1] -> HxW luma in [16, 235] (ITU-R BT.601, as MATLAB rgb2ycbcr)."""
    wr, wg, wb = BT601_RGB
    return 16.0 + wr * x[0].double() + wg * x[1].double() + wb * x[2].double()


def _crop(y: torch.Tensor, border: int) -> torch.Tensor:
    return y[border:-border, border:-border] if border > 0 else y


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """PSNR (dB) between the Y channels of two 3xHxW [0, 1] images, data range 255."""
    return psnr(rgb_to_y(sr).numpy(), rgb_to_y(hr).numpy(), border)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, 'valid' window) of the Y channels."""
    a = _crop(rgb_to_y(sr), border)[None, None]
    b = _crop(rgb_to_y(hr), border)[None, None]
    w = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    saa = F.conv2d(a * a, w) - mu_a**2
    sbb = F.conv2d(b * b, w) - mu_b**2
    sab = F.conv2d(a * b, w) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(ssim.mean())
