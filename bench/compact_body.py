"""Why low-bit QAT of Real-ESRGAN Compact lands on nearest-neighbour quality: Compact's output is its body's
output plus the nearest-upsampled input, so a body whose signal no longer carries the parent's leaves just the
skip. For each quantized model, on the centre 64x64 crop of each evaluation image: the standard deviation of the
body's output (output - nearest upsample) relative to the float parent's, and the correlation of the two.

  python bench/compact_body.py --work runs/q-realesr-animevideov3-x4 i2nq-w4a4-ptq i2nq-w3a3-ptq i2nq-w3a3-qat
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from i2nq.calib.data import read_folder
from i2nq.models import load

DEFAULT_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def crops(folder: Path, side: int = 64) -> list[torch.Tensor]:
    """The centre side x side crop of each image in `folder`, as 1x3xHxW batches."""
    out = []
    for _, img in read_folder(folder):
        h, w = img.shape[1:]
        y, x = (h - side) // 2, (w - side) // 2
        out.append(img[None, :, y:y + side, x:x + side])
    return out


def body(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x) - torch.nn.functional.interpolate(x, scale_factor=model.scale, mode="nearest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", help="job names in --work (their .safetensors)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--parent", default="realesr-animevideov3-x4")
    parser.add_argument("--eval", type=Path, default=DEFAULT_EVAL)
    args = parser.parse_args()
    parent = load(args.parent).eval()
    xs = crops(args.eval)
    ref = [body(parent, x) for x in xs]
    print("| model | body std / float's | correlation with float's body |")
    print("|---|---:|---:|")
    for job in args.jobs:
        model = load(args.work / f"{job}.safetensors").eval()
        got = [body(model, x) for x in xs]
        ratio = np.mean([float(g.std() / r.std()) for g, r in zip(got, ref)])
        corr = np.mean([float(np.corrcoef(g.flatten().numpy(), r.flatten().numpy())[0, 1]) for g, r in zip(got, ref)])
        print(f"| {job} | {ratio:.3f} | {corr:.3f} |")


if __name__ == "__main__":
    main()
