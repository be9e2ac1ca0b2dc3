"""Finish a traced export (i2nq.export.trace) into the deployment contract's graph.

- every ai.i2nq node is named after its site (the module it came from): NUQuant outputs `{site}.act_q` with levels
  `{site}.act_levels`; LUTDequant outputs `{site}.weight` from `{site}.weight_codes` and `{site}.weight_levels`
  (the exporter may share equal constants between sites or name them otherwise); the temporary site attribute
  gives way to the plugin attributes TensorRT reads;
- a Relu that only feeds NUQuant nodes whose levels are all >= 0 is dropped: such a NUQuant maps every x <= 0
  (and NaN) to level 0, exactly as it maps ReLU(x) = 0 (one elementwise pass less per site);
- initializers no node reads are removed, the rest ordered by first use; the tracer's per-node metadata, doc
  strings and intermediate shape annotations are dropped; the input is named [N, 3, H, W], the output
  [N, 3, Hs, Ws].
"""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, helper, numpy_helper

from i2nq.errors import I2NQError
from i2nq.export.ops import DOMAIN, plugin_attrs
from i2nq.export.trace import SITE_ATTR

INPUT, OUTPUT = "input", "output"
NAMES = {"NUQuant": (".act_q", (None, ".act_levels")), "LUTDequant": (".weight", (".weight_codes", ".weight_levels"))}


def finish(proto: ModelProto, graph_name: str) -> list[str]:
    """Rewrite `proto` in place (see module doc); returns the activation sites (NUQuant outputs) in graph order."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    renamed: dict[str, str] = {}
    new_inits = {}
    sites = []
    for node in graph.node:
        if node.domain != DOMAIN:
            continue
        attrs = {a.name: a for a in node.attribute}
        if SITE_ATTR not in attrs:
            raise I2NQError(f"an {node.op_type} node without its site; it was not made by i2nq's tracer")
        site = attrs[SITE_ATTR].s.decode()
        out_suffix, in_suffixes = NAMES[node.op_type]
        for i, suffix in enumerate(in_suffixes):
            if suffix is None:
                continue
            name = site + suffix
            if node.input[i] not in inits:
                raise I2NQError(f"{node.op_type} of {site}: input {i} is not a constant")
            if name not in new_inits:
                new_inits[name] = numpy_helper.to_array(inits[node.input[i]])
            node.input[i] = name
        renamed[node.output[0]] = site + out_suffix
        if node.op_type == "NUQuant":
            sites.append(site + out_suffix)
        node.attribute.remove(attrs[SITE_ATTR])
        node.attribute.extend(helper.make_attribute(k, v) for k, v in plugin_attrs().items())
        node.name = site + out_suffix
    for node in graph.node:
        node.output[:] = [renamed.get(o, o) for o in node.output]
        node.input[:] = [renamed.get(i, i) for i in node.input]
    kept = [t for t in graph.initializer if t.name not in new_inits]
    del graph.initializer[:]
    graph.initializer.extend(kept + [numpy_helper.from_array(array, name) for name, array in new_inits.items()])
    _absorb_relus(graph, {t.name: t for t in graph.initializer})
    _tidy(proto, graph_name)
    return sites


def _absorb_relus(graph, inits) -> None:
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type != "NUQuant" or node.domain != DOMAIN:
            continue
        relu = producer.get(node.input[0])
        if relu is not None and relu.op_type == "Relu" and numpy_helper.to_array(inits[node.input[1]]).min() >= 0:
            node.input[0] = relu.input[0]
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in graph.node if n.op_type != "Relu" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(keep)


def _tidy(proto: ModelProto, graph_name: str) -> None:
    graph = proto.graph
    order = {}
    for node in graph.node:
        for name in node.input:
            order.setdefault(name, len(order))
        del node.metadata_props[:]
        node.ClearField("doc_string")
    inits = sorted((t for t in graph.initializer if t.name in order), key=lambda t: order[t.name])
    for t in inits:
        t.ClearField("doc_string")
        del t.metadata_props[:]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    graph.name = graph_name
    graph.ClearField("doc_string")
    for value, dims in ((graph.input[0], ("N", 3, "H", "W")), (graph.output[0], ("N", 3, "Hs", "Ws"))):
        del value.metadata_props[:]
        value.ClearField("doc_string")
        shape = value.type.tensor_type.shape
        for d, want in zip(shape.dim, dims):
            if isinstance(want, int):
                d.dim_value = want
            else:
                d.dim_param = want
    if [v.name for v in graph.input] != [INPUT] or [v.name for v in graph.output] != [OUTPUT]:
        raise I2NQError("the traced graph must have one input 'input' and one output 'output'")
    del proto.metadata_props[:]


def activation_levels(proto: ModelProto) -> dict[str, np.ndarray]:
    """NUQuant output name -> its levels, for every activation site of a finished export."""
    inits = {t.name: t for t in proto.graph.initializer}
    return {n.output[0]: numpy_helper.to_array(inits[n.input[1]]) for n in proto.graph.node
            if n.op_type == "NUQuant" and n.domain == DOMAIN}
