"""I²NQ vs uniform on a real pretrained parent (Real-ESRGAN Compact, SPAN, ...): W8A8 to W2A2, post-training
(calibration only) and with QAT distilled from the float parent on public photographs (scikit-image's; the parent
learns nothing about the evaluation set). Two measures on the public evaluation set, each for two ways of making
the LR image (antialiased bicubic as in the SR literature; OpenCV's aliased INTER_CUBIC):
  - Y-PSNR against the HR image (meaningful for parents trained on bicubic degradation, e.g. SPAN);
  - fidelity: Y-PSNR of the quantized model's output against its float parent's (meaningful for every parent).

Each quantized model is one resumable job; `--report` assembles the tables from the job results.

  python bench/quality_real.py --parent realesr-animevideov3-x4 --work runs/q-compact --jobs all --steps 300
  python bench/quality_real.py --parent realesr-animevideov3-x4 --work runs/q-compact --report out.md
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from i2nq.calib.data import LR_RECIPES
from i2nq.calib.evaluate import evaluate
from i2nq.calib.pipeline import quantize_model
from i2nq.calib.train import TrainConfig
from i2nq.models import load
from i2nq.quant import I2NQConfig, UniformConfig

BITS = (8, 4, 3, 2)
MODES = ("ptq", "qat", "fqat", "pqat")  # fqat: QAT with feature distillation too (--feature-distill); pqat:
# progressive, QAT started from the float weights of the same method's QAT model one bit up (W3A3 from W4A4's QAT)
JOBS = [f"{m}-w{b}a{b}-{mode}" for b in BITS for mode in ("ptq", "qat") for m in ("i2nq", "uniform")]  # "all"
JOB_NAME = re.compile(r"(i2nq|uniform)-w(\d)a(\d)-(" + "|".join(MODES) + ")")  # also mixed bits: i2nq-w3a8-ptq
DEFAULT_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def parse_job(name: str) -> tuple[str, int, int, str]:
    """(method, weight bits, activation bits, mode) of a job name such as uniform-w4a4-qat."""
    match = JOB_NAME.fullmatch(name)
    if not match:
        raise SystemExit(f"unknown job {name!r}: METHOD-wWaA-MODE, METHOD i2nq or uniform, MODE one of {MODES}")
    method, w, a, mode = match.groups()
    return method, int(w), int(a), mode


def config(method: str, w_bits: int, a_bits: int):
    return (I2NQConfig if method == "i2nq" else UniformConfig)(w_bits=w_bits, a_bits=a_bits)


def progressive_start(args: argparse.Namespace, method: str, w_bits: int, a_bits: int) -> Path:
    """The model a pqat job starts from: the same method's QAT (or pqat) model with one bit more."""
    for mode in ("pqat", "qat"):
        path = args.work / f"{method}-w{w_bits + 1}a{a_bits + 1}-{mode}.safetensors"
        if path.exists():
            return path
    raise SystemExit(f"a pqat job starts from {method}-w{w_bits + 1}a{a_bits + 1}-qat (or -pqat): run it first")


def train_config(args: argparse.Namespace, mode: str) -> TrainConfig:
    """QAT distilled from the float parent only (hr_loss 0): the parent's own behaviour is the target; fqat adds
    the parent's features at every quantized convolution."""
    return TrainConfig(steps=0 if mode == "ptq" else args.steps, batch=args.batch, lr_patch=args.patch, lr=args.lr,
                       quant_lr=args.quant_lr, distill=1.0, hr_loss=0.0,
                       feature_distill=args.feature_distill if mode == "fqat" else 0.0, threads=args.threads,
                       log_every=50, save_every=50)


def scores(model: torch.nn.Module, parent: torch.nn.Module | None, eval_dir: Path) -> dict:
    return {recipe: evaluate(model, eval_dir, recipe, parent) for recipe in LR_RECIPES}


def run_job(name: str, args: argparse.Namespace, parent: torch.nn.Module) -> None:
    result_path = args.work / f"{name}.json"
    if result_path.exists():
        return
    method, w_bits, a_bits, mode = parse_job(name)
    out = args.work / f"{name}.safetensors"
    t0 = time.time()
    if not out.exists():
        start = progressive_start(args, method, w_bits, a_bits) if mode == "pqat" else None
        if start is not None:
            print(f"[{name}] starting from {start.name}", flush=True)
        quantize_model(parent, config(method, w_bits, a_bits), out, train_config(args, mode),
                       calib_batches=args.calib_batches, state=args.work / f"{name}.state.safetensors",
                       log=lambda s: print(f"[{name}] {s}", flush=True), start=start)
    seconds = time.time() - t0
    result = scores(load(out), parent, args.eval)
    result["seconds"] = seconds
    result_path.write_text(json.dumps(result, indent=1))
    print(f"[{name}] " + ", ".join(f"{r}: {v['psnr_y']:.3f} dB, fidelity {v['fidelity_psnr_y']:.2f} dB"
                                   for r, v in result.items() if r in LR_RECIPES), flush=True)


