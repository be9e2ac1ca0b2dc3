"""ONNX export benchmark: file size, ONNX Runtime CPU latency of the I²NQ export against the float export
of the same architecture (the quantized model with float convolutions in place of its quantized ones), for the
NUQuant function bodies and at several input sizes, including the tile the runtime really uses; each body's
exactness; and the agreement of the portable export with torch on real photos.

Latencies are medians over `--runs` rounds in which every model runs once (interleaved, so load from
other processes hits all models alike); overheads are ratios measured in the same run.

  python bench/bench_export.py                      # edsr-small x4, W4A4 calibrated on photos, 2 threads
  python bench/bench_export.py --model runs/q/i2nq-w4a4-qat.safetensors --sizes 128,256,512,tile --runs 7
  python bench/bench_export.py --model default --bodies grid,tree,select --sizes 128 --body-costs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import ModelProto
import torch

from i2nq.export import to_onnx, verify_onnx
from i2nq.export.ops import NUQUANT_BODIES, nuquant_function
from i2nq.models import build, load
from i2nq.quant import I2NQConfig, calibrate_, nuquant_ref, quantize_

EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def photos(size: int) -> list[np.ndarray]:
    """Centre crops of the public evaluation photos (or scikit-image's when that set is absent)."""
    if EVAL.is_dir():
        import cv2

        images = [cv2.imread(str(p))[..., ::-1] for p in sorted(EVAL.glob("*")) if p.suffix in (".png", ".jpg")]
    else:
        from skimage import data

        images = [data.astronaut(), data.coffee(), data.chelsea()]
    out = []
    for img in images:
        top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        crop = img[top:top + size, left:left + size].transpose(2, 0, 1)[None]
        out.append(np.ascontiguousarray(crop, np.float32) / 255)
    return out


def float_twin(quant: torch.nn.Module) -> torch.nn.Module:
    """The same network with float convolutions (its float shadow weights) where it has quantized ones."""
    import copy

    from i2nq.quant import quantized_sites

    twin = copy.deepcopy(quant)
    for name, q in list(quantized_sites(twin)):
        conv = torch.nn.Conv2d(q.weight.shape[1] * q.groups, q.weight.shape[0], q.weight.shape[2:], q.stride,
                               q.padding, q.dilation, q.groups, bias=q.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(q.weight)
            if q.bias is not None:
                conv.bias.copy_(q.bias)
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent) if parent else twin, child, conv)
    twin.quant_config = None
    return twin.eval()


