"""Runtime benchmark on the CPU: tiled vs whole-frame throughput, video end-to-end vs model-only frames/s,
and peak memory for a large frame. Every number is a ratio or a measurement from this one run.

Model: --model, else the shipped `default` ONNX export, else an untrained edsr-small x4 exported here
with torch (speed does not depend on the weights). Writes nothing into the repository.

    python bench/bench_runtime.py [--model M] [--size 640x480] [--repeats 3] [--parts tiling,video,memory]
    python bench/bench_runtime.py --parts tiles --tiles 64,96,128 --size 384x384   # tile size vs throughput
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from i2nq.assets import MODELS, sample
from i2nq.runtime import Upscaler
from i2nq.runtime.tiler import Tiler


def bench_model(folder: Path) -> Path:
    """The shipped default export, or an untrained edsr-small x4 exported with torch into `folder`."""
    if (MODELS / "default.onnx").is_file():
        return MODELS / "default.onnx"
    import onnx
    import torch

    from i2nq.models import build

    model = build("edsr-small", 4).eval()
    path = folder / "edsr-small-x4-untrained.onnx"
    axes = {"input": {0: "N", 2: "H", 3: "W"}, "output": {0: "N", 2: "H4", 3: "W4"}}
    torch.onnx.export(model, (torch.rand(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    info = model.info
    onnx.helper.set_model_props(proto, {"i2nq.arch": info.arch, "i2nq.scale": str(info.scale), "i2nq.bits": info.bits,
                                        "i2nq.receptive_field": str(info.receptive_field)})
    onnx.save(proto, str(path))
    return path


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_tiling(model: Path, width: int, height: int, repeats: int) -> dict:
    """Median seconds for whole-frame and default-tiled runs (interleaved), and their agreement."""
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = (image.astype(np.float32) * 0.3 + np.linspace(0, 170, width)[None, :, None]).astype(np.uint8)
    tiled = Upscaler(model, device="cpu")
    whole = Tiler(tiled.backend, tile=0)
    whole.run([image[:32, :32]]), tiled.tiler.run([image[:32, :32]])  # warm up
    t_whole, t_tiled, outs = [], [], {}
    for _ in range(repeats):
        t_whole.append(timed(lambda: outs.__setitem__("whole", whole.run([image])[0])))
        t_tiled.append(timed(lambda: outs.__setitem__("tiled", tiled.upscale(image))))
    diff = np.abs(outs["tiled"].astype(np.int16) - outs["whole"])
    return {"size": f"{width}x{height}", "tile": tiled.tiler.tile, "batch": tiled.tiler.batch,
            "overlap": tiled.tiler.overlap, "tiles": tiled.tiler.tiles_per_frame(height, width),
            "whole_s": statistics.median(t_whole), "tiled_s": statistics.median(t_tiled),
            "throughput_ratio": statistics.median(t_whole) / statistics.median(t_tiled),
            "max_diff": int(diff.max()), "frac_off": float((diff > 0).mean())}


def bench_tiles(model: Path, width: int, height: int, repeats: int, sides: list[int | None]) -> list[dict]:
    """Throughput of tile sides (None: the default) with their default batch, as ratios to the default tile
    (median seconds, runs interleaved against drifting load); and the memory guard's estimate of one call."""
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    ups = [Upscaler(model, device="cpu", tile=side) for side in sides]
    for up in ups:
        up.upscale(image[:64, :64])  # warm up
    times: list[list[float]] = [[] for _ in ups]
    for _ in range(repeats):
        for up, t in zip(ups, times):
            t.append(timed(lambda: up.upscale(image)))
    base = statistics.median(times[0 if sides[0] is None else sides.index(None)])
    rows = []
    for side, up, t in zip(sides, ups, times):
        plan_rows, plan_cols = up.tiler.plan(height, width)  # pixels the model computes, margins included
        model_px = len(plan_rows.starts) * plan_rows.tile * len(plan_cols.starts) * plan_cols.tile
        rows.append({"tile": up.tiler.tile[0], "batch": up.tiler.batch, "default": side is None,
                     "seconds": statistics.median(t), "ratio": base / statistics.median(t), "model_px": model_px,
                     "estimate_mb": (up.tiler.memory(up.tiler.batch, *up.tiler.tile) or 0) / 2**20})
    default_px = next(r["model_px"] for r in rows if r["default"])
    for r in rows:  # throughput per pixel the model computes: the per-call cost, without the margins' share
        r["model_px_ratio"] = r["ratio"] * r["model_px"] / default_px
    return rows


