"""Image sets: scikit-image's bundled photographs for training, folders of HR images for evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from i2nq.errors import I2NQError

# scikit-image's bundled photographs (public domain / CC0). Synthetic pictures (logo, colorwheel,
# checkerboard, binary horse) are left out. 'astronaut' is held out for validation and the demo sample.
TRAIN_PHOTOS = ("chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                "camera", "moon", "coins", "brick", "grass", "gravel", "clock", "page", "text")
VAL_PHOTOS = ("astronaut",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxW or HxWx3 uint8 RGB -> 3xHxW float32 in [0, 1] (gray is replicated)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1).float().div_(255.0)


def skimage_photos(names: tuple[str, ...] = TRAIN_PHOTOS) -> list[torch.Tensor]:
    """The named scikit-image photographs as 3xHxW float tensors."""
    import skimage.data

    return [to_tensor(getattr(skimage.data, n)()) for n in names]


def read_folder(folder: str | Path) -> list[tuple[str, torch.Tensor]]:
    """All images in `folder` (sorted by name) as (name, 3xHxW float) pairs; I2NQError if none."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise I2NQError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise I2NQError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    out = []
    for p in files:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise I2NQError(f"cannot decode image: {p}")
        out.append((p.name, to_tensor(bgr[..., ::-1])))
    return out


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as a saved image would be."""
    return x.clamp(0, 1).mul(255).round().div(255)


def crop_to_scale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = hr.shape[-2:]
    return hr[..., : h - h % scale, : w - w % scale]


def bicubic_down(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR image by antialiased bicubic downscaling (a = -0.5, as MATLAB imresize), rounded to 8 bits."""
    x = hr[None] if hr.ndim == 3 else hr
    lr = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", align_corners=False, antialias=True)
    lr = quantize8(lr)
    return lr[0] if hr.ndim == 3 else lr


def bicubic_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    x = lr[None] if lr.ndim == 3 else lr
    up = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return up[0] if lr.ndim == 3 else up


@dataclass
class PairSet:
    """HR images (cropped to a multiple of scale) with their bicubic LR versions, held in memory."""

    hr: list[torch.Tensor]
    lr: list[torch.Tensor]
    scale: int

    @classmethod
    def from_images(cls, images: list[torch.Tensor], scale: int, min_lr_side: int = 0) -> "PairSet":
        hr = [crop_to_scale(im, scale) for im in images if min(im.shape[-2:]) // scale >= min_lr_side]
        if not hr:
            raise I2NQError("no training images large enough for the patch size")
        return cls(hr=hr, lr=[bicubic_down(h, scale) for h in hr], scale=scale)

    def batch(self, n: int, lr_patch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n random aligned (LR, HR) patches with random flips and 90-degree rotations."""
        s = self.scale
        areas = torch.tensor([float(l.shape[-2] * l.shape[-1]) for l in self.lr])
        idx = torch.multinomial(areas, n, replacement=True, generator=gen)
        lrs, hrs = [], []
        for i in idx.tolist():
            lr, hr = self.lr[i], self.hr[i]
            y = int(torch.randint(0, lr.shape[-2] - lr_patch + 1, (1,), generator=gen))
            x = int(torch.randint(0, lr.shape[-1] - lr_patch + 1, (1,), generator=gen))
            pl = lr[:, y : y + lr_patch, x : x + lr_patch]
            ph = hr[:, y * s : (y + lr_patch) * s, x * s : (x + lr_patch) * s]
            k = int(torch.randint(0, 8, (1,), generator=gen))
            if k & 4:
                pl, ph = pl.flip(-1), ph.flip(-1)
            pl, ph = pl.rot90(k & 3, (-2, -1)), ph.rot90(k & 3, (-2, -1))
            lrs.append(pl)
            hrs.append(ph)
        return torch.stack(lrs), torch.stack(hrs)
