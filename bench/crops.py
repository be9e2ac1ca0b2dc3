"""Side-by-side crops for the README: the same HR crop, downscaled by each LR recipe, upscaled by bicubic and by
each model, with its Y-PSNR against the HR crop in the label.

  python -c "import cv2; from skimage import data; cv2.imwrite('astronaut.png', data.astronaut()[..., ::-1])"
  python bench/crops.py --image astronaut.png --box 14,40,48 --out docs/images/crops-astronaut.jpg \
      --models default,animevideov3-x4-w4a4,realesr-animevideov3-x4 \
      --labels "default (I2NQ W4A4),anime W4A4,anime float"

(scikit-image's astronaut is NASA's public-domain portrait of Eileen Collins; none of i2nq's models trained on it.)

--box TOP,LEFT,SIDE is the crop in LR pixels of the x4 downscale (the HR crop is 4x that). Models run with
i2nq.Upscaler on the CPU (ONNX Runtime for shipped names and .onnx files, torch for packaged float parents).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from i2nq.calib.data import LR_RECIPES, downscale
from i2nq.metrics import luma, psnr
from i2nq.runtime import Upscaler

SCALE = 4


def lr_image(hr_bgr: np.ndarray, recipe: str) -> np.ndarray:
    hr = torch.from_numpy(np.ascontiguousarray(hr_bgr[..., ::-1])).permute(2, 0, 1).float() / 255
    lr = downscale(hr, SCALE, recipe).clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(lr.permute(1, 2, 0).numpy()[..., ::-1])


def psnr_y(bgr: np.ndarray, ref_bgr: np.ndarray) -> float:
    return psnr(luma(bgr[..., ::-1] / 255.0), luma(ref_bgr[..., ::-1] / 255.0), border=0)


def labelled(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="HR image")
    parser.add_argument("--box", required=True, help="TOP,LEFT,SIDE of the crop in LR pixels")
    parser.add_argument("--models", default="default,animevideov3-x4-w4a4")
    parser.add_argument("--labels", help="comma-separated labels for the models (default: their names)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    top, left, side = (int(v) for v in args.box.split(","))
    hr = cv2.imread(str(args.image))
    hr = hr[: hr.shape[0] // SCALE * SCALE, : hr.shape[1] // SCALE * SCALE]
    hr_crop = hr[top * SCALE:(top + side) * SCALE, left * SCALE:(left + side) * SCALE]
    upscalers = {m: Upscaler(m, backend="torch" if m.startswith("realesr-") or m.startswith("span") else "auto",
                             device="cpu") for m in args.models.split(",")}
    labels = dict(zip(upscalers, args.labels.split(",") if args.labels else upscalers))
    rows = []
    for recipe in LR_RECIPES:
        lr = lr_image(hr, recipe)
        # a margin of LR context around the crop, so the crop is what the whole image would give
        m = 24
        t0, l0 = max(top - m, 0), max(left - m, 0)
        ctx = lr[t0:top + side + m, l0:left + side + m]
        cut = lambda sr: sr[(top - t0) * SCALE:(top - t0 + side) * SCALE, (left - l0) * SCALE:(left - l0 + side) * SCALE]  # noqa: E731
        tiles = [labelled(cv2.resize(lr[top:top + side, left:left + side], None, fx=SCALE, fy=SCALE,
                                     interpolation=cv2.INTER_NEAREST), f"LR ({recipe})")]
        bic = cut(cv2.resize(ctx, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_CUBIC))
        tiles.append(labelled(bic, f"bicubic {psnr_y(bic, hr_crop):.2f} dB"))
        for name, up in upscalers.items():
            sr = cut(up.upscale(ctx))
            tiles.append(labelled(sr, f"{labels[name]} {psnr_y(sr, hr_crop):.2f} dB"))
        tiles.append(labelled(hr_crop, "HR"))
        rows.append(np.hstack([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=255) for t in tiles]))
    sheet = np.vstack([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=255) for r in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), sheet, [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
