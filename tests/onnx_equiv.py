"""Compare two ONNX exports as a machine-independent test must: the graph, functions and metadata exactly, float
tensors within a few ulps (exp/softplus/BLAS differ in the last bit across CPUs, and a learned codebook's levels
come from softplus), packed weight codes by the fraction of identical codes (a weight on a threshold may take
the neighbouring code when a level moved by an ulp). The codebook tables a NUQuant node carries for its grid or
tree body are derived from its levels: each model's must equal what body_attributes makes of its own levels, and
are then left out of the byte comparison (an ulp in a level may move a grid's bucket edges)."""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, numpy_helper

from i2nq.export.ops import GRID_ATTRS, TREE_ATTRS, body_attributes
from i2nq.quant import unpack_codes


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise distance in units in the last place between two float32/float16 arrays of one shape."""
    itype = {np.dtype(np.float32): np.int32, np.dtype(np.float16): np.int16}[a.dtype]
    sign = np.int64(1) << (8 * a.dtype.itemsize - 1)

    def ordered(x: np.ndarray) -> np.ndarray:
        i = x.view(itype).astype(np.int64)
        return np.where(i < 0, -(i & (sign - 1)), i)

    return np.abs(ordered(a) - ordered(b))


def _strip_codebook_tables(model: ModelProto) -> None:
    """Check every NUQuant node's grid_*/tree_* attributes against its own levels, then remove them."""
    from onnx import helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "NUQuant":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in GRID_ATTRS + TREE_ATTRS}
        if not attrs:
            continue
        levels = numpy_helper.to_array(inits[node.input[1]])
        if "grid_codes" in attrs:
            want = body_attributes("grid", levels, len(attrs["grid_thresholds"]) // len(attrs["grid_codes"]))
        else:
            want = body_attributes("tree", levels)
        assert {k: list(v) if isinstance(v, list) else v for k, v in attrs.items()} == want, \
            f"{node.name}: codebook tables do not match its levels"
        kept = [a for a in node.attribute if a.name not in attrs]
        del node.attribute[:]
        node.attribute.extend(kept)


def _code_bits(model: ModelProto) -> dict[str, tuple[int, int]]:
    """Packed-codes initializer name -> (bits, element count), from the LUTDequant nodes that read them."""
    out = {}
    for node in model.graph.node:
        if node.op_type == "LUTDequant":
            attrs = {a.name: a for a in node.attribute}
            out[node.input[0]] = (attrs["bits"].i, int(np.prod(list(attrs["shape"].ints))))
    return out


def assert_equivalent(a: ModelProto, b: ModelProto, max_ulps: int = 4, min_identical_codes: float = 0.9999,
                      ignore_metadata: tuple[str, ...] = ("i2nq.version",)) -> None:
    """Fail unless `a` and `b` are the same export up to last-bit float differences (see module doc)."""
    a_, b_ = ModelProto(), ModelProto()
    a_.CopyFrom(a)
    b_.CopyFrom(b)
    for m in (a_, b_):
        m.producer_version = ""
        for p in m.metadata_props:
            if p.key in ignore_metadata:
                p.value = ""
    for m in (a_, b_):
        _strip_codebook_tables(m)
    bits = _code_bits(a_)
    tb = {t.name: t for t in b_.graph.initializer}
    assert [t.name for t in a_.graph.initializer] == [t.name for t in b_.graph.initializer], "initializers differ"
    for ta in a_.graph.initializer:
        x, y = numpy_helper.to_array(ta), numpy_helper.to_array(tb[ta.name])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{ta.name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if x.dtype.kind == "f":
            worst = int(ulp_distance(x, y).max(initial=0))
            assert worst <= max_ulps, f"{ta.name}: floats differ by {worst} ulps"
        elif ta.name in bits:
            n_bits, numel = bits[ta.name]
            same = float((unpack_codes(x, n_bits, numel) == unpack_codes(y, n_bits, numel)).mean())
            assert same >= min_identical_codes, f"{ta.name}: only {100 * same:.3f}% of codes identical"
        else:
            assert np.array_equal(x, y), f"{ta.name}: differs"
        for t in (ta, tb[ta.name]):
            t.ClearField("raw_data")
            for field in ("float_data", "int32_data", "int64_data", "double_data"):
                t.ClearField(field)
    assert a_.SerializeToString() == b_.SerializeToString(), "graph, functions or metadata differ"
