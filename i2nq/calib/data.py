"""Image sets: scikit-image's bundled photographs (or your images or video frames) for training, folders of HR
images for evaluation."""

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
    """HxW or HxWx3 uint8 or uint16 RGB -> 3xHxW float32 in [0, 1] (gray is replicated)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    scale = float(np.iinfo(rgb.dtype).max)
    return torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1).float().div_(scale)


def skimage_photos(names: tuple[str, ...] = TRAIN_PHOTOS) -> list[torch.Tensor]:
    """The named scikit-image photographs as 3xHxW float tensors."""
    import skimage.data

    return [to_tensor(getattr(skimage.data, n)()) for n in names]


def read_folder(folder: str | Path) -> list[tuple[str, torch.Tensor]]:
    """All images in `folder` (sorted by name) as (name, 3xHxW float) pairs; I2NQError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise I2NQError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise I2NQError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return [(p.name, _read_image(p)) for p in files]


def _read_image(path: Path) -> torch.Tensor:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise I2NQError(f"cannot decode image: {path}")
    return to_tensor(bgr[..., ::-1])


MAX_TRAIN_PIXELS = 120_000_000  # HR + LR float32 copies of this many pixels take about 1.8 GB


def training_images(path: str | Path, frames: int = 32) -> list[torch.Tensor]:
    """HR training images from a folder of images or from `frames` frames spread evenly over a video, so a model
    can be calibrated and fine-tuned on the content it will upscale. Each frame should be at full quality: the
    model learns to restore the frame's bicubic downscale to the frame itself."""
    from i2nq.runtime.video import VIDEO_SUFFIXES, is_video

    path = Path(path)
    if path.is_dir():
        images = [t for _, t in read_folder(path)]
    elif path.is_file() and is_video(path):
        images = _video_frames(path, frames)
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        images = [_read_image(path)]
    else:
        raise I2NQError(f"training data must be a folder of images, an image or a video "
                        f"({', '.join(VIDEO_SUFFIXES)}): {path}")
    pixels = sum(t.shape[-2] * t.shape[-1] for t in images)
    if pixels > MAX_TRAIN_PIXELS:
        raise I2NQError(f"training data {path.name} holds {pixels / 1e6:.0f} MP, more than the "
                        f"{MAX_TRAIN_PIXELS / 1e6:.0f} MP kept in memory; use fewer or smaller images (or frames)")
    return images


def _video_frames(path: Path, count: int) -> list[torch.Tensor]:
    """`count` frames at evenly spaced times (the first decodable frame at or after each)."""
    import av

    from i2nq.runtime.video import StreamColor

    if count < 1:
        raise I2NQError(f"frames must be >= 1, got {count}")
    try:
        with av.open(str(path)) as source:
            if not source.streams.video:
                raise I2NQError(f"{path.name} has no video stream")
            video = source.streams.video[0]
            color = StreamColor.of(video)
            length = (source.duration or 0) / av.time_base
            origin = (source.start_time or 0) / av.time_base
            images = []
            for i in range(count):
                t = origin + length * (i + 0.5) / count
                source.seek(int(t * av.time_base), backward=True)  # the keyframe before t
                frame = next((f for f in source.decode(video) if f.time is None or f.time >= t - 1e-6), None)
                if frame is not None:  # with the source's matrix and range, 16-bit for deep video
                    images.append(to_tensor(color.to_bgr(frame)[..., ::-1]))
    except av.error.FFmpegError as exc:
        raise I2NQError(f"cannot read video {path.name}: {str(exc).splitlines()[0]}") from None
    if not images:
        raise I2NQError(f"no frames decoded from {path.name}")
    return images


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


LR_RECIPES = ("bicubic-aa", "cv2-cubic")
TRAIN_RECIPES = {"bicubic-aa": ("bicubic-aa",), "cv2-cubic": ("cv2-cubic",), "mixed": LR_RECIPES}


def downscale(hr: torch.Tensor, scale: int, recipe: str = "bicubic-aa") -> torch.Tensor:
    """The LR image of a 3xHxW HR image (cropped to a multiple of `scale`), by one of two recipes:
    bicubic-aa: antialiased bicubic, as MATLAB's imresize and the SR literature (bicubic_down);
    cv2-cubic: OpenCV's INTER_CUBIC without antialiasing, as many people make small images (aliased, sharper)."""
    if recipe == "bicubic-aa":
        return bicubic_down(hr, scale)
    if recipe != "cv2-cubic":
        raise I2NQError(f"unknown LR recipe {recipe!r} (choose from: {', '.join(LR_RECIPES)})")
    import cv2

    h, w = hr.shape[-2:]
    img = hr.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    lr = cv2.resize(img, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(lr).permute(2, 0, 1).float().div(255)


def bicubic_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    x = lr[None] if lr.ndim == 3 else lr
    up = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return up[0] if lr.ndim == 3 else up


@dataclass
class PairSet:
    """HR images (cropped to a multiple of scale) with their LR versions, held in memory: one pair per image and LR
    recipe (calib.data.downscale), so a model trained on several recipes sees each equally often."""

    hr: list[torch.Tensor]
    lr: list[torch.Tensor]
    scale: int

    @classmethod
    def from_images(cls, images: list[torch.Tensor], scale: int, min_lr_side: int = 0,
                    recipes: tuple[str, ...] = ("bicubic-aa",)) -> "PairSet":
        hr = [crop_to_scale(im, scale) for im in images if min(im.shape[-2:]) // scale >= min_lr_side]
        if not hr:
            largest = max(images, key=lambda im: min(im.shape[-2:]))
            raise I2NQError(f"no training image is large enough: LR patches of {min_lr_side} px need images of at "
                            f"least {min_lr_side * scale} px a side at x{scale} (the largest is "
                            f"{largest.shape[-1]}x{largest.shape[-2]}); use larger images or a smaller --patch")
        pairs = [(h, downscale(h, scale, recipe)) for recipe in recipes for h in hr]
        return cls(hr=[h for h, _ in pairs], lr=[lr for _, lr in pairs], scale=scale)

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
