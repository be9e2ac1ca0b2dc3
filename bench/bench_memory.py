"""Peak memory of `Upscaler.upscale_file` (PNG in, PNG out) for large images, this tree against an earlier commit.

Model: a stand-in, built here with onnx.helper: x4 nearest-neighbour upscaling (one Resize node) with i2nq
metadata, so the numbers are about the runtime's buffers (decoded input, tile batches, the output frame or
band, the encoder), not about a network's activations. Each measurement runs in a fresh process: peak RSS is
that process's VmHWM (not ru_maxrss, which on Linux also counts the parent's high-water mark from before exec),
and `loaded` is its RSS after imports and model load, before the image is read.

    python bench/bench_memory.py [--sizes 2000,4000,8000] [--before 2ed0e8d] [--out bench-out/memory]

--before REF also measures the code of commit REF (git archive of its i2nq/ into a temp folder, run with
PYTHONPATH pointing there). Writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import i2nq
from i2nq.runtime import Upscaler
assert str(Path(i2nq.__file__).resolve()).startswith(str(Path(sys.argv[1]).resolve())), i2nq.__file__

def status_mib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024

upscaler = Upscaler(sys.argv[2], device="cpu")
loaded = status_mib("VmRSS")
start = time.perf_counter()
upscaler.upscale_file(sys.argv[3], sys.argv[4])
seconds = time.perf_counter() - start
print(json.dumps(dict(loaded_mib=loaded, peak_mib=status_mib("VmHWM"),
                      seconds=seconds, tile=list(upscaler.tiler.tile), batch=upscaler.tiler.batch)))
"""


def stand_in_model(path: Path, scale: int = 4) -> Path:
    """x`scale` nearest-neighbour upscaling as an i2nq ONNX export (receptive field 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scales = numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales")
    graph = helper.make_graph([helper.make_node("Resize", ["input", "", "scales"], ["output"], mode="nearest")],
                              "nearest", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
                              [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    helper.set_model_props(model, {"i2nq.arch": "nearest", "i2nq.scale": str(scale), "i2nq.bits": "fp32",
                                   "i2nq.receptive_field": "0"})
    onnx.save(model, str(path))
    return path


def test_image(path: Path, side: int) -> Path:
    """A side x side photo-like PNG: smooth gradients plus a little noise (compresses like a photo)."""
    rng = np.random.default_rng(side)
    yy, xx = np.ogrid[:side, :side]
    image = np.empty((side, side, 3), np.uint8)
    for c in range(3):
        base = (np.sin(xx / (37.0 + 11 * c)) + np.cos(yy / (53.0 + 7 * c))) * 60 + 128
        image[..., c] = np.clip(base + rng.integers(-6, 7, (side, side)), 0, 255)
    cv2.imwrite(str(path), image)
    return path


def measure(tree: Path, model: Path, src: Path, dst: Path) -> dict:
    dst.unlink(missing_ok=True)
    result = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(model), str(src), str(dst)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return dict(error=(result.stderr.strip().splitlines() or ["?"])[-1])
    dst.unlink(missing_ok=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,4000,8000", help="input sides, comma-separated")
    parser.add_argument("--before", metavar="REF", help="also measure the i2nq/ of this git commit")
    parser.add_argument("--out", type=Path, help="work folder (default: a temp folder, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = args.out or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        model = stand_in_model(work / "nearest_x4.onnx")
        trees = {"this tree": ROOT}
        if args.before:
            old = work / "before"
            old.mkdir(exist_ok=True)
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "i2nq"], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            trees = {f"before ({args.before})": old, **trees}
        print("| input | output | code | peak RSS | RSS after load | upscale + write | tile, batch |")
        print("|---|---|---|---|---|---|---|")
        for side in (int(s) for s in args.sizes.split(",")):
            src = test_image(work / f"in_{side}.png", side)
            for name, tree in trees.items():
                r = measure(tree, model, src, work / "out.png")
                if "error" in r:
                    print(f"| {side}x{side} | {side * 4}x{side * 4} | {name} | failed: {r['error']} | | | |", flush=True)
                    continue
                print(f"| {side}x{side} | {side * 4}x{side * 4} | {name} | {r['peak_mib']:.0f} MiB | "
                      f"{r['loaded_mib']:.0f} MiB | {r['seconds']:.1f} s | {r['tile'][0]}, {r['batch']} |", flush=True)
            src.unlink()


if __name__ == "__main__":
    main()