def models(path: str | None, scale: int, bits: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(float, quantized) models of one arch: a checkpoint and its float twin, or a float model quantized
    and calibrated here on photo crops. Untrained weights are perturbed so that the zero-initialized tail
    does not hide the body; latency and size do not depend on training."""
    if path:
        quant = load(path)
        return float_twin(quant), quant
    torch.manual_seed(0)
    quant = build("edsr-small", scale)
    with torch.no_grad():
        for p in quant.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    quantize_(quant, I2NQConfig(bits=bits))
    calibrate_(quant, [torch.from_numpy(x) for x in photos(48)])
    return float_twin(quant), quant.eval()


def session(proto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def single_node(body: str, levels: np.ndarray, shape: list) -> ModelProto | None:
    """One NUQuant node with the given body over an input of `shape` (None: the body cannot take these levels)."""
    from onnx import TensorProto, helper

    from i2nq.export.ops import DOMAIN, ML_DOMAIN, ML_OPSET, body_attributes, custom_node, grid_comparisons

    comparisons = grid_comparisons([levels]) if body == "grid" else 1
    if comparisons is None:
        return None  # the export would fall back to the tree body
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
          for name, dims in (("x", shape), ("levels", [len(levels)]), ("y", shape))]
    node = custom_node("NUQuant", ["x", "levels"], ["y"], "q", **body_attributes(body, levels, comparisons))
    return helper.make_model(helper.make_graph([node], "g", io[:2], io[2:]),
                             opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1),
                                            helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
                             functions=[nuquant_function(len(levels), 18, body, comparisons)], ir_version=8)


def body_is_exact(body: str, levels: np.ndarray) -> bool:
    """The body alone on levels, thresholds, their neighbours, +-inf, NaN and noise vs nuquant_ref."""
    from i2nq.export.ops import float32_thresholds

    t = float32_thresholds(levels)
    x = np.concatenate([levels, t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), [np.inf, -np.inf, np.nan],
                        np.random.default_rng(0).standard_normal(10000).astype(np.float32)]).astype(np.float32)[None]
    proto = single_node(body, levels, ["a", "b"])
    if proto is None:
        return False
    got = session(proto, 1).run(None, {"x": x, "levels": levels})[0]
    want = nuquant_ref(torch.from_numpy(x), torch.from_numpy(levels)).numpy()
    return np.array_equal(got.view(np.uint32), want.view(np.uint32))


def body_costs(levels: np.ndarray, bodies: list[str], threads: int, runs: int, channels: int) -> None:
    """ns per element of each NUQuant body alone, on a 1 x channels x 192 x 192 activation spread over the
    codebook's range (interleaved rounds, median)."""
    shape = [1, channels, 192, 192]
    lo, hi = float(levels[0]), float(levels[-1])
    x = np.random.default_rng(1).uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), shape).astype(np.float32)
    sessions = {b: session(p, threads) for b in bodies if (p := single_node(b, levels, shape)) is not None}
    times: dict[str, list[float]] = {b: [] for b in sessions}
    for _ in range(runs + 1):
        for b, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {"x": x, "levels": levels})
            times[b].append(time.perf_counter() - start)
    print(f"\nNUQuant body alone, {'x'.join(map(str, shape))} float32, ns per element (median of {runs}):")
    print("| body | ns/element |\n|---|---:|")
    for b, t in times.items():
        print(f"| {b} | {1e9 * float(np.median(t[1:])) / x.size:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="quantized checkpoint (default: edsr-small calibrated here)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--sizes", default="128",
                        help="comma-separated input sides; 'tile' is the runtime's default tile for this model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bodies", default=",".join(NUQUANT_BODIES))
    parser.add_argument("--body-costs", action="store_true",
                        help="also time each NUQuant body alone on one activation of the model's width")
    args = parser.parse_args()

    from i2nq.runtime.tiler import default_batch, default_overlap, default_tile

    float_model, quant = models(args.model, args.scale, args.bits)
    bodies = args.bodies.split(",")
    protos = {"float": to_onnx(float_model), **{b: to_onnx(quant, _nuquant_body=b) for b in bodies}}
    info = quant.info
    tile = default_tile(default_overlap(info.receptive_field))
    print(f"# ONNX export: {info.arch} x{info.scale} {info.bits}, ONNX Runtime {ort.__version__} CPU, "
          f"{args.threads} threads, median of {args.runs} interleaved rounds\n")

    sizes = {"float": len(protos["float"].SerializeToString()), "i2nq": len(protos[bodies[0]].SerializeToString()),
             "i2nq tensorrt": len(to_onnx(quant, flavor="tensorrt").SerializeToString())}
    print("| file | bytes | vs float |\n|---|---:|---:|")
    for name, size in sizes.items():
        print(f"| {name} | {size} | {size / sizes['float']:.3f} |")

    levels = next(m.act_quant.codebook.levels().detach().numpy() for m in quant.modules() if hasattr(m, "act_quant"))
    exact = {b: "yes" if body_is_exact(b, levels) else "no" for b in bodies}
    sessions = {name: session(p, args.threads) for name, p in protos.items()}
    print("\n| input | float ms | " + " | ".join(f"{b} ms ({exact[b]} exact) | {b} vs float" for b in bodies)
          + " |\n|---|---:|" + "---:|---:|" * len(bodies))
    for side in args.sizes.split(","):
        n, h = (default_batch((tile, tile)), tile) if side == "tile" else (1, int(side))
        x = np.concatenate([photos(h)[0]] * n)
        for s in sessions.values():
            s.run(None, {"input": x})
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.runs):
            for name, s in sessions.items():
                start = time.perf_counter()
                s.run(None, {"input": x})
                times[name].append(time.perf_counter() - start)
        base = float(np.median(times["float"]))
        label = f"{n}x3x{h}x{h}" + (" (runtime tile)" if side == "tile" else "")
        cells = " | ".join(f"{1e3 * float(np.median(times[b])):.1f} | {float(np.median(times[b])) / base:.2f}x"
                           for b in bodies)
        print(f"| {label} | {1e3 * base:.1f} | {cells} |", flush=True)

    if args.body_costs:
        width = next(m.weight.shape[1] for m in quant.modules() if hasattr(m, "act_quant"))
        body_costs(levels, bodies, args.threads, args.runs, width)

    report = verify_onnx(protos[bodies[0]], quant, inputs=photos(64), runtimes=("onnxruntime",))
    print(f"\nportable export ({bodies[0]} body) vs torch on {len(report.rows)} photo crops of 64x64, ONNX Runtime:")
    for line in report.lines():
        print("    " + line)


if __name__ == "__main__":
    main()
