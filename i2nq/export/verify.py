"""Check an export against its torch model in ONNX Runtime (CPU) and onnx's reference evaluator.

For every runtime and input size it reports the output PSNR against torch, the fraction of activation
codes identical to torch's (NUQuant outputs are read as extra graph outputs and matched with torch
hooks on the activation quantizers), and whether each NUQuant node reproduced `nuquant_ref` exactly on
the values it actually received. Codes may differ from torch where the convolution before a site rounded
differently and the value crossed a threshold ("at a threshold": adjacent codes, torch's input within
NEAR of it); a flipped code changes later activations, so a deep untrained net shows some cascaded flips.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import ModelProto, helper, numpy_helper
from torch import nn

from i2nq.errors import I2NQError
from i2nq.quant import codes, nuquant_ref, quantized_sites

VERIFY_SIZES = ((16, 16), (11, 19))  # (H, W) of the two inputs; the reference evaluator is slow
NEAR = 1e-5  # "at a threshold": within this fraction of the codebook's largest |threshold|


_EXACT = {True: "exact", False: "NOT exact", None: "n/a (fp16 run in float32)"}


@dataclass(frozen=True)
class Agreement:
    """One runtime on one input, compared with the torch model."""

    runtime: str
    shape: tuple[int, ...]
    psnr: float  # dB, output vs torch output (peak 1.0)
    max_abs: float
    codes_identical: float  # fraction of activation codes equal to torch's, over all sites
    codes_total: int
    codes_near: int  # differing codes that are adjacent, with torch's input within NEAR of their threshold
    body_exact: bool | None  # every NUQuant output equals nuquant_ref(its ONNX input); None: not checkable

    def line(self) -> str:
        shape = "x".join(map(str, self.shape))
        differ = self.codes_total - round(self.codes_identical * self.codes_total)
        quant = "" if not self.codes_total else (
            f"  codes {100 * self.codes_identical:.4f}% identical of {self.codes_total} ({differ} differ, "
            f"{self.codes_near} at a threshold)  NUQuant body {_EXACT[self.body_exact]}")
        return f"{self.runtime:<12} {shape:<12} PSNR {self.psnr:6.1f} dB  max|diff| {self.max_abs:.2e}{quant}"


@dataclass(frozen=True)
class VerifyReport:
    rows: tuple[Agreement, ...]

    @property
    def ok(self) -> bool:
        """No NUQuant node deviated from the tie rule on the values it received."""
        return all(r.body_exact is not False for r in self.rows)

    def lines(self) -> list[str]:
        return [r.line() for r in self.rows]


def sample_inputs(sizes=VERIFY_SIZES) -> list[np.ndarray]:
    """Real photo crops (scikit-image's public-domain astronaut and coffee), NCHW float32 in [0, 1]."""
    from skimage import data

    photos = [data.astronaut(), data.coffee()]
    out = []
    for i, (h, w) in enumerate(sizes):
        img = photos[i % len(photos)]
        top, left = (img.shape[0] - h) // 3, (img.shape[1] - w) // 2
        out.append(np.ascontiguousarray(img[top:top + h, left:left + w].transpose(2, 0, 1)[None], np.float32) / 255)
    return out


def verify_onnx(path: str | os.PathLike | ModelProto, model: nn.Module, inputs: list[np.ndarray] | None = None,
                runtimes: tuple[str, ...] = ("onnxruntime", "reference")) -> VerifyReport:
    """Run the export in each runtime on `inputs` (default: two photo crops, see VERIFY_SIZES) and
    compare with `model` (torch)."""
    proto = onnx.load(str(path)) if not isinstance(path, ModelProto) else path
    probe, sites = _probe_model(proto)
    dtype = np.float16 if proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else np.float32
    runners = {name: RUNTIMES[name](probe) for name in runtimes}
    rows = []
    for x in sample_inputs() if inputs is None else inputs:
        want, torch_sites = _run_torch(model, x)
        for runtime, run in runners.items():
            got = run(x.astype(dtype))
            # ONNX Runtime's CPU provider runs fp16 graphs through inserted float32 casts and may drop
            # fp32->fp16->fp32 cast pairs, so a NUQuant node can see activations never rounded to fp16
            checkable = dtype == np.float32 or runtime != "onnxruntime"
            rows.append(_compare(runtime, x.shape, want, torch_sites, got, sites, checkable))
    return VerifyReport(tuple(rows))


def _probe_model(proto: ModelProto) -> tuple[ModelProto, dict[str, tuple[str, str, np.ndarray]]]:
    """A copy whose outputs also include every NUQuant input and output; site -> (in, out, levels)."""
    inits = {t.name: t for t in proto.graph.initializer}
    sites = {}
    for node in proto.graph.node:
        if node.op_type == "NUQuant":
            site = node.output[0].removesuffix(".act_q")
            sites[site] = (node.input[0], node.output[0], np.array(numpy_helper.to_array(inits[node.input[1]])))
    probe = ModelProto()
    probe.CopyFrom(proto)
    elem = proto.graph.input[0].type.tensor_type.elem_type
    for x_in, x_out, _ in sites.values():
        probe.graph.output.extend([helper.make_tensor_value_info(x_in, elem, None),
                                   helper.make_tensor_value_info(x_out, elem, None)])
    return probe, sites


def _ort_runner(probe: ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(names, session.run(None, {"input": x})))


def reference_evaluator(proto: ModelProto):
    """onnx's ReferenceEvaluator for an i2nq export. Its GatherElements is numpy's `choose`, which takes at most 64
    choices (numpy's NPY_MAXARGS), and the grid NUQuant body looks values up in tables of up to 4096 entries; this
    evaluator runs GatherElements as `take_along_axis` instead, which is the op's definition."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        op_domain = ""

        def _run(self, data, indices, axis=None):
            return (np.take_along_axis(data, indices.astype(np.int64), axis=axis or 0),)

    class Evaluator(ReferenceEvaluator):  # model-local functions get evaluators of this class, so the op too
        def __init__(self, proto, *args, new_ops=None, **kwargs) -> None:
            super().__init__(proto, *args, new_ops=[GatherElements, *(new_ops or [])], **kwargs)

    return Evaluator(proto)


def _reference_runner(probe: ModelProto):
    evaluator = reference_evaluator(probe)
    names = [o.name for o in probe.graph.output]
    return lambda x: dict(zip(names, evaluator.run(None, {"input": x})))


RUNTIMES = {"onnxruntime": _ort_runner, "reference": _reference_runner}


@torch.no_grad()
def _run_torch(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Torch output and, per activation site, (quantizer input, codebook levels)."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.act_quant.register_forward_hook(
        lambda mod, args, out, name=name: seen.__setitem__(name, (args[0].clone(), mod.codebook.levels().clone())))
        for name, m in quantized_sites(model)]
    try:
        y = model.eval()(torch.from_numpy(x)).numpy()
    finally:
        for h in hooks:
            h.remove()
    return y, seen


def _compare(runtime: str, shape: tuple[int, ...], want: np.ndarray, torch_sites: dict, got: dict[str, np.ndarray],
             sites: dict[str, tuple[str, str, np.ndarray]], checkable: bool) -> Agreement:
    y = got["output"].astype(np.float64)
    mse = float(np.mean((y - want) ** 2))
    same = near = total = 0
    exact = True
    for site, (x_in, x_out, levels) in sites.items():
        if site not in torch_sites:
            raise I2NQError(f"activation site {site} of the export is not in the torch model")
        t_in, t_levels = torch_sites[site]
        q_in, q_out = torch.from_numpy(np.array(got[x_in])), torch.from_numpy(np.array(got[x_out]))
        exact &= bool(torch.equal(_bits(nuquant_ref(q_in, torch.from_numpy(levels))), _bits(q_out)))
        onnx_codes = np.searchsorted(levels, got[x_out])  # outputs are levels, so this is their code
        torch_codes = codes(t_in, t_levels).numpy()
        differ = onnx_codes != torch_codes
        same += int(differ.size - differ.sum())
        total += differ.size
        # a flip from rounding: adjacent codes, torch's input within NEAR (relative) of the threshold between
        t = ((t_levels[:-1] + t_levels[1:]) * 0.5).numpy()
        lower = np.minimum(onnx_codes, torch_codes)[differ]
        gap = np.abs(t_in.numpy()[differ] - t[np.minimum(lower, len(t) - 1)])
        near += int(((np.abs(onnx_codes - torch_codes)[differ] == 1) & (gap <= NEAR * np.abs(t).max())).sum())
    return Agreement(runtime=runtime, shape=tuple(shape), psnr=math.inf if mse == 0 else 10 * math.log10(1 / mse),
                     max_abs=float(np.abs(y - want).max()), codes_identical=same / total if total else 1.0,
                     codes_total=total, codes_near=near, body_exact=exact if checkable else None)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a float tensor (so -0.0 != 0.0 and NaN == NaN)."""
    return t.view(torch.int16 if t.dtype == torch.float16 else torch.int32)
