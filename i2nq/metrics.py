"""Y-channel PSNR as in the SR literature (BT.601 luma in [16, 235], `border` pixels cropped), in numpy so
that the runtime can report it without torch; i2nq.calib.metrics adds SSIM on top."""

from __future__ import annotations

import math

import numpy as np

BT601_RGB = (65.481, 128.553, 24.966)  # Y = 16 + w . RGB for RGB in [0, 1], as MATLAB rgb2ycbcr


def luma(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 RGB in [0, 1] -> HxW BT.601 luma in [16, 235] (float64)."""
    return 16.0 + rgb.astype(np.float64) @ np.array(BT601_RGB)


def psnr(ya: np.ndarray, yb: np.ndarray, border: int) -> float:
    """PSNR (dB, data range 255) between two luma images with `border` pixels cropped on every side."""
    if border > 0:
        ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
    mse = float(np.mean((ya.astype(np.float64) - yb) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
