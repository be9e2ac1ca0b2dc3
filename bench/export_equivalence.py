"""Does a fresh export of a checkpoint run like an earlier ONNX file of it? (Used to retire the hand-built EDSR/SRResNet
graphs: the generic export traced by torch's exporter had to reproduce the shipped files.)

For each photo crop both files run in ONNX Runtime (CPU) with every activation site read out; reported: each file
against torch (PSNR, identical activation codes), and the two files against each other.

  git show <commit>:i2nq/assets/models/default.onnx > /tmp/old.onnx
  python bench/export_equivalence.py default /tmp/old.onnx
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnxruntime as ort

from i2nq.export import to_onnx, verify_onnx
from i2nq.export.verify import _probe_model, sample_inputs
from i2nq.models import load

SIZES = ((64, 64), (37, 53), (120, 96))


def _outputs(proto: onnx.ModelProto, x: np.ndarray) -> tuple[dict, dict]:
    probe, sites = _probe_model(proto)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x}))), sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint or shipped model name")
    parser.add_argument("old", help="the earlier .onnx file of the same checkpoint")
    args = parser.parse_args()
    model = load(args.model)
    old, new = onnx.load(args.old), to_onnx(model)
    inputs = sample_inputs(SIZES)
    print("| file | input | vs torch: PSNR | identical codes |\n|---|---|---|---|")
    for label, proto in (("earlier file", old), ("fresh export", new)):
        for row in verify_onnx(proto, model, inputs=inputs, runtimes=("onnxruntime",)).rows:
            print(f"| {label} | {'x'.join(map(str, row.shape[2:]))} | {row.psnr:.1f} dB | "
                  f"{100 * row.codes_identical:.4f}% of {row.codes_total} |")
    print("\n| input | earlier vs fresh: PSNR | identical codes |\n|---|---|---|")
    for x in inputs:
        (ya, sa), (yb, sb) = _outputs(old, x), _outputs(new, x)
        mse = float(((ya["output"].astype(np.float64) - yb["output"]) ** 2).mean())
        same = sum(int((ya[sa[s][1]] == yb[sb[s][1]]).sum()) for s in sa)
        total = sum(ya[sa[s][1]].size for s in sa)
        psnr = "inf" if mse == 0 else f"{10 * np.log10(1 / mse):.1f}"
        print(f"| {'x'.join(map(str, x.shape[2:]))} | {psnr} dB | {100 * same / total:.4f}% of {total} |")


if __name__ == "__main__":
    main()
