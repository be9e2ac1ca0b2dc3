"""GPU benchmark of the i2nq kernels and the torch CUDA path (run by bench/gpu/run_device.sh).

1. check:   kernels vs the torch reference, bit for bit (i2nq.plugins.selfcheck).
2. kernels: NUQuant / LUTDequant bandwidth on tensors of several hundred MB against a device-to-device
            copy measured in the same run (target: >= 80% of copy bandwidth).
3. model:   EDSR-baseline x4 on 540p frames, fp16: plain vs I²NQ W4A4 (activations through the kernels,
            weights dequantized once), and I²NQ with the torch reference quantizer for context
            (target: activation quantization costs <= 15% of throughput).
Writes gpu_bench.md / gpu_bench.json to --out and prints the table last. --dry-run runs every code path
on the CPU with tiny sizes and the torch reference standing in for the kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from i2nq.plugins import selfcheck  # noqa: E402
from i2nq.quant import nuquant_ref  # noqa: E402

COPY_TARGET = 0.80
MODEL_TARGET = 0.85
DRY_RUN_ARCH = dict(n_blocks=2, n_feats=16)  # the CPU dry run checks code paths, not speed: a tiny EDSR


def timer(device: str) -> Callable[[Callable[[], object]], float]:
    """Median milliseconds of fn: triton's do_bench on CUDA (CUDA events, L2 flushed), else wall clock."""
    if device == "cuda":
        try:
            from triton.testing import do_bench

            return lambda fn: float(do_bench(fn, warmup=50, rep=300, return_mode="median"))
        except ImportError:
            return lambda fn: _event_median(fn)
    return lambda fn: _wall_median(fn, reps=1)  # the CPU dry run only checks that every path runs


