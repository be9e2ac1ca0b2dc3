"""CLI subcommands of the runtime: `i2nq upscale` and `i2nq demo` (argument parsing only)."""

from __future__ import annotations

import argparse

from i2nq.runtime.backends import BACKENDS


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `upscale`, `inspect` and `demo`."""
    up = subparsers.add_parser("upscale", help="upscale an image, a folder of images or a video",
                               description="Upscale an image (PNG, JPEG, TIFF, WebP), a folder of images or a "
                                           "video (MP4, MKV, MOV, WebM, AVI) with an I²NQ model. Without -o, "
                                           "the output goes beside the input as NAME_x4.EXT (a folder into "
                                           "FOLDER_x4/).")
    up.add_argument("input", help="image file, folder of images, or video file")
    up.add_argument("-o", "--output", default=None,
                    help="output file, or folder (a single file goes in as NAME_x4.EXT; a folder's images keep "
                         "their names); default: beside the input")
    _add_model_args(up)
    out = up.add_argument_group("outputs")
    out.add_argument("-s", "--outscale", type=float, default=None, metavar="S",
                     help="output scale, any factor: the model's scale, then a resize (INTER_AREA down, Lanczos "
                          "up), e.g. -s 2 with a x4 model (default: the model's scale)")
    out.add_argument("--suffix", default=None,
                     help="added to generated names (default: _x4, the output scale; '' keeps names)")
    out.add_argument("--format", default=None, metavar="FMT",
                     help="output format: png, jpg, webp, tif for images; mp4, mkv, mov, webm, avi for videos "
                          "(default: the input's)")
    out.add_argument("--quality", type=int, default=None, metavar="Q",
                     help="JPEG and WebP quality, 1-100 (default: 95)")
    out.add_argument("-r", "--recursive", action="store_true",
                     help="a folder: also the images in its subfolders, into the same subfolders of the output")
    out.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs (without it, a folder batch skips the outputs that exist)")
    out.add_argument("--skip-existing", action="store_true",
                     help="an output that exists is left as it is, with a note, instead of an error (folder "
                          "batches always do this)")
    run = up.add_argument_group("inference")
    run.add_argument("--tile", type=int, default=None,
                     help="max tile side in input pixels (default: from the receptive field and the memory "
                          "budget; 0: whole frames)")
    run.add_argument("--overlap", type=int, default=None,
                     help="tile margin in input pixels (default: the receptive field, exact; smaller: feathered)")
    run.add_argument("--batch", type=int, default=None,
                     help="tiles per model call (default: about 256x256 input pixels a call)")
    run.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                     help="memory a model call may take, estimated from the model before it runs: e.g. 8G, "
                          "512M; 0: no limit (default: half of this machine's memory, on the CPU)")
    run.add_argument("--fp16", action="store_true",
                     help="half precision where the device does it (a GPU with the tensorrt or torch backend)")
    up.add_argument("--max-pixels", type=_pixels, default=None, metavar="N",
                    help="largest input image or video frame, in pixels: e.g. 400M or 400000000; 0: no limit "
                         "(default: 200M, checked from the file header before decoding)")
    up.add_argument("-q", "--quiet", dest="progress", action="store_false", default=None,
                    help="no progress bars (they go to stderr, and only when it is a terminal)")
    up.add_argument("--progress", dest="progress", action="store_true",
                    help="progress bars even when stderr is not a terminal")
    up.add_argument("--verbose", action="store_true",
                    help="show TensorRT's log down to verbose messages (tensorrt backend; default: warnings)")
    video = up.add_argument_group("video")
    video.add_argument("--codec", default=None,
                       help="FFmpeg video encoder (default: libx264; mpeg4 into .avi)")
    video.add_argument("--crf", type=int, default=18, help="constant rate factor: lower is better (default: 18)")
    video.add_argument("--preset", default="medium", help="encoder speed preset (default: medium)")
    video.add_argument("--start", type=_time, default=0.0, metavar="TIME",
                       help="start this far into the video: seconds or [HH:]MM:SS[.ms] (default: 0)")
    video.add_argument("--duration", type=_time, metavar="TIME",
                       help="upscale only this long a part, e.g. a preview (default: to the end)")
    video.add_argument("--no-progress", dest="progress", action="store_false", help="the same as --quiet")
    from i2nq.runtime.scaleout_args import add_scaleout_args  # --workers, --ray (docs/scale-out.md)

    add_scaleout_args(up)
    up.set_defaults(func=_upscale)

    cmp = subparsers.add_parser("compare", help="a crop sheet and a slider page: what each model does to your input",
                                description="Upscale a crop of an image or of a video frame with bicubic and with "
                                            "each model: NAME_compare.png (side by side) and NAME_compare.html "
                                            "(a slider between bicubic and each model), to judge models before a "
                                            "long run.")
    cmp.add_argument("input", help="image or video file")
    cmp.add_argument("--model", action="append", default=None,
                     help="shipped model name, .onnx, .engine or checkpoint; repeat for more (default: default)")
    cmp.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend (default: auto)")
    cmp.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a GPU if any)")
    cmp.add_argument("-o", "--output", default=None, help="output folder (default: beside the input)")
    cmp.add_argument("--crop", type=_crop, default=None, metavar="X,Y,W[,H]",
                     help="the crop in input pixels (default: the most detailed 96 px square)")
    cmp.add_argument("--time", type=_time, default=None, metavar="TIME",
                     help="a video's frame at this time (default: the middle)")
    cmp.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    cmp.set_defaults(func=_compare)

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


def _crop(text: str) -> tuple[int, int, int, int]:
    from i2nq.runtime.compare import parse_crop

    try:
        return parse_crop(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a crop: {text!r} (X,Y,W,H or X,Y,SIDE in input pixels)") from None


def _compare(args: argparse.Namespace) -> int:
    from i2nq.runtime.compare import compare

    sheet, page = compare(args.input, args.model or ["default"], args.output, backend=args.backend,
                          device=args.device, crop=args.crop, at=args.time, overwrite=args.overwrite)
    print(f"wrote {sheet} and {page}")
    return 0


def _size(text: str) -> int:
    """Bytes from '8G', '512M', '0' (no limit)."""
    from i2nq.runtime.memory import parse_size

    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (e.g. 8G, 512M or 0)") from None


def _upscale(args: argparse.Namespace) -> int:
    import sys

    from i2nq.runtime.backends.tensorrt import TensorRTOptions
    from i2nq.runtime.image_io import DEFAULT_MAX_PIXELS
    from i2nq.runtime.scaleout_args import scaleout_kwargs
    from i2nq.runtime.upscaler import FolderResult, upscale

    def failed(path, message: str) -> None:  # a folder batch goes on past a bad image: one line for it
        print(f"i2nq: error: {message}", file=sys.stderr, flush=True)

    skipped = []

    # --tile/--batch size a static engine, as without options; --verbose adds TensorRT's log.
    trt = TensorRTOptions(tile=(args.tile, args.tile) if args.tile else None, batch=args.batch, verbose=True,
                          fp16=True if args.fp16 else None) if args.verbose else None
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    max_memory = "auto" if args.max_memory is None else args.max_memory
    out = upscale(args.input, args.output, model=args.model, backend=args.backend, device=args.device, tile=args.tile,
                  overlap=args.overlap, batch=args.batch, overwrite=args.overwrite, max_pixels=max_pixels,
                  on_error=failed, tensorrt=trt, outscale=args.outscale, max_memory=max_memory, fp16=args.fp16,
                  progress=args.progress, suffix=args.suffix, format=args.format, quality=args.quality,
                  recursive=args.recursive, skip_existing=args.skip_existing, codec=args.codec, crf=args.crf,
                  preset=args.preset, start=args.start, duration=args.duration, on_skip=skipped.append,
                  **scaleout_kwargs(args))
    if isinstance(out, FolderResult):
        print(out.summary())
    elif skipped:
        print(f"skipped {out}: it exists (--overwrite replaces it)")
    else:
        print(f"wrote {out}")
    return 0


def _inspect(args: argparse.Namespace) -> None:
    import json

    from i2nq.runtime.inspect import describe, inspect_model

    info = inspect_model(args.model)
    print(json.dumps(info, indent=1) if args.json else describe(info))


def _demo(args: argparse.Namespace) -> None:
    from i2nq.runtime.demo import run_demo

    print(run_demo(args.out, model=args.model, backend=args.backend, device=args.device, overwrite=args.overwrite))
