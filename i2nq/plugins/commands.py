"""`i2nq build-plugin` and `i2nq build-engine`: argument parsing only; each runs one library call."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    plugin = sub.add_parser("build-plugin", help="build the TensorRT plugin library libi2nq_trt.so with CMake",
                            description="Build libi2nq_trt.so (NUQuant, LUTDequant IPluginV3 creators) against a "
                                        "TensorRT SDK; needs CMake and the CUDA toolkit (nvcc).")
    plugin.add_argument("--tensorrt-root", metavar="DIR",
                        help="TensorRT SDK folder with include/NvInfer.h (default: $TensorRT_ROOT or /usr)")
    plugin.add_argument("-o", "--output", type=Path, metavar="PATH",
                        help="where to put the library (default: ~/.cache/i2nq/plugins/libi2nq_trt.so)")
    plugin.add_argument("--build-dir", type=Path, metavar="DIR", help="CMake build folder")
    plugin.add_argument("--cuda-arch", metavar="LIST", help="CUDA architectures, e.g. 90 or '80;86;90'")
    plugin.add_argument("--overwrite", action="store_true", help="replace an existing library at -o PATH")
    plugin.set_defaults(func=_build_plugin)

    engine = sub.add_parser("build-engine", help="build a TensorRT engine from an i2nq ONNX export",
                            description="Parse a tensorrt-flavor i2nq ONNX export with the plugin loaded and build "
                                        "a strongly typed engine: static where --tile/--batch are given, else a "
                                        "dynamic profile (default: tiles up to the tiler's default tile for the "
                                        "model's receptive field, max(384, 8 x receptive field), batch 1..4).")
    engine.add_argument("onnx", type=Path, help="i2nq ONNX export (tensorrt flavor)")
    engine.add_argument("-o", "--output", type=Path, metavar="PATH",
                        help="engine file (default: the engine cache); its metadata goes to PATH.json")
    engine.add_argument("--tile", type=int, nargs=2, metavar=("H", "W"), help="static input tile size")
    engine.add_argument("--batch", type=int, metavar="N", help="static batch size (tiles per call)")
    for bound in ("min", "opt", "max"):
        engine.add_argument(f"--{bound}-shape", type=int, nargs=3, metavar=("N", "H", "W"),
                            help=f"dynamic profile: {bound} tiles per call and tile size (instead of --tile/--batch)")
    engine.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                        help="fp16 kernels (default: as the export: fp16 for the tensorrt flavor); --fp16 on an fp32 "
                             "export needs TensorRT 10")
    engine.add_argument("--workspace", type=int, default=4096, metavar="MIB",
                        help="builder workspace limit in MiB (default 4096)")
    engine.add_argument("--timing-cache", type=Path, metavar="PATH",
                        help="TensorRT timing cache file (default: one per TensorRT and GPU in the engine cache)")
    engine.add_argument("--verbose", action="store_true", help="show TensorRT's log down to verbose messages")
    engine.add_argument("--plugin", type=Path, metavar="PATH",
                        help="plugin library (default: $I2NQ_PLUGIN or the one build-plugin made)")
    engine.add_argument("--device", type=int, default=0, metavar="N", help="CUDA device index (default 0)")
    engine.add_argument("--overwrite", action="store_true", help="replace an existing engine (and sidecar) at -o PATH")
    engine.set_defaults(func=_build_engine)


def _build_plugin(args: argparse.Namespace) -> None:
    from i2nq.plugins.library import build_plugin

    print(build_plugin(args.tensorrt_root, args.output, args.build_dir, args.cuda_arch, overwrite=args.overwrite))


def _build_engine(args: argparse.Namespace) -> None:
    from i2nq.plugins.engine import build_engine
    from i2nq.runtime.backends.tensorrt import TensorRTOptions

    options = TensorRTOptions(tile=args.tile, batch=args.batch, min_shape=args.min_shape, opt_shape=args.opt_shape,
                              max_shape=args.max_shape, fp16=args.fp16, workspace_mib=args.workspace,
                              timing_cache=args.timing_cache, verbose=args.verbose)
    print(build_engine(args.onnx, args.output, plugin=args.plugin, device=args.device, options=options,
                       overwrite=args.overwrite))
