"""The scale-out options of `i2nq upscale` (--workers, --ray, --segment-seconds); no Ray import here."""

from __future__ import annotations

import argparse

from i2nq.errors import I2NQError


def add_scaleout_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale-out on Ray (pip install 'i2nq[ray]'; docs/scale-out.md)")
    group.add_argument("--workers", type=_count, metavar="N",
                       help="upscale on N workers of a local Ray cluster started for the job (with --ray: N workers "
                            "on that cluster); videos are cut into segments at keyframes, resumable after a crash")
    group.add_argument("--ray", metavar="ADDRESS",
                       help="join a running Ray cluster (ray start --head), e.g. auto or 10.0.0.1:6379; one worker "
                            "per GPU (or per CPU) unless --workers says otherwise")
    group.add_argument("--segment-seconds", type=_seconds, metavar="S",
                       help="length of the video segments, cut at keyframes (default: 6, at least one per worker)")


def scaleout_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of i2nq.runtime.upscaler.upscale for the options given: none without them."""
    if args.workers is None and args.ray is None:
        if args.segment_seconds is not None:
            raise I2NQError("--segment-seconds cuts videos for --workers or --ray; give one of them")
        return {}
    out = {"workers": args.workers, "ray_address": args.ray}
    if args.segment_seconds is not None:
        out["segment_seconds"] = args.segment_seconds
    return out


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a worker count: {text!r} (1 or more)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a segment length: {text!r} (seconds > 0)")
    return value
