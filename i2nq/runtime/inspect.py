"""`i2nq inspect`: what a model file holds (scale, bits, receptive field, quantized sites and their codebooks,
where the bytes go), read from the file itself without torch: an ONNX export, a safetensors checkpoint (its
header) or a TensorRT engine (its .json record)."""

from __future__ import annotations

import dataclasses
import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np

from i2nq.assets import shipped_model
from i2nq.errors import I2NQError
from i2nq.runtime.backends import resolve_model

CUSTOM_DOMAIN = "ai.i2nq"


def inspect_model(model: str | Path) -> dict:
    """A JSON-able description of `model` (a shipped name, .onnx, .safetensors or .engine)."""
    files = resolve_model(model)
    if files.onnx is not None:
        return _inspect_onnx(files.onnx)
    if files.engine is not None:
        return _inspect_engine(files.engine)
    path = files.checkpoint  # a file, or a shipped name whose only file is its checkpoint
    return _inspect_checkpoint(path if isinstance(path, Path) else shipped_model(path, ".safetensors"))


def _inspect_onnx(path: Path) -> dict:
    import onnx
    from onnx import numpy_helper

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: not an ONNX file
        raise I2NQError(f"cannot read {path.name} as ONNX: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    meta = {p.key.removeprefix("i2nq."): p.value for p in m.metadata_props if p.key.startswith("i2nq.")}
    inits = {t.name: t for t in m.graph.initializer}
    nbytes = {name: len(t.raw_data) or numpy_helper.to_array(t).nbytes for name, t in inits.items()}
    acts, weights, used = [], [], set()
    for node in m.graph.node:
        if node.domain != CUSTOM_DOMAIN:
            continue
        used.update(i for i in node.input if i in inits)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "NUQuant" and len(node.input) > 1 and node.input[1] in inits:
            levels = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            acts.append(dict(site=node.input[1].removesuffix("_levels").removesuffix(".act"),
                             levels=int(levels.size), zero_level=bool((levels == 0).any()),
                             range=[float(levels.min()), float(levels.max())]))
        elif node.op_type == "LUTDequant" and len(node.input) > 1:
            shape = [int(d) for d in attrs.get("shape", [])]
            table = inits.get(node.input[1])
            weights.append(dict(site=node.input[0].removesuffix("_codes").removesuffix(".weight"),
                                bits=int(attrs.get("bits", 0)), shape=shape,
                                levels=int(table.dims[-1]) if table is not None else None,
                                per_channel=bool(table is not None and len(table.dims) == 2),
                                code_bytes=nbytes.get(node.input[0], 0)))
    code_bytes = sum(w["code_bytes"] for w in weights)
    return dict(file=str(path), format="onnx", bytes=path.stat().st_size, meta=meta,
                opsets={o.domain or "ai.onnx": o.version for o in m.opset_import},
                ops=dict(Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in m.graph.node)),
                inputs=[_value_info(v) for v in m.graph.input if v.name not in inits],
                activation_sites=acts, weight_sites=weights,
                initializer_bytes=dict(codes=code_bytes, codebooks=sum(nbytes[n] for n in used) - code_bytes,
                                       other=sum(b for n, b in nbytes.items() if n not in used)))


def _value_info(v) -> dict:
    t = v.type.tensor_type
    from onnx import TensorProto

    return dict(name=v.name, dtype=TensorProto.DataType.Name(t.elem_type).lower(),
                shape=[d.dim_param or d.dim_value for d in t.shape.dim])


def _inspect_checkpoint(path: Path) -> dict:
    """From the safetensors header: the i2nq config in its metadata and the tensors' names and shapes."""
    if path.suffix.lower() != ".safetensors":
        raise I2NQError(f"{path.name} is a foreign torch checkpoint: import it first with "
                        f"i2nq convert {path.name} -o {path.stem}.safetensors")
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size)) if size < 100 << 20 else None
        config = json.loads(header["__metadata__"]["i2nq"])
        if not isinstance(config, dict):
            raise TypeError("the i2nq metadata is not a JSON object")
    except (OSError, struct.error, ValueError, KeyError, TypeError):
        raise I2NQError(f"{path.name} is not an i2nq checkpoint (a safetensors file with i2nq metadata; "
                        "import EDSR-PyTorch/BasicSR weights with i2nq convert)") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    sites = sorted({k.split(".act_quant.")[0] for k in tensors if ".act_quant." in k})
    quant = config.get("quant")

    def levels(prefix: str) -> int | None:
        gaps = tensors.get(f"{prefix}.codebook.raw_gaps")
        return gaps["shape"][0] + 1 if gaps else None

    return dict(file=str(path), format="checkpoint", bytes=path.stat().st_size,
                meta=dict(arch=config.get("arch"), scale=str(config.get("scale")),
                          bits=f"w{quant['w_bits']}a{quant['a_bits']}" if quant else "fp32",
                          version=config.get("i2nq_version")),
                quant=quant, training=config.get("training"), source=config.get("source"),
                parameters=int(sum(np.prod(t["shape"], dtype=np.int64) for t in tensors.values())),
                quantized_convs=[dict(site=s, act_levels=levels(f"{s}.act_quant"),
                                      weight_levels=levels(f"{s}.weight_quant")) for s in sites])


