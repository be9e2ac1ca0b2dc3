"""CLI subcommands of the runtime: `i2nq upscale` and `i2nq demo` (argument parsing only)."""

from __future__ import annotations

import argparse

from i2nq.runtime.backends import BACKENDS


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `upscale`, `inspect` and `demo`."""
    up = subparsers.add_parser("upscale", help="upscale an image, a folder of images or a video",
                               description="Upscale an image (PNG, JPEG, TIFF, WebP), a folder of images or a "
                                           "video (MP4, MKV, MOV, WebM, AVI) with an I²NQ model.")
    up.add_argument("input", help="image file, folder of images, or video file")
    up.add_argument("-o", "--output", required=True, help="output file (or folder for a folder input)")
    _add_model_args(up)
    up.add_argument("--tile", type=int, default=None,
                    help="max tile side in input pixels (default: from the receptive field; 0: whole frames)")
    up.add_argument("--overlap", type=int, default=None,
                    help="tile margin in input pixels (default: the receptive field, exact; smaller: feathered)")
    up.add_argument("--batch", type=int, default=None, help="tiles per model call (default: from the tile size)")
    up.add_argument("--overwrite", action="store_true",
                    help="replace existing outputs (without it, a folder batch skips the outputs that exist)")
    up.add_argument("--max-pixels", type=_pixels, default=None, metavar="N",
                    help="largest input image or video frame, in pixels: e.g. 400M or 400000000; 0: no limit "
                         "(default: 200M, checked from the file header before decoding)")
    up.add_argument("--verbose", action="store_true",
                    help="show TensorRT's log down to verbose messages (tensorrt backend; default: warnings)")
    video = up.add_argument_group("video")
    video.add_argument("--codec", default="libx264", help="FFmpeg video encoder (default: libx264)")
    video.add_argument("--crf", type=int, default=18, help="constant rate factor: lower is better (default: 18)")
    video.add_argument("--preset", default="medium", help="encoder speed preset (default: medium)")
    video.add_argument("--start", type=_time, default=0.0, metavar="TIME",
                       help="start this far into the video: seconds or [HH:]MM:SS[.ms] (default: 0)")
    video.add_argument("--duration", type=_time, metavar="TIME",
                       help="upscale only this long a part, e.g. a preview (default: to the end)")
    video.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    from i2nq.runtime.scaleout_args import add_scaleout_args  # --workers, --ray (docs/scale-out.md)

    add_scaleout_args(up)
    up.set_defaults(func=_upscale)

    inspect = subparsers.add_parser("inspect", help="what a model file holds: scale, bits, receptive field, sites",
                                    description="Describe a model (a shipped name, .onnx, .safetensors checkpoint or "
                                                ".engine): scale, bits, receptive field, quantized sites and "
                                                "codebooks, where the bytes go. Needs no torch.")
    inspect.add_argument("model", help="shipped model name or model file")
    inspect.add_argument("--json", action="store_true", help="print the full description as JSON")
    inspect.set_defaults(func=_inspect)

    demo = subparsers.add_parser("demo", help="upscale the shipped sample image and clip on the CPU",
                                 description="Upscale the shipped sample image and clip and compare with bicubic.")
    demo.add_argument("--out", default="i2nq-demo", help="output folder (default: ./i2nq-demo)")
    _add_model_args(demo, device="cpu")
    demo.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    demo.set_defaults(func=_demo)


def _add_model_args(parser: argparse.ArgumentParser, device: str | None = None) -> None:
    parser.add_argument("--model", default="default", help="shipped model name, .onnx, .engine or checkpoint "
                                                            "(default: default)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend (default: auto)")
    parser.add_argument("--device", default=device, help=f"cpu, cuda or cuda:N (default: {device or 'a GPU if any'})")


def _time(text: str) -> float:
    """Seconds from '90', '1.5', '01:30' or '0:01:30.25'."""
    parts = text.strip().split(":")
    try:
        if len(parts) > 3 or any(not p or p.startswith(("-", "+")) for p in parts):
            raise ValueError
        seconds = 0.0
        for p in parts:
            seconds = seconds * 60 + float(p)
        if seconds != seconds or seconds == float("inf"):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use seconds or [HH:]MM:SS[.ms])") from None
    return seconds


def _pixels(text: str) -> int:
    """Pixels from '400000000', '400M', '1.5G' or '0' (no limit)."""
    factor = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text.strip()[-1:].upper(), 1)
    number = text.strip()[:-1] if factor > 1 else text.strip()
    try:
        value = float(number) * factor
        if not 0 <= value < 1e15:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a pixel count: {text!r} (e.g. 400M, 1.5G or 400000000)") from None
    return int(value)


def _upscale(args: argparse.Namespace) -> None:
    import sys

    from i2nq.runtime.backends.tensorrt import TensorRTOptions
    from i2nq.runtime.image_io import DEFAULT_MAX_PIXELS
    from i2nq.runtime.scaleout_args import scaleout_kwargs
    from i2nq.runtime.upscaler import upscale

    def failed(path, message: str) -> None:  # a folder batch goes on past a bad image: one line for it
        print(f"i2nq: error: {message}", file=sys.stderr, flush=True)

    # --tile/--batch size a static engine, as without options; --verbose adds TensorRT's log.
    trt = TensorRTOptions(tile=(args.tile, args.tile) if args.tile else None, batch=args.batch, verbose=True) \
        if args.verbose else None
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    out = upscale(args.input, args.output, model=args.model, backend=args.backend, device=args.device, tile=args.tile,
                  overlap=args.overlap, batch=args.batch, overwrite=args.overwrite, max_pixels=max_pixels,
                  on_error=failed, tensorrt=trt, codec=args.codec, crf=args.crf, preset=args.preset,
                  progress=args.progress, start=args.start, duration=args.duration,
                  **scaleout_kwargs(args))
    print(f"wrote {out}")


def _inspect(args: argparse.Namespace) -> None:
    import json

    from i2nq.runtime.inspect import describe, inspect_model

    info = inspect_model(args.model)
    print(json.dumps(info, indent=1) if args.json else describe(info))


def _demo(args: argparse.Namespace) -> None:
    from i2nq.runtime.demo import run_demo

    print(run_demo(args.out, model=args.model, backend=args.backend, device=args.device, overwrite=args.overwrite))
