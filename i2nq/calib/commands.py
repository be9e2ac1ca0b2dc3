"""CLI: `i2nq train`, `i2nq quantize`, `i2nq eval` (argument parsing only; each is one library call)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from i2nq.errors import I2NQError
from i2nq.files import check_destination

LR_RECIPES = ("bicubic-aa", "cv2-cubic")  # i2nq.calib.data.LR_RECIPES (not imported: the CLI loads without torch)


def _out_path(path: str, overwrite: bool) -> Path:
    out = Path(path)
    if out.suffix != ".safetensors":
        raise I2NQError(f"output must be a .safetensors file: {out}")
    return check_destination(out, overwrite=overwrite)


def _train_config(args: argparse.Namespace):
    from i2nq.calib.train import TrainConfig

    return TrainConfig(steps=args.steps, batch=args.batch, lr_patch=args.patch, lr=args.lr, seed=args.seed,
                       threads=args.threads, log_every=args.log_every, lr_recipe=args.lr_recipe,
                       **({"quant_lr": args.quant_lr, "distill": args.distill, "hr_loss": args.hr_loss}
                          if hasattr(args, "distill") else {}))


def _train(args: argparse.Namespace) -> None:
    from i2nq.calib.pipeline import train_float
    from i2nq.models.registry import build

    build(args.arch, args.scale)  # validates arch and scale before any work
    train_float(args.arch, args.scale, _out_path(args.output, args.overwrite), _train_config(args), state=args.state,
                data=args.data, frames=args.frames, init=args.init)


def _quantize(args: argparse.Namespace) -> None:
    from i2nq.calib.pipeline import quantize_model
    from i2nq.models.checkpoint import load
    from i2nq.quant import I2NQConfig, UniformConfig

    cfg = (I2NQConfig(bits=args.bits, w_bits=args.w_bits, a_bits=args.a_bits, fswa=not args.no_fswa)
           if args.method == "i2nq" else UniformConfig(bits=args.bits, w_bits=args.w_bits, a_bits=args.a_bits))
    out = _out_path(args.output, args.overwrite)
    parent = load(args.model)
    if parent.quant_config:
        raise I2NQError(f"{args.model} is already quantized; start from a float checkpoint")
    if args.hr_loss is None:  # an imported parent learned its own degradations: follow it, not bicubic HR pairs
        from i2nq.models.spandrel_models import SpandrelSR

        args.hr_loss = 0.0 if isinstance(parent, SpandrelSR) else 1.0
    quantize_model(parent, cfg, out, _train_config(args), calib_batches=args.calib_batches, state=args.state,
                   data=args.data, frames=args.frames)


def _convert(args: argparse.Namespace) -> None:
    from i2nq.models.checkpoint import is_checkpoint, resolve, save
    from i2nq.models.foreign import import_checkpoint

    out = _out_path(args.output, args.overwrite)
    path = resolve(args.model)  # a file, or a model of an installed package by name
    if path.suffix.lower() == ".safetensors" and is_checkpoint(path):
        raise I2NQError(f"{args.model} is already an i2nq checkpoint; there is nothing to convert")
    imported = import_checkpoint(path, res_scale=args.res_scale, rgb_range=args.rgb_range)
    m, src = imported.model, imported.source
    save(m, out, source=src)
    if src["format"] in ("ncnn", "spandrel"):
        resize = f", then a {m.resize['mode']} resize by {m.resize['factor']:g}" if m.resize else ""
        print(f"{src['file']}: {src['format']} {src['arch']} x{m.scale}{resize} -> {out} ({m.arch})")
        return
    family = "MSRResNet" if m.arch == "srresnet" else "EDSR"
    print(f"{src['file']}: {src['format']} {family}, {m.n_blocks} blocks, {m.n_feats} features, x{m.scale}, "
          f"res_scale {src['res_scale']:g}, rgb_range {src['rgb_range']:g} -> {out} ({m.arch})")


def _eval(args: argparse.Namespace) -> None:
    from i2nq.calib.evaluate import evaluate, format_table
    from i2nq.models.checkpoint import load

    result = evaluate(load(args.model), args.hr, args.lr_recipe, load(args.reference) if args.reference else None)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


def _training_args(p: argparse.ArgumentParser, steps: int, lr: float) -> None:
    p.add_argument("-o", "--output", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=32, help="LR patch side (HR patch = patch x scale)")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--state", help="resumable training state (default: OUTPUT with .state.safetensors; resumed only by the same run)")
    p.add_argument("--data", help="training images: a folder of images or a video, e.g. the content you will "
                                  "upscale (default: scikit-image's photographs)")
    p.add_argument("--frames", type=int, default=32, help="frames taken evenly from a --data video (default: 32)")
    p.add_argument("--lr-recipe", choices=("bicubic-aa", "cv2-cubic", "mixed"), default="bicubic-aa",
                   help="how LR training patches are made from the HR images: antialiased bicubic (the SR "
                        "literature's), OpenCV INTER_CUBIC (aliased, as many small images are made), or mixed: both")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a float SR model on scikit-image's photographs (resumable)")
    p.add_argument("--arch", default="edsr-small", help="edsr-small (default), edsr-baseline, edsr or srresnet")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--init", help="fine-tune this float checkpoint of the same arch and scale instead of starting "
                                  "from scratch")
    _training_args(p, steps=4000, lr=1e-3)
    p.set_defaults(func=_train)

    p = sub.add_parser("convert", help="import float weights: Real-ESRGAN, SPAN, ESRGAN and other spandrel architectures "
                                       "(.pth, .safetensors, ncnn .param/.bin, packaged models by name), EDSR, MSRResNet")
    p.add_argument("model", help="weights (.pth, .pt, .ckpt, .safetensors), an ncnn .param (with its .bin beside it), or "
                                 "a model of an installed package by name (realesr-animevideov3-x4, spanx4_ch48, ...)")
    p.add_argument("-o", "--output", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--res-scale", type=float, help="residual scaling (not stored in the weights; default: "
                   "0.1 for 256 features, else 1)")
    p.add_argument("--rgb-range", type=float, help="pixel range the model was trained on (default: from "
                   "EDSR-PyTorch's MeanShift layers; 255 for BasicSR)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_convert)

    p = sub.add_parser("quantize", help="float checkpoint -> calibrated, QAT-trained I²NQ (or uniform) model")
    p.add_argument("model", help="float model: name, .safetensors checkpoint or EDSR/MSRResNet weights (see convert)")
    p.add_argument("--method", choices=("i2nq", "uniform"), default="i2nq")
    p.add_argument("--bits", type=int, default=4, help="weight and activation bits (2, 3, 4 or 8)")
    p.add_argument("--w-bits", type=int, help="weight bits (overrides --bits)")
    p.add_argument("--a-bits", type=int, help="activation bits (overrides --bits)")
    p.add_argument("--no-fswa", action="store_true", help="max-abs per-channel weight scales, not learned")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--quant-lr", type=float, default=1e-3, help="learning rate of levels, scales and clips")
    p.add_argument("--distill", type=float, default=1.0, help="weight of L1 to the float parent's output")
    p.add_argument("--hr-loss", type=float, default=None,
                   help="weight of L1 to the HR image (default: 1 for i2nq's own archs; 0 for imported models such "
                        "as Real-ESRGAN or SPAN, which learn from their float parent alone: they were trained for "
                        "their own degradations, not the bicubic downscale the HR term teaches)")
    _training_args(p, steps=300, lr=1e-4)
    p.set_defaults(func=_quantize)

    p = sub.add_parser("eval", help="Y-PSNR/SSIM on a folder of HR images against bicubic")
    p.add_argument("--model", required=True, help="model name or checkpoint")
    p.add_argument("--hr", required=True, help="folder of HR images")
    p.add_argument("--lr-recipe", choices=LR_RECIPES, default="bicubic-aa",
                   help="how LR images are made: bicubic-aa (antialiased bicubic, as the SR literature; default) or "
                        "cv2-cubic (OpenCV INTER_CUBIC, aliased)")
    p.add_argument("--reference", help="also report the Y-PSNR of the model's output against this model's (e.g. the "
                                       "float parent of a quantized model: its fidelity)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_eval)
