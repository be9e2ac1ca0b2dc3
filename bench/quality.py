"""Quality table for the shipped architecture: bicubic, float, uniform W4/W3/W2 and I²NQ W4/W3/W2 with
the same calibration data and QAT budget; per-image and mean Y-PSNR/SSIM on the public evaluation set,
and level usage (entropy of codes) per layer with and without FSWA.

Each quantized model is one resumable job (`--jobs`), so jobs can run in parallel processes; `--report`
then assembles the table from the job results. Nothing here is tuned on the evaluation set.

  python bench/quality.py --float runs/edsr-small-x4-fp32.safetensors --work runs/quality --jobs all
  python bench/quality.py --float runs/edsr-small-x4-fp32.safetensors --work runs/quality --report bench/results/quality.md

`--steps 0` measures post-training quantization (calibration only) the same way (bench/results/quality-ptq.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from i2nq.calib.data import read_folder
from i2nq.calib.evaluate import evaluate
from i2nq.calib.pipeline import quantize_model
from i2nq.calib.train import TrainConfig
from i2nq.models import load
from i2nq.quant import I2NQConfig, UniformConfig, code_entropy, quantize_, quantized_sites

JOBS = {f"{m}-w{b}a{b}": (I2NQConfig(bits=b) if m == "i2nq" else UniformConfig(bits=b))
        for m in ("i2nq", "uniform") for b in (4, 3, 2)}
JOBS["i2nq-w2a2-nofswa"] = I2NQConfig(bits=2, fswa=False)
DEFAULT_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def qat_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(steps=args.steps, batch=16, lr_patch=32, lr=args.lr, quant_lr=args.quant_lr,
                       distill=1.0, threads=args.threads, log_every=50, save_every=50)


def weight_entropy(model: torch.nn.Module) -> list[float]:
    """Entropy (bits) of each quantized layer's weight codes."""
    out = []
    for _, m in quantized_sites(model):
        c, _ = m.weight_quant.export(m.weight)
        out.append(code_entropy(c, m.weight_quant.codebook.k))
    return out


@torch.no_grad()
def activation_entropy(model: torch.nn.Module, eval_dir: Path) -> list[float]:
    """Entropy (bits) of each activation site's codes over the evaluation LR images."""
    from i2nq.calib.data import bicubic_down, crop_to_scale
    from i2nq.quant import codes

    hists: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in quantized_sites(model):
        k = m.act_quant.codebook.k

        def hook(mod, inp, name=name, k=k):
            c = codes(inp[0], mod.act_quant.codebook.levels())
            hists[name] = hists.get(name, torch.zeros(k, dtype=torch.long)) + torch.bincount(c.flatten(), minlength=k)

        hooks.append(m.register_forward_pre_hook(hook))
    for _, hr in read_folder(eval_dir):
        model(bicubic_down(crop_to_scale(hr, model.scale), model.scale)[None])
    for h in hooks:
        h.remove()
    ent = []
    for h in hists.values():
        p = h.double()[h > 0] / h.sum()
        ent.append(float(-(p * p.log2()).sum()))
    return ent


def run_job(name: str, args: argparse.Namespace) -> None:
    out = args.work / f"{name}.safetensors"
    if not out.exists():
        quantize_model(args.float, JOBS[name], out, qat_config(args), state=args.work / f"{name}.state.safetensors",
                       log=lambda s: print(f"[{name}] {s}", flush=True))
    model = load(out)
    result = evaluate(model, args.eval)
    result["weight_entropy"] = weight_entropy(model)
    result["act_entropy"] = activation_entropy(model, args.eval)
    (args.work / f"{name}.json").write_text(json.dumps(result, indent=1))


def init_entropy(float_path: Path) -> dict[str, list[float]]:
    """Weight-code entropy per layer right after initialization, FSWA on and off (no data needed)."""
    out = {}
    for b in (4, 3, 2):
        for fswa in (True, False):
            m = quantize_(load(float_path), I2NQConfig(bits=b, fswa=fswa))
            out[f"w{b} {'FSWA' if fswa else 'max-abs'}"] = weight_entropy(m)
    return out


