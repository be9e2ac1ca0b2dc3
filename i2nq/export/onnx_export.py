"""`export_onnx`: an i2nq model (name, checkpoint or module: any architecture) to one self-contained .onnx file,
traced by torch's ONNX exporter (i2nq.export.trace) and finished into the ai.i2nq contract (i2nq.export.graph).

Flavors:
  portable  float32 graph; NUQuant nodes on the quantized activations and bit-packed weight codes rebuilt by
            LUTDequant, with their model-local function bodies, so ONNX Runtime (or any ONNX consumer) runs it
            without our code.
  tensorrt  float16, input and output included ("float16 NCHW RGB in [0, 1]"), for a strongly typed TensorRT
            10/11 build with the i2nq plugin: quantized Conv weights are fp16 constants holding exactly
            levels[c, code] (TensorRT pre-formats and fuses constant weights; it would widen packed uint8 codes to
            INT32 anyway), NUQuant is the only plugin op (TensorRT >= 10.7 prefers a loaded plugin over a local
            function of the same name; older parsers import the function body).
The file is written to a temporary file next to the target and renamed, so no partial file is left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import ModelProto, helper
from torch import nn

from i2nq import __version__
from i2nq.errors import I2NQError
from i2nq.files import atomic_output, check_destination
from i2nq.export.format import DEFAULT_OPSET, FLAVORS, INPUT_LAYOUT, OPSETS
from i2nq.export.ops import (DEFAULT_NUQUANT_BODY, DOMAIN, DOMAIN_VERSION, FALLBACK_NUQUANT_BODY, FP16_NUQUANT_BODY,
                             ML_DOMAIN, ML_OPSET, body_attributes, grid_comparisons, lut_dequant_function,
                             nuquant_function)

if TYPE_CHECKING:
    from i2nq.export.verify import VerifyReport


@dataclass(frozen=True)
class ExportResult:
    """What export_onnx wrote: the file, its size, and the verification report if one was asked for."""

    path: Path
    size: int
    report: VerifyReport | None = None


def to_onnx(model: nn.Module, flavor: str = "portable", opset: int = DEFAULT_OPSET,
            _nuquant_body: str = DEFAULT_NUQUANT_BODY) -> ModelProto:
    """The in-memory ONNX model of `model` (any i2nq model, float or quantized), traced by torch's exporter.

    portable: float32, weights as packed codes rebuilt by LUTDequant. tensorrt: float16 (input and output too),
    Conv weights as fp16 constants equal to levels[c, code], NUQuant the only custom op. Both carry the custom ops'
    standard-op bodies as model-local functions and the model's metadata (scale, bits, receptive field)."""
    import torch

    from i2nq.export.graph import activation_levels, finish
    from i2nq.export.trace import trace

    _check_options(flavor, opset)
    dtype = np.dtype(FLAVORS[flavor]).type
    info = model.info
    proto = trace(model, torch.float16 if dtype == np.float16 else torch.float32, packed=flavor == "portable",
                  opset=opset)
    finish(proto, f"i2nq_{info.arch.replace(':', '_')}_x{info.scale}")
    functions = []
    custom_ops = {n.op_type for n in proto.graph.node if n.domain == DOMAIN}
    body = _nuquant_body if dtype == np.float32 else FP16_NUQUANT_BODY
    if "NUQuant" in custom_ops:
        levels = activation_levels(proto)
        ks = {int(v.shape[0]) for v in levels.values()}
        if len(ks) != 1:
            raise I2NQError(f"all activation codebooks of a model must have the same size, got {sorted(ks)}")
        comparisons = 1
        if body == "grid":
            comparisons = grid_comparisons(levels.values())
            if comparisons is None:  # thresholds too close together for a small grid somewhere
                body, comparisons = FALLBACK_NUQUANT_BODY, 1
        functions.append(nuquant_function(ks.pop(), opset, body, comparisons))
        # the grid and tree bodies read each node's codebook from its attributes (an attribute cannot be computed)
        for node in proto.graph.node:
            if node.op_type == "NUQuant" and node.domain == DOMAIN:
                node.attribute.extend(helper.make_attribute(k, v)
                                      for k, v in body_attributes(body, levels[node.output[0]], comparisons).items())
    if "LUTDequant" in custom_ops:
        functions.append(lut_dequant_function(opset))
    del proto.functions[:]
    proto.functions.extend(functions)
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid("", opset)]
                              + ([helper.make_opsetid(DOMAIN, DOMAIN_VERSION)] if custom_ops else [])
                              + ([helper.make_opsetid(ML_DOMAIN, ML_OPSET)]
                                 if "NUQuant" in custom_ops and body == "tree" else []))
    proto.ir_version = max(8, helper.find_min_ir_version_for(list(proto.opset_import[:1])))  # local functions: >= 8
    proto.producer_name, proto.producer_version = "i2nq", __version__
    proto.doc_string = (f"I²NQ {info.arch} x{info.scale} ({info.bits}), {flavor} flavor: input 'input' "
                        f"{dtype.__name__} NCHW RGB in [0, 1], output 'output' the same at {info.scale}x.")
    rf = "unbounded" if info.receptive_field is None else str(info.receptive_field)
    helper.set_model_props(proto, {
        "i2nq.version": __version__, "i2nq.arch": info.arch, "i2nq.scale": str(info.scale), "i2nq.bits": info.bits,
        "i2nq.input_layout": INPUT_LAYOUT, "i2nq.receptive_field": rf, "i2nq.flavor": flavor,
        "i2nq.dtype": np.dtype(dtype).name,
        **({"i2nq.size_multiple": str(model.size_multiple)} if getattr(model, "size_multiple", 1) > 1 else {})})
    return proto


def export_onnx(model: nn.Module | str | os.PathLike, output: str | os.PathLike, flavor: str = "portable",
                opset: int = DEFAULT_OPSET, overwrite: bool = False, verify: bool = False,
                _nuquant_body: str = DEFAULT_NUQUANT_BODY) -> ExportResult:
    """Export a model name ('default', 'default-fp32'), checkpoint path or module to `output` (.onnx).

    Refuses an existing `output` unless `overwrite`. With `verify`, the written file is run in ONNX
    Runtime and onnx's reference evaluator and compared with the torch model (see export.verify).
    """
    from i2nq.models.checkpoint import load_any

    _check_options(flavor, opset)
    output = _check_output(Path(output), overwrite)
    module = load_any(model).eval()
    proto = to_onnx(module, flavor, opset, _nuquant_body)
    onnx.checker.check_model(proto, full_check=True)
    _write_atomically(proto, output)
    report = None
    if verify:
        from i2nq.export.verify import verify_onnx

        report = verify_onnx(output, module)
    return ExportResult(path=output, size=output.stat().st_size, report=report)


def _check_options(flavor: str, opset: int) -> None:
    if flavor not in FLAVORS:
        raise I2NQError(f"unknown flavor {flavor!r} (choose from: {', '.join(FLAVORS)})")
    if opset not in OPSETS:
        raise I2NQError(f"unsupported opset {opset} (supported: {OPSETS.start}..{OPSETS.stop - 1})")


def _check_output(path: Path, overwrite: bool) -> Path:
    if path.suffix != ".onnx":
        raise I2NQError(f"output must end in .onnx: {path}")
    return check_destination(path, overwrite=overwrite)


def _write_atomically(proto: ModelProto, path: Path) -> None:
    """One self-contained file (no external data), renamed into place only when fully written."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
