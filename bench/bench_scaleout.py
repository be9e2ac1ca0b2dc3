"""Scale-out benchmark (i2nq.DistributedUpscaler on a local Ray cluster). Every number is a ratio within this run.

- overhead: the shipped sample clip (re-encoded here with a keyframe every 0.5 s, so it can be cut) upscaled with
  the shipped `default` model by one process (2 threads) and by `--workers 2` (1 thread each), interleaved;
  throughput ratio = one process's time / the workers' time (>= 0.9 means the orchestration costs little);
- scaling: a backend stand-in that sleeps a fixed time per frame (so it costs no CPU) on 1, 2, 4, 8 and 16 local
  workers, on a clip of 16 one-second segments; speed-up over one worker, its ratio to linear, and whether every
  output is the one-worker output (same decoded frames, lossless x264).

Workers are started before the clock starts (the model is loaded once per worker); the clock runs from the job's
start to its output, join included. Needs Ray (pip install 'i2nq[ray]'). Writes nothing into the repository.

    python bench/bench_scaleout.py [--parts overhead,scaling] [--repeats 2] [--sleep 0.2] [--workers 1,2,4,8,16]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from i2nq.runtime.backends.base import Backend, ModelMeta


class SleepingBackend(Backend):
    """Nearest-neighbour upscaling that takes `seconds` per frame, sleeping (a stand-in for a busy accelerator).
    Defined in __main__, so Ray pickles it by value to its workers."""

    name = "sleeping"

    def __init__(self, scale: int, seconds: float) -> None:
        self.meta = ModelMeta("sleeping", scale, "fp32", 0)
        self.seconds = seconds

    def run(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds * x.shape[0])
        s = self.meta.scale
        return np.ascontiguousarray(x.repeat(s, axis=2).repeat(s, axis=3))


def make_clip(path: Path, frames: int, fps: int, keyint: int, size: tuple[int, int] = (64, 48)) -> Path:
    """Moving gradients, a keyframe every `keyint` frames, B-frames."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "ultrafast", "g": str(keyint),
                                                              "keyint_min": str(keyint), "bf": "2"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.stack([(xx * 4 + i * 7) % 256, (yy * 5 + i * 3) % 256, (xx + yy + i) * 2 % 256], -1)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    return path


def recut(src: Path, dst: Path, keyint: int) -> Path:
    """`src` re-encoded (visually lossless) with a keyframe every `keyint` frames; audio copied."""
    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        video = source.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate,
                                options={"crf": "12", "preset": "fast", "g": str(keyint), "keyint_min": str(keyint)})
        stream.width, stream.height, stream.pix_fmt = video.codec_context.width, video.codec_context.height, "yuv420p"
        audio = [out.add_stream_from_template(s) for s in source.streams.audio[:1]]
        for packet in source.demux(video, *source.streams.audio[:1]):
            if packet.stream.type == "video":
                for frame in packet.decode():
                    frame.pict_type = av.video.frame.PictureType.NONE
                    out.mux(stream.encode(frame))
            elif packet.dts is not None:
                packet.stream = audio[0]
                out.mux(packet)
        out.mux(stream.encode(None))
    return dst


def frames_digest(path: Path) -> tuple[int, str]:
    """Frame count and a digest of every decoded frame's planes and pts."""
    h = hashlib.sha256()
    n = 0
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            h.update(str(frame.pts).encode())
            h.update(frame.to_ndarray().tobytes())
            n += 1
    return n, h.hexdigest()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_overhead(folder: Path, repeats: int) -> dict:
    import i2nq
    from i2nq.assets import MODELS, sample

    model = MODELS / "default.onnx"
    clip = recut(sample("sample.mp4"), folder / "sample_k12.mp4", keyint=12)
    with av.open(str(clip)) as c:
        frames = c.streams.video[0].frames
    os.environ["OMP_NUM_THREADS"] = "2"  # the single process: both cores for the model
    single = i2nq.Upscaler(model, device="cpu")
    options = dict(crf=18, preset="medium", progress=False, overwrite=True)
    with i2nq.DistributedUpscaler(model, device="cpu", workers=2, threads=1) as farm:  # as `--workers 2` starts it
        one, two = [], []
        for _ in range(repeats):  # interleaved, so that a busy neighbour slows both
            one.append(timed(lambda: single.upscale_video(clip, folder / "one.mp4", **options)))
            two.append(timed(lambda: farm.upscale_video(clip, folder / "two.mp4", **options)))
        segments = farm.stats["tasks"]
    t1, t2 = statistics.median(one), statistics.median(two)
    return {"clip": f"sample.mp4 re-encoded, keyframe every 12 frames ({frames} frames)", "frames": frames,
            "one": one, "two": two, "segments": segments, "ratio": t1 / t2,
            "same_frame_count": frames_digest(folder / "one.mp4")[0] == frames_digest(folder / "two.mp4")[0]}


def bench_scaling(folder: Path, counts: list[int], sleep: float) -> dict:
    import ray

    import i2nq

    fps, seconds = 8, 16
    clip = make_clip(folder / "steps.mp4", frames=fps * seconds, fps=fps, keyint=fps)
    factory = functools.partial(SleepingBackend, 2, sleep)
    rows = []
    ray.init(num_cpus=max(counts), include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        for n in counts:
            out = folder / f"steps_{n}.mkv"
            with i2nq.DistributedUpscaler("sleeping", device="cpu", tile=0, batch=1, workers=n, threads=1,
                                          segment_seconds=1.0, backend_factory=factory) as farm:
                farm.upscale_video(clip, folder / "warmup.mkv", crf=0, preset="ultrafast", progress=False,
                                   overwrite=True, duration=0.5)
                elapsed = timed(lambda: farm.upscale_video(clip, out, crf=0, preset="ultrafast", progress=False))
                rows.append({"workers": n, "seconds": elapsed, "segments": farm.stats["tasks"],
                             "frames": frames_digest(out)})
    finally:
        ray.shutdown()
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = base / row["seconds"]
        row["of_linear"] = row["speedup"] / (row["workers"] / rows[0]["workers"])
        row["same_output"] = row["frames"] == rows[0]["frames"]
    return {"frames": fps * seconds, "sleep": sleep, "ideal_one": fps * seconds * sleep, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="overhead,scaling")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds per frame of the stand-in backend")
    parser.add_argument("--workers", default="1,2,4,8,16")
    args = parser.parse_args()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="i2nq-bench-scaleout-") as tmp:
        folder = Path(tmp)
        if "overhead" in parts:
            o = bench_overhead(folder, args.repeats)
            print(f"overhead ({o['clip']}, shipped default x4, {o['segments']} segments): one process (2 threads) "
                  f"{', '.join(f'{t:.2f}' for t in o['one'])} s; --workers 2 (1 thread each) "
                  f"{', '.join(f'{t:.2f}' for t in o['two'])} s -> throughput ratio {o['ratio']:.2f}x "
                  f"(medians); same frame count: {o['same_frame_count']}")
        if "scaling" in parts:
            s = bench_scaling(folder, [int(n) for n in args.workers.split(",")], args.sleep)
            print(f"scaling (stand-in sleeping {s['sleep']} s per frame, {s['frames']} frames of 64x48 in "
                  f"{s['rows'][0]['segments']} segments; one worker's sleeping alone: {s['ideal_one']:.1f} s):")
            for r in s["rows"]:
                print(f"  {r['workers']:2d} workers: {r['seconds']:6.2f} s, speed-up {r['speedup']:5.2f}x = "
                      f"{r['of_linear'] * 100:5.1f}% of linear; same output as 1 worker: {r['same_output']}")


if __name__ == "__main__":
    main()