def activation_stats(float_path: Path) -> list[tuple[str, float, float]]:
    """(site, excess kurtosis, fraction of exact zeros) of each activation site on calibration patches."""
    from i2nq.calib.pipeline import training_sets
    from i2nq.quant import calibrate_

    m = quantize_(load(float_path), I2NQConfig(bits=4))
    data, _ = training_sets(m.scale, 32)
    gen = torch.Generator().manual_seed(1)
    samples = calibrate_(m, (data.batch(16, 32, gen)[0] for _ in range(8)))
    out = []
    for name, s in samples.items():
        s = s.double()
        z = (s - s.mean()) / s.std()
        out.append((name, float((z**4).mean() - 3), float((s == 0).double().mean())))
    return out


def report(args: argparse.Namespace) -> str:
    fl = evaluate(load(args.float), args.eval)
    rows = [("bicubic", {r["name"]: (r["bicubic_psnr_y"], r["bicubic_ssim_y"]) for r in fl["images"]},
             (fl["bicubic_psnr_y"], fl["bicubic_ssim_y"])),
            ("float (fp32)", {r["name"]: (r["psnr_y"], r["ssim_y"]) for r in fl["images"]}, (fl["psnr_y"], fl["ssim_y"]))]
    results = {}
    for name in JOBS:
        f = args.work / f"{name}.json"
        if f.exists():
            res = json.loads(f.read_text())
            results[name] = res
            rows.append((name, {r["name"]: (r["psnr_y"], r["ssim_y"]) for r in res["images"]}, (res["psnr_y"], res["ssim_y"])))
    images = [r["name"] for r in fl["images"]]
    budget = (f"QAT budget {args.steps} steps, batch 16, LR patch 32" if args.steps else
              "post-training only: calibrated codebooks, clips and FSWA scales, no QAT")
    lines = [f"Model: {fl['model']['arch']} x{fl['model']['scale']} (float parent {args.float.name}); {budget}; "
             f"the same calibration batches for every quantizer.", "",
             "Y-PSNR (dB) / SSIM, border = scale, output rounded to 8 bits:", "",
             "| model | " + " | ".join(images) + " | mean | vs float |",
             "|---" * (len(images) + 3) + "|"]
    for name, per, (mp, ms) in rows:
        cells = " | ".join(f"{per[i][0]:.2f} / {per[i][1]:.4f}" for i in images)
        lines.append(f"| {name} | {cells} | **{mp:.3f}** / {ms:.4f} | {mp - fl['psnr_y']:+.3f} |")
    lines += ["", f"Level usage: entropy (bits) of weight codes per quantized layer {'after QAT' if args.steps else 'after calibration'} "
              "(max = bits), and of activation codes on the evaluation images:", "",
              "| model | weight entropy per layer | mean | activation entropy mean |", "|---|---|---|---|"]
    for name, res in results.items():
        we, ae = res["weight_entropy"], res["act_entropy"]
        lines.append(f"| {name} | {' '.join(f'{e:.2f}' for e in we)} | {sum(we) / len(we):.3f} | {sum(ae) / len(ae):.3f} |")
    lines += ["", "Weight-code entropy per layer right after initialization, FSWA (MSE-searched per-channel "
              "scales) against fixed max-abs per-channel scales:", "", "| init | per layer | mean |", "|---|---|---|"]
    for name, we in init_entropy(args.float).items():
        lines.append(f"| {name} | {' '.join(f'{e:.2f}' for e in we)} | {sum(we) / len(we):.3f} |")
    lines += ["", "Activation statistics of the float parent at each quantized site (calibration patches):", "",
              "| site | excess kurtosis | exact zeros |", "|---|---|---|"]
    for name, kurt, zeros in activation_stats(args.float):
        lines.append(f"| {name} | {kurt:.2f} | {zeros:.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--float", type=Path, required=True, help="float parent checkpoint")
    p.add_argument("--work", type=Path, required=True, help="folder for job checkpoints and results")
    p.add_argument("--eval", type=Path, default=DEFAULT_EVAL, help="folder of HR evaluation images")
    p.add_argument("--jobs", nargs="*", default=[], help=f"jobs to run ('all' or some of {', '.join(JOBS)})")
    p.add_argument("--steps", type=int, default=300, help="QAT steps per job (the same for every job)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--quant-lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", type=Path, help="write the markdown table here")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    for name in (list(JOBS) if args.jobs == ["all"] else args.jobs):
        run_job(name, args)
    if args.report:
        text = report(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
        print(text)


if __name__ == "__main__":
    main()