def bench_video(model: Path, clip: Path, folder: Path) -> dict:
    """Model-only frames/s on the decoded frames vs end-to-end frames/s of upscale_video on the same clip."""
    upscaler = Upscaler(model, device="cpu")
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    per_call = max(1, upscaler.tiler.batch // upscaler.tiler.tiles_per_frame(*frames[0].shape[:2]))
    upscaler.tiler.run(frames[:per_call])  # warm up

    def model_only() -> float:
        return timed(lambda: [upscaler.tiler.run(frames[i:i + per_call]) for i in range(0, len(frames), per_call)])

    before = model_only()  # model-only runs on both sides of the end-to-end run, against drifting CPU load
    e2e_s = timed(lambda: upscaler.upscale_video(clip, folder / "out.mp4", progress=False, overwrite=True))
    model_s = (before + model_only()) / 2
    return {"clip": clip.name, "frames": len(frames), "model_fps": len(frames) / model_s,
            "e2e_fps": len(frames) / e2e_s, "e2e_ratio": model_s / e2e_s}


MEMORY_PROBE = """
import json, sys, numpy as np
from i2nq.runtime import Upscaler
model, side, real_batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
upscaler = Upscaler(model, device="cpu")
backend, calls, last = upscaler.backend, [0], {}
run = backend.run
def first_batches(x):  # real inference on the first batches; afterwards reuse (tiling and stitching still run)
    calls[0] += 1
    if calls[0] <= real_batches or x.shape not in last:
        last[x.shape] = run(x)
    return last[x.shape]
backend.run = first_batches
image = np.full((side, side, 3), 128, np.uint8)
out = upscaler.upscale(image)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"side": side, "peak_rss_mb": peak / 2**20, "frame_arrays_mb": (image.nbytes + out.nbytes) / 2**20,
                  "tile": upscaler.tiler.tile, "batch": upscaler.tiler.batch, "batches": calls[0]}))
"""


def bench_memory(model: Path, sides: list[int], real_batches: int) -> list[dict]:
    """Peak RSS (VmHWM) of a fresh process upscaling one side x side frame with the default tile and batch."""
    rows = []
    for side in sides:
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(model), str(side), str(real_batches)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout)
        row["overhead_mb"] = row["peak_rss_mb"] - row["frame_arrays_mb"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--size", default="640x480", help="frame size for tiled vs whole (WxH)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip", type=Path, default=None, help="video (default: the shipped sample clip)")
    parser.add_argument("--parts", default="tiling,video,memory", help="comma-separated parts to run")
    parser.add_argument("--tiles", default="64,96,128", help="tile sides for the 'tiles' part (with the default)")
    parser.add_argument("--memory-size", type=int, default=8000, help="side of the large frame")
    parser.add_argument("--real-batches", type=int, default=3, help="batches really inferred in the memory probe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or bench_model(Path(tmp))
        print(f"model: {model}")
        parts = set(args.parts.split(","))
        if "tiling" in parts:
            width, height = map(int, args.size.split("x"))
            t = bench_tiling(model, width, height, args.repeats)
            print(f"tiled vs whole ({t['size']}, tile {t['tile']}, overlap {t['overlap']}, batch {t['batch']}, "
                  f"{t['tiles']} tiles): whole {t['whole_s']:.2f} s, tiled {t['tiled_s']:.2f} s -> throughput ratio "
                  f"{t['throughput_ratio']:.2f}x; max diff {t['max_diff']} levels, {100 * t['frac_off']:.3f}% off")
        if "tiles" in parts:
            width, height = map(int, args.size.split("x"))
            sides = [None] + [int(t) for t in args.tiles.split(",")]
            for r in bench_tiles(model, width, height, args.repeats, sides):
                print(f"tile {r['tile']}{' (default)' if r['default'] else ''}, batch {r['batch']} ({width}x{height}): "
                      f"{r['seconds']:.2f} s -> throughput ratio {r['ratio']:.2f}x the default; model pixels "
                      f"{r['model_px']} (margins included) -> {r['model_px_ratio']:.2f}x the default's rate per model "
                      f"pixel; estimated call memory {r['estimate_mb']:.0f} MiB")
        if "video" in parts:
            v = bench_video(model, args.clip or sample("sample.mp4"), Path(tmp))
            print(f"video ({v['clip']}, {v['frames']} frames): model-only {v['model_fps']:.2f} fps, end-to-end "
                  f"{v['e2e_fps']:.2f} fps -> ratio {v['e2e_ratio']:.2f}x")
        if "memory" in parts:
            for m in bench_memory(model, [args.memory_size // 4, args.memory_size], args.real_batches):
                print(f"memory {m['side']}x{m['side']} (tile {m['tile']}, batch {m['batch']}, {m['batches']} "
                      f"batches, first {args.real_batches} inferred): peak RSS {m['peak_rss_mb']:.0f} MiB = frame "
                      f"arrays {m['frame_arrays_mb']:.0f} MiB + {m['overhead_mb']:.0f} MiB")

if __name__ == "__main__":
    main()