def _inspect_engine(path: Path) -> dict:
    from i2nq.plugins.engine import EngineRecord

    record = dataclasses.asdict(EngineRecord.load(path))
    return dict(file=str(path), format="engine", bytes=path.stat().st_size, meta=record["meta"], record=record)


def describe(info: dict) -> str:
    """The human-readable summary of inspect_model's result."""
    meta = info["meta"]
    name = Path(info["file"]).name
    lines = [f"{name}: {info['format']}, {info['bytes']:,} bytes"]
    if meta.get("arch"):
        lines.append(f"  model        {meta['arch']} x{meta.get('scale')}, {meta.get('bits')}"
                     + (f", {meta['flavor']} flavor ({meta.get('dtype')})" if meta.get("flavor") else ""))
    elif info["format"] == "onnx":
        lines.append("  model        no i2nq metadata: the i2nq runtime cannot serve it (export with i2nq export-onnx)")
    if meta.get("receptive_field") == "unbounded":
        lines.append("  tiling       receptive field unbounded (or too large for exact tiling): tiles are blended")
    elif meta.get("receptive_field"):
        lines.append(f"  tiling       receptive field {meta['receptive_field']} px: tiles overlapping by that much "
                     f"give exactly the whole-frame output")
    if info["format"] == "onnx":
        lines.append("  opsets       " + ", ".join(f"{d} {v}" for d, v in info["opsets"].items()))
        for v in info["inputs"]:
            lines.append(f"  input        {v['name']}: {v['dtype']} [{', '.join(map(str, v['shape']))}]")
        acts, weights = info["activation_sites"], info["weight_sites"]
        if acts:
            ks = sorted({a["levels"] for a in acts})
            lines.append(f"  activations  {len(acts)} NUQuant sites, {'/'.join(map(str, ks))} levels, "
                         f"{sum(a['zero_level'] for a in acts)} with an exact zero level")
        if weights:
            bits = sorted({w["bits"] for w in weights})
            lines.append(f"  weights      {len(weights)} LUTDequant layers, {'/'.join(map(str, bits))}-bit codes, "
                         f"{sum(w['per_channel'] for w in weights)} with per-channel codebooks")
        b = info["initializer_bytes"]
        lines.append(f"  bytes        codes {b['codes']:,}, codebooks {b['codebooks']:,}, other weights {b['other']:,}")
    elif info["format"] == "checkpoint":
        lines.append(f"  parameters   {info['parameters']:,}")
        if info["quant"]:
            q = info["quant"]
            lines.append(f"  quantizer    {q.get('method')} W{q.get('w_bits')}A{q.get('a_bits')}"
                         + (", FSWA" if q.get("fswa") else "") + f"; {len(info['quantized_convs'])} quantized convs")
        if info.get("training"):
            t = info["training"]
            done = "calibration only (post-training)" if t.get("kind") == "qat" and not t.get("steps") else \
                f"{t.get('kind', 'train')}, {t.get('steps')} steps"
            data = t.get("data")
            if data:
                done += f", on {data}" + (f" ({t['frames']} frames)" if t.get("frames") else "")
            lines.append(f"  training     {done}")
        if info.get("source"):
            src = info["source"]
            lines.append(f"  imported     from {src.get('format')} {src.get('file')} (rgb_range {src.get('rgb_range')}, "
                         f"res_scale {src.get('res_scale')})")
    else:
        r = info["record"]
        lines.append(f"  built by     TensorRT {r['tensorrt']} for {r['gpu']}; plugin {r['plugin_version']} "
                     f"({r.get('plugin_layers', 0)} of {r.get('custom_nodes', 0)} ai.i2nq nodes as plugin layers); "
                     f"input profile {r['profile']}")
    return "\n".join(lines)
