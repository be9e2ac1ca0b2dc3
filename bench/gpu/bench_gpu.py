"""GPU benchmark of the i2nq kernels and the torch CUDA path (run by bench/gpu/run_device.sh).

1. check:   kernels vs the torch reference, bit for bit (i2nq.plugins.selfcheck).
2. kernels: NUQuant / LUTDequant bandwidth on tensors of several hundred MB against a device-to-device
            copy measured in the same run (target: >= 80% of copy bandwidth).
3. model:   EDSR-baseline x4 on 540p frames, fp16: plain vs I²NQ W4A4 (activations through the kernels,
            weights dequantized once), and I²NQ with the torch reference quantizer for context
            (target: activation quantization costs <= 15% of throughput).
4. hints:   the kernels with streaming cache hints (__ldcs/__stcs, the default) vs plain 16-byte loads and
            stores (a second build of the extension with -DI2NQ_STREAMING_HINTS=0), both timed in this run,
            alternating; ratio = time without hints / time with (> 1: the hints help). Outputs compared too.
5. arch:    the default-architecture builds: the extension with torch's default architectures
            (TORCH_CUDA_ARCH_LIST unset) and the TensorRT plugin library with CMake's default (no
            CMAKE_CUDA_ARCHITECTURES; i2nq/plugins/cuda_arch.cmake), what they were built for (cuobjdump) and
            whether their kernels run on this GPU (the extension: the kernel check on a few cases; the plugin:
            its i2nqCheckDevice). Without TensorRT headers the plugin is only configured (a stand-in header).
The extra builds run as subprocesses beside the main extension's build; timing starts when all are done.
Writes gpu_bench.md / gpu_bench.json to --out after every section and prints the table last. --dry-run runs
every code path on the CPU with tiny sizes and the torch reference standing in for the kernels (no builds).

TODO(tensorrt): the tensorrt-flavor comparison (Conv weights as fp16 constants vs LUTDequant at run time, in a
TensorRT engine) needs TensorRT, which the lent GPU machine's image does not have: not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def bench_hints(on, off, device: str, numel: int, rows: list[dict]) -> list[str]:
    """Each kernel case timed with the hints build (`on`) and the plain build (`off`) in turn, twice each; the
    outputs of the two builds must be identical. Returns mismatches."""
    bench = timer(device)
    half = torch.float16 if device == "cuda" else torch.float32
    mismatches = []
    cases = []
    for dtype, n in ((half, numel), (torch.float32, numel // 2)):
        x = torch.randn(n, device=device, dtype=dtype)
        for k in (16, 256):
            levels = torch.randn(k, device=device, dtype=torch.float64).sort().values.to(dtype)
            cases.append((f"NUQuant {dtype} K={k}", 2 * n * x.element_size(),
                          lambda ops, x=x, levels=levels, y=torch.empty_like(x): ops.nuquant(x, levels, out=y)))
        channels = 64
        shape, m = (channels, n // channels), channels * (n // channels)
        for bits in (2, 4):
            codes = torch.randint(0, 256, ((m * bits + 7) // 8,), device=device, dtype=torch.uint8)
            levels = torch.randn(channels, 1 << bits, device=device).sort(dim=1).values.to(dtype)
            cases.append((f"LUTDequant {dtype} {bits}-bit per-channel", m * x.element_size() + codes.numel(),
                          lambda ops, codes=codes, levels=levels, bits=bits, shape=shape,
                          w=torch.empty(shape, device=device, dtype=dtype): ops.lut_dequant(codes, levels, bits, shape,
                                                                                           0, out=w)))
    for case, nbytes, fn in cases:
        if not torch.equal(fn(on).clone(), fn(off)):
            mismatches.append(f"hints: {case}: the builds with and without hints disagree")
        times: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(2):
            for name, ops in (("on", on), ("off", off)):
                times[name].append(bench(lambda: fn(ops)))
        on_ms, off_ms = statistics.median(times["on"]), statistics.median(times["off"])
        rows.append(dict(section="hints", case=f"{case}: with / without streaming hints", ms=on_ms, ms_off=off_ms,
                         gbs=nbytes / on_ms / 1e6, ratio=off_ms / on_ms, target=None))
    return mismatches


# --- builds: the extension without hints, the default-architecture builds (subprocesses, in parallel) -----------

BUILDS = {"nohints": "hints", "defaultarch": "arch", "plugin": "arch"}  # build -> the section that needs it


def start_builds(out: Path, sections: set[str]) -> dict[str, tuple[subprocess.Popen, float]]:
    """Start the builds the sections need, each `bench_gpu.py --build NAME` in its own process."""
    started = {}
    for name, section in BUILDS.items():
        if section not in sections:
            continue
        env = dict(os.environ)
        if name == "defaultarch":
            env.pop("TORCH_CUDA_ARCH_LIST", None)  # torch's default: the architectures of the visible GPUs
        log = open(out / f"build-{name}.log", "w")
        started[name] = (subprocess.Popen([sys.executable, __file__, "--build", name, "--out", str(out)], env=env,
                                          stdout=log, stderr=subprocess.STDOUT), time.perf_counter())
    return started


def finish_builds(started: dict[str, tuple[subprocess.Popen, float]], out: Path, timeout: float) -> dict[str, dict]:
    results = {}
    for name, (proc, t0) in started.items():
        try:
            rc = proc.wait(max(1.0, timeout - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        result_file = out / f"build-{name}.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else {"ok": False}
        results[name] = dict(result, rc=rc, seconds=round(time.perf_counter() - t0, 1))
    return results


def _cuobjdump(path: str | None) -> list[str] | None:
    """The sm_XX of the cubins in a binary (cuobjdump --list-elf), or None without cuobjdump."""
    from i2nq.plugins.library import find_nvcc

    nvcc = find_nvcc()
    tool = shutil.which("cuobjdump") or (nvcc and shutil.which("cuobjdump", path=str(Path(nvcc).resolve().parent)))
    if not tool or not path:
        return None
    listing = subprocess.run([tool, "--list-elf", path], capture_output=True, text=True, timeout=120).stdout
    return sorted(set(re.findall(r"sm_\d+a?", listing)))


def _torch_arch_flags() -> list[str] | None:
    try:
        from torch.utils.cpp_extension import _get_cuda_arch_flags  # private, but what load() passes to nvcc

        return _get_cuda_arch_flags()
    except Exception:
        return None


def build_one(name: str, out: Path) -> dict:
    """One build (run in its own process by start_builds); the result is also written to build-NAME.json."""
    from i2nq.plugins import torch_ops

    if name in ("nohints", "defaultarch"):
        module = torch_ops.variant(f"i2nq_ops_{name}", streaming_hints=name != "nohints")
        result = dict(ok=not isinstance(module, str), error=module if isinstance(module, str) else None,
                      torch_cuda_arch_list=os.environ.get("TORCH_CUDA_ARCH_LIST"), arch_flags=_torch_arch_flags())
        if result["ok"]:
            result["cubins"] = _cuobjdump(module.__file__)
            if name == "defaultarch":  # do its kernels run here? a few cases of the kernel check
                cases = list(selfcheck.nuquant_cases(n=4099))[::9] + list(selfcheck.lut_cases())[::9]
                failures = [f for c in cases if (f := (selfcheck.check_nuquant(c, module, "cuda") if
                                                       isinstance(c, selfcheck.NUQuantCase) else
                                                       selfcheck.check_lut_dequant(c, module, "cuda")))]
                result.update(check_cases=len(cases), check_failures=failures[:5])
    else:
        result = _build_plugin_default(out)
    (out / f"build-{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


def _build_plugin_default(out: Path) -> dict:
    """The plugin library built by CMake with no architecture given (TensorRT headers needed), else the same
    CMakeLists only configured with a stand-in header: which architectures the default picks here."""
    from i2nq.errors import I2NQError
    from i2nq.plugins import PLUGINS
    from i2nq.plugins.library import (build_plugin, find_nvcc, find_tensorrt_root, plugin_device_status,
                                      plugin_info)

    root = None
    for candidate in (os.environ.get("TensorRT_ROOT"), Path(__file__).resolve().parents[2] / "third_party" / "TensorRT"):
        try:
            root = find_tensorrt_root(candidate) if candidate else None
        except I2NQError:
            continue
        if root:
            break
    build_dir = Path(tempfile.mkdtemp(prefix="i2nq-plugin-default-"))
    if root is not None:
        try:
            lib = build_plugin(root, out / "libi2nq_trt_default.so", build_dir, cuda_archs=None)
        except I2NQError as exc:
            return dict(ok=False, error=str(exc), tensorrt_headers=str(root))
        info = plugin_info(lib)
        status = plugin_device_status(lib, 0)
        return dict(ok=status == 0, built=True, tensorrt_headers=str(root), cuda_archs=list(info.cuda_archs),
                    cubins=_cuobjdump(str(lib)), check_device=status)
    stub = build_dir / "sdk" / "include"
    stub.mkdir(parents=True)
    (stub / "NvInferRuntime.h").write_text("// stand-in: configure only\n")
    nvcc = find_nvcc()
    configure = subprocess.run(["cmake", "-S", str(PLUGINS), "-B", str(build_dir / "build"),
                                f"-DTensorRT_ROOT={build_dir / 'sdk'}", *([f"-DCMAKE_CUDA_COMPILER={nvcc}"] if nvcc else [])],
                               capture_output=True, text=True, timeout=300)
    status = [ln.strip("- ") for ln in configure.stdout.splitlines() if "i2nq: CUDA architectures" in ln]
    return dict(ok=configure.returncode == 0 and bool(status), built=False,
                note="no TensorRT headers: configured only", cmake=status[0] if status else configure.stderr[-500:])


def builds_text(builds: dict[str, dict]) -> str:
    if not builds:
        return ""
    lines = ["", "| build | ok | s | built for | notes |", "|---|---|---|---|---|"]
    for name, b in builds.items():
        built = b.get("cubins") or b.get("cuda_archs") or b.get("arch_flags") or b.get("cmake") or ""
        notes = {k: b[k] for k in ("torch_cuda_arch_list", "check_device", "check_failures", "error", "note", "rc")
                 if b.get(k) not in (None, [], 0)}
        lines.append(f"| {name} | {'yes' if b.get('ok') else 'NO'} | {b.get('seconds', '')} | {built} | {notes} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = ["| section | case | median ms | GB/s or fps | ratio | target | ok |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = r.get("gbs", r.get("fps"))
        target = r.get("target")
        ok = "" if target is None else ("yes" if r["ratio"] >= target else "NO")
        lines.append(f"| {r['section']} | {r['case']} | {r['ms']:.3f} | {rate:.1f} | {r['ratio']:.3f} | "
                     f"{'' if target is None else f'>= {target:.2f}'} | {ok} |")
    return "\n".join(lines)


def write_report(out: Path, env: dict, rows: list[dict], builds: dict[str, dict]) -> str:
    """gpu_bench.json and gpu_bench.md as they stand (written after every section: a timeout keeps what ran)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps(dict(env=env, rows=rows, builds=builds), indent=1))
    text = (f"device: {env['device']}, torch {env['torch']}, kernel check failures: {len(env['check_failures'])}\n\n"
            f"{table(rows)}\n{builds_text(builds)}\n\nnot measured: tensorrt-flavor constant weights vs LUTDequant "
            f"(needs TensorRT)")
    (out / "gpu_bench.md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, torch reference as the kernels")
    parser.add_argument("--sections", default="check,kernels,model,hints,arch")
    parser.add_argument("--mb", type=int, default=512, help="kernel tensor size in MB (fp16 elements x 2)")
    parser.add_argument("--frame", type=int, nargs=2, default=(540, 960), metavar=("H", "W"))
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--build-timeout", type=float, default=200, help="seconds to wait for the extra builds")
    parser.add_argument("--build", choices=sorted(BUILDS), help=argparse.SUPPRESS)  # one build (a subprocess)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.build:
        return 0 if build_one(args.build, args.out).get("ok") else 1
    sections = set(args.sections.split(","))
    started = {} if args.dry_run else start_builds(args.out, sections)
    if args.dry_run:
        device, ops, numel, frame = "cpu", selfcheck.ReferenceOps, 4099, (24, 32)
    else:
        from i2nq.plugins import torch_ops

        if not torch_ops.available():
            print("the i2nq torch extension is not available (no CUDA or the build failed)", file=sys.stderr)
            return 1
        device, ops, numel, frame = "cuda", torch_ops, args.mb * (1 << 20) // 2 + 3, tuple(args.frame)
    rows: list[dict] = []
    builds: dict[str, dict] = {}
    env = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)", torch=torch.__version__,
               check_failures=[], main_extension=None if args.dry_run else
               dict(torch_cuda_arch_list=os.environ.get("TORCH_CUDA_ARCH_LIST"), arch_flags=_torch_arch_flags(),
                    cubins=_cuobjdump(getattr(ops._build(), "__file__", None))))
    if "check" in sections:
        t0 = time.perf_counter()
        env["check_failures"] = selfcheck.run_all(ops, device, n=1001 if args.dry_run else 100_003)
        print(f"check: {len(env['check_failures'])} failures in {time.perf_counter() - t0:.1f} s",
              *env["check_failures"][:10], sep="\n")
        write_report(args.out, env, rows, builds)
    builds = finish_builds(started, args.out, args.build_timeout)  # timing only once nothing compiles beside it
    write_report(args.out, env, rows, builds)
    if "kernels" in sections:
        bench_kernels(ops, device, numel, rows)
        write_report(args.out, env, rows, builds)
    if "model" in sections:
        bench_model(device, frame, args.scale, rows)
        write_report(args.out, env, rows, builds)
    if "hints" in sections:
        off = ops if args.dry_run else torch_ops.variant("i2nq_ops_nohints", streaming_hints=False)
        if isinstance(off, str):
            env["check_failures"].append(f"hints: the build without hints failed: {off}")
        else:
            env["check_failures"] += bench_hints(ops, off, device, numel, rows)
    text = write_report(args.out, env, rows, builds)
    print(text)
    failed_builds = [n for n, b in builds.items() if not b.get("ok")]
    return 1 if env["check_failures"] or failed_builds else 0


if __name__ == "__main__":
    sys.exit(main())
