"""CLI subcommand `i2nq export-onnx` (argument parsing only; the work is one call to export_onnx)."""

from __future__ import annotations

import argparse

from i2nq.export.format import DEFAULT_OPSET, FLAVORS, OPSETS


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `export-onnx`."""
    p = subparsers.add_parser(
        "export-onnx", help="export a model to ONNX with I²NQ custom ops and their standard-op functions",
        description="Export an I²NQ model to one self-contained ONNX file. Activation quantizers become "
                    "ai.i2nq NUQuant nodes, quantized weights bit-packed codes rebuilt by LUTDequant; both ops "
                    "ship as model-local functions of standard ops. Input 'input' is NCHW RGB in [0, 1] "
                    "(float32; float16 for --flavor tensorrt), with dynamic batch, height and width.")
    p.add_argument("model", help="shipped model name (default, default-x2, default-fp32), .safetensors checkpoint or "
                                   "EDSR-PyTorch/BasicSR weights (.pt, .pth)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--flavor", choices=list(FLAVORS), default="portable",
                   help="portable: float32, runs anywhere (default); tensorrt: float16 graph, input and output "
                        "included, for TensorRT with the i2nq plugin")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default: {DEFAULT_OPSET})")
    p.add_argument("--verify", action="store_true",
                   help="run the export in ONNX Runtime and onnx's reference evaluator and compare with torch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from i2nq.export.onnx_export import export_onnx

    result = export_onnx(args.model, args.output, flavor=args.flavor, opset=args.opset, overwrite=args.overwrite,
                         verify=args.verify)
    print(f"wrote {result.path} ({result.size / 1024:.1f} KiB, {args.flavor}, opset {args.opset})")
    if result.report is None:
        return 0
    print("\n".join(result.report.lines()))
    return 0 if result.report.ok else 1