def _event_median(fn: Callable[[], object], reps: int = 30) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _wall_median(fn: Callable[[], object], reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_kernels(ops, device: str, numel: int, rows: list[dict]) -> None:
    """GB/s (bytes read + written) of each kernel vs a copy of the same size, fp16 then fp32."""
    half = torch.float16 if device == "cuda" else torch.float32
    for dtype, n in ((half, numel), (torch.float32, numel // 2)):
        _bench_dtype(ops, timer(device), device, dtype, n, rows)


def _bench_dtype(ops, bench: Callable, device: str, dtype: torch.dtype, n: int, rows: list[dict]) -> None:
    x = torch.randn(n, device=device, dtype=dtype)
    y = torch.empty_like(x)
    size = x.element_size()
    copy_ms = bench(lambda: y.copy_(x))
    copy_gbs = 2 * n * size / copy_ms / 1e6
    rows.append(dict(section="kernels", case=f"copy {dtype} {n * size / 1e6:.0f} MB", ms=copy_ms, gbs=copy_gbs,
                     ratio=1.0, target=None))
    for bits in (2, 4, 8):
        levels = torch.randn(1 << bits, device=device, dtype=torch.float64).sort().values.to(dtype)
        ms = bench(lambda: ops.nuquant(x, levels, out=y))
        gbs = 2 * n * size / ms / 1e6
        rows.append(dict(section="kernels", case=f"NUQuant {dtype} K={1 << bits}", ms=ms, gbs=gbs,
                         ratio=gbs / copy_gbs, target=COPY_TARGET))
    if dtype == torch.float16:
        ref_ms = bench(lambda: nuquant_ref(x, levels))
        rows.append(dict(section="kernels", case=f"torch reference {dtype} K=256", ms=ref_ms,
                         gbs=2 * n * size / ref_ms / 1e6, ratio=copy_ms / ref_ms, target=None))
    channels = 64
    shape = (channels, n // channels)
    m = channels * (n // channels)
    out = y[:m].view(shape)
    for bits in (2, 3, 4, 8):
        codes = torch.randint(0, 256, ((m * bits + 7) // 8,), device=device, dtype=torch.uint8)
        levels = torch.randn(channels, 1 << bits, device=device).sort(dim=1).values.to(dtype)
        ms = bench(lambda: ops.lut_dequant(codes, levels, bits, shape, 0, out=out))
        gbs = (m * size + codes.numel()) / ms / 1e6
        rows.append(dict(section="kernels", case=f"LUTDequant {dtype} {bits}-bit per-channel", ms=ms, gbs=gbs,
                         ratio=gbs / copy_gbs, target=COPY_TARGET))


def build_models(scale: int, device: str, dtype: torch.dtype, **arch) -> dict[str, torch.nn.Module]:
    """Plain EDSR-baseline and its I²NQ W4A4 twin, calibrated on random frames, frozen as deployed: weights
    dequantized once (as LUTDequant does), codebooks constant and the ReLUs that the zero-pinned post-ReLU
    quantizers absorb dropped (as in the exported graph).

    The one place that knows the model API; adapt here if i2nq.models / i2nq.quant change. `arch` overrides
    EDSR-baseline's size (the dry run uses a tiny one).
    """
    from i2nq.models import build
    from i2nq.models.edsr import fold_relus_
    from i2nq.quant import I2NQConfig, calibrate_, quantize_, quantized_sites

    torch.manual_seed(0)
    plain = build("edsr-baseline", scale=scale, **arch).to(device).eval()
    quant = build("edsr-baseline", scale=scale, **arch).eval()
    quant.load_state_dict(plain.state_dict())
    quantize_(quant, I2NQConfig(bits=4))
    quant.to(device)
    side = 64 if device == "cuda" else 16
    calibrate_(quant, [torch.rand(2, 3, side, side, device=device) for _ in range(2)])
    with torch.no_grad():
        for _, conv in quantized_sites(quant):
            conv.register_buffer("frozen_weight", conv.weight_quant(conv.weight).detach())
            conv.forward = types.MethodType(_frozen_forward, conv)
        quant.to(dtype)
        for _, conv in quantized_sites(quant):
            codebook = conv.act_quant.codebook
            codebook.levels = (lambda levels: lambda: levels)(codebook.levels().detach())
    return {"plain": plain.to(dtype), "i2nq": fold_relus_(quant)}


def _frozen_forward(self, x: torch.Tensor) -> torch.Tensor:
    """QuantConv2d at deployment: quantized input, weights dequantized once (as LUTDequant does)."""
    return F.conv2d(self.act_quant(x), self.frozen_weight, self.bias, self.stride, self.padding)


@contextmanager
def kernels_disabled():
    """Make the quantizers fall back to the torch reference (i2nq.quant checks torch_ops.available())."""
    from i2nq.plugins import torch_ops

    saved = torch_ops.available
    torch_ops.available = lambda: False
    try:
        yield
    finally:
        torch_ops.available = saved


def bench_model(device: str, frame: tuple[int, int], scale: int, rows: list[dict]) -> None:
    bench = timer(device)
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True
    models = build_models(scale, device, dtype, **({} if device == "cuda" else DRY_RUN_ARCH))
    x = torch.rand(1, 3, *frame, device=device, dtype=dtype)
    label = f"{frame[1]}x{frame[0]} x{scale} {dtype}"
    with torch.no_grad():
        plain_ms = bench(lambda: models["plain"](x))
        rows.append(dict(section="model", case=f"EDSR-baseline plain {label}", ms=plain_ms, fps=1e3 / plain_ms,
                         ratio=1.0, target=None))
        quant_ms = bench(lambda: models["i2nq"](x))
        rows.append(dict(section="model", case=f"EDSR-baseline I2NQ W4A4, kernels {label}", ms=quant_ms,
                         fps=1e3 / quant_ms, ratio=plain_ms / quant_ms, target=MODEL_TARGET))
        with kernels_disabled():
            ref_ms = bench(lambda: models["i2nq"](x))
        rows.append(dict(section="model", case=f"EDSR-baseline I2NQ W4A4, torch reference {label}", ms=ref_ms,
                         fps=1e3 / ref_ms, ratio=plain_ms / ref_ms, target=None))


def table(rows: list[dict]) -> str:
    lines = ["| section | case | median ms | GB/s or fps | ratio | target | ok |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = r.get("gbs", r.get("fps"))
        target = r.get("target")
        ok = "" if target is None else ("yes" if r["ratio"] >= target else "NO")
        lines.append(f"| {r['section']} | {r['case']} | {r['ms']:.3f} | {rate:.1f} | {r['ratio']:.3f} | "
                     f"{'' if target is None else f'>= {target:.2f}'} | {ok} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, torch reference as the kernels")
    parser.add_argument("--sections", default="check,kernels,model")
    parser.add_argument("--mb", type=int, default=512, help="kernel tensor size in MB (fp16 elements x 2)")
    parser.add_argument("--frame", type=int, nargs=2, default=(540, 960), metavar=("H", "W"))
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if args.dry_run:
        device, ops, numel, frame = "cpu", selfcheck.ReferenceOps, 4099, (24, 32)
    else:
        from i2nq.plugins import torch_ops

        if not torch_ops.available():
            print("the i2nq torch extension is not available (no CUDA or the build failed)", file=sys.stderr)
            return 1
        device, ops, numel, frame = "cuda", torch_ops, args.mb * (1 << 20) // 2 + 3, tuple(args.frame)
    rows: list[dict] = []
    failures: list[str] = []
    if "check" in sections:
        t0 = time.perf_counter()
        failures = selfcheck.run_all(ops, device, n=1001 if args.dry_run else 100_003)
        print(f"check: {len(failures)} failures in {time.perf_counter() - t0:.1f} s", *failures[:10], sep="\n")
    if "kernels" in sections:
        bench_kernels(ops, device, numel, rows)
    if "model" in sections:
        bench_model(device, frame, args.scale, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)", torch=torch.__version__,
               check_failures=failures)
    (args.out / "gpu_bench.json").write_text(json.dumps(dict(env=env, rows=rows), indent=1))
    text = f"device: {env['device']}, torch {env['torch']}, kernel check failures: {len(failures)}\n\n{table(rows)}"
    (args.out / "gpu_bench.md").write_text(text + "\n")
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