def report(args: argparse.Namespace, parent: torch.nn.Module) -> str:
    base = scores(parent, None, args.eval)
    done = sorted(p.stem for p in args.work.glob("*.json") if JOB_NAME.fullmatch(p.stem))
    modes = {parse_job(n)[3] for n in done}
    jobs = ",".join(["all", *(n for n in done if n not in JOBS)] if set(JOBS) <= set(done) else done)
    options = (f" --steps {args.steps}" if modes - {"ptq"} else "") + (
        f" --feature-distill {args.feature_distill}" if "fqat" in modes else "")
    lines = [f"# I²NQ vs uniform on `{args.parent}` (x{parent.scale}, {parent.arch})", "",
             f"QAT: {args.steps} steps, batch {args.batch} of {args.patch}x{args.patch} LR patches of scikit-image's "
             f"photographs, distilled from the float parent only (L1 to its output), weights lr {args.lr}, quantizer "
             f"lr {args.quant_lr}; calibration {args.calib_batches} batches."
             + (f" FQAT: the same, plus {args.feature_distill} x the mean normalized squared error to the parent's "
                "features at every quantized convolution." if "fqat" in modes else "")
             + (" PQAT: QAT started from the same method's QAT model with one bit more." if "pqat" in modes else "")
             + f" Evaluation: {args.eval.name}/ ({len(base['bicubic-aa']['images'])} images), Y channel, "
             f"{parent.scale}-pixel border cropped.", "",
             "Command:", "", "```",
             f"python bench/quality_real.py --parent {args.parent} --work WORK --jobs {jobs}{options}",
             f"python bench/quality_real.py --parent {args.parent} --work WORK --report OUT.md{options}", "```", ""]
    for recipe in LR_RECIPES:
        b = base[recipe]
        lines += [f"## LR by {recipe}", "",
                  f"bicubic {b['bicubic_psnr_y']:.3f} dB, float parent {b['psnr_y']:.3f} dB.", "",
                  "| bits | mode | I²NQ PSNR | uniform PSNR | I²NQ - uniform | I²NQ - float | I²NQ fidelity | uniform fidelity |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for bits in BITS:
            for mode in MODES:
                got = {}
                for method in ("i2nq", "uniform"):
                    path = args.work / f"{method}-w{bits}a{bits}-{mode}.json"
                    got[method] = json.loads(path.read_text())[recipe] if path.exists() else None
                if not any(got.values()):
                    continue
                cell = lambda m, k: f"{got[m][k]:.3f}" if got[m] else "-"  # noqa: E731
                diff = f"{got['i2nq']['psnr_y'] - got['uniform']['psnr_y']:+.3f}" if all(got.values()) else "-"
                to_float = f"{got['i2nq']['psnr_y'] - b['psnr_y']:+.3f}" if got["i2nq"] else "-"
                lines.append(f"| W{bits}A{bits} | {mode.upper()} | {cell('i2nq', 'psnr_y')} | {cell('uniform', 'psnr_y')} "
                             f"| {diff} | {to_float} | {cell('i2nq', 'fidelity_psnr_y')} "
                             f"| {cell('uniform', 'fidelity_psnr_y')} |")
        lines.append("")
    times = {n: json.loads((args.work / f"{n}.json").read_text())["seconds"] for n in done}
    if times:
        lines.append(f"Wall time per job on this machine: {min(times.values()):.0f}-{max(times.values()):.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", required=True, help="float parent: a packaged name, checkpoint or weights")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--jobs", default="", help="comma-separated job names; 'all': every PTQ and QAT job")
    parser.add_argument("--report", type=Path, help="write the tables to this file")
    parser.add_argument("--eval", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--quant-lr", type=float, default=1e-3)
    parser.add_argument("--feature-distill", type=float, default=1.0, help="weight of the feature term (fqat jobs)")
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    names = [n for token in args.jobs.split(",") if token for n in (JOBS if token == "all" else [token])]
    for name in names:
        parse_job(name)  # every name checked before any work
    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    parent = load(args.parent)
    for name in names:
        run_job(name, args, parent)
    if args.report:
        args.report.write_text(report(args, parent))


if __name__ == "__main__":
    main()
