"""Standard-op bodies of the `ai.i2nq` custom ops, shipped as ONNX model-local functions.

Any ONNX consumer runs an export without our code through these bodies (ONNX Runtime inlines them;
TensorRT's parser imports them when no plugin claims the node). Both follow i2nq.quant's contract:

NUQuant(X, levels): thresholds t_j = (L_j + L_{j+1}) * 0.5 are computed in the levels' dtype (T) inside
the body; code = #{j : t_j < X}, so a value equal to a threshold takes the lower level, values beyond the
ends take the end levels (+-inf included) and NaN takes code 0, i.e. L_0 (every comparison with NaN is
false); Y = L[code]. Bodies are unrolled for the K of the model they ship in (all sites of one model
share K = 2**a_bits); T is generic (CastLike). Which body is fastest is measured by
bench/bench_export.py. In ONNX Runtime's CPU provider an elementwise op costs ~0.3 ns per element, a
GatherElements from a small 1-D table ~0.8 ns, Gather ~5 ns, the tree's TreeEnsembleRegressor ~15 ns
and Where with scalar branches ~1.5 ns, so the default "grid" body is built from the cheap ones
(~5.5 ns per element for K = 16 against the tree's ~15; the model-level choice falls back to the tree
where a codebook's thresholds are too close together for a small grid, see grid_comparisons).
The others stay selectable through the private `body` argument for that benchmark:
  grid     fine uniform grid: per bucket the code below it and its <= M    exact, default (float32)
           thresholds, compared one by one (M per model, usually 1)
  tree     one TreeEnsembleRegressor (ai.onnx.ml) per site                exact, fallback (float32)
  select   max over Where(X > t_j, L_{j+1}, -inf)                        exact, float16 graphs
  bsearch  log2(K) steps of Gather + Greater + Where + Add, then Gather   exact
  count    Greater against all thresholds at once + ReduceSum, Gather     exact
  argmin   argmin |X - L|                                                 NOT exact on ties
  lut      fine uniform grid + one threshold comparison                   exact only for separated thresholds

LUTDequant(codes, levels; bits, shape, axis): unpacks LSB-first bit-packed codes with float32 arithmetic
(exact while numel(shape) * bits <= 2**24) and looks them up in per-tensor [K] or per-channel [C, K]
levels. Its only uint8 op is the leading Cast; everything else is float32/int32 arithmetic, Gather and
Reshape, which TensorRT supports (where the plugin is loaded it claims the node instead).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
from onnx import AttributeProto, FunctionProto, NodeProto, TensorProto, helper, numpy_helper

DOMAIN = "ai.i2nq"
DOMAIN_VERSION = 1
PLUGIN_ATTRS = ("plugin_namespace", "plugin_version")  # node attributes TensorRT reads; unused by the bodies
NUQUANT_BODIES = ("grid", "tree", "select", "bsearch", "count", "argmin", "lut")  # (private) NUQuant body choices
DEFAULT_NUQUANT_BODY = "grid"  # the fastest exact body in ONNX Runtime (bench/bench_export.py), float32 graphs
FALLBACK_NUQUANT_BODY = "tree"  # where no small grid separates a model's thresholds (grid_comparisons is None)
FP16_NUQUANT_BODY = "select"  # grid and tree are float32 only (and TensorRT's parser takes no ai.onnx.ml)
ML_DOMAIN, ML_OPSET = "ai.onnx.ml", 3  # TreeEnsembleRegressor (deprecated in ai.onnx.ml 5, not removed)
TREE_ATTRS = ("tree_thresholds", "tree_levels")  # NUQuant attributes the tree body reads
GRID_ATTRS = ("grid_offset", "grid_scale", "grid_codes", "grid_thresholds")  # ... and the grid body
GRID_MAX_BUCKETS = 4096  # per site: 4 bytes + 1 per bucket and comparison in the file, and a table that stays in cache
GRID_MAX_COMPARISONS = 3  # beyond this the tree is faster (~2 ns per comparison against its ~15 ns)
LUT_BUCKETS = 4096  # buckets of the "lut" body's grid


class _Nodes:
    """Collects the nodes of a function body under unique value names."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self._n = prefix, [], 0

    def __call__(self, op: str, *inputs: str, **attrs) -> str:
        self._n += 1
        out = f"{self.prefix}{self._n}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def const(self, value, dtype=np.int64) -> str:
        return self("Constant", value=numpy_helper.from_array(np.asarray(value, dtype=dtype)))

    def ref(self, attr: str, kind: str) -> str:
        """A Constant whose value is the calling node's attribute `attr` (kind: value_int(s) / value_float(s))."""
        self._n += 1
        out = f"{self.prefix}{self._n}"
        types = {"value_int": AttributeProto.INT, "value_ints": AttributeProto.INTS,
                 "value_float": AttributeProto.FLOAT, "value_floats": AttributeProto.FLOATS}
        a = helper.make_attribute_ref(kind, types[kind], ref_attr_name=attr)
        node = helper.make_node("Constant", [], [out])
        node.attribute.append(a)
        self.nodes.append(node)
        return out


def _thresholds(g: _Nodes, levels: str) -> str:
    """t = (L[:-1] + L[1:]) * 0.5, rounded to the levels' dtype after the sum and after the halving.

    The arithmetic runs in float32 with explicit casts back to T: for fp16 that reproduces fp16
    arithmetic exactly (float32 has 2p+2 bits, so double rounding is innocuous) on runtimes that would
    otherwise keep an fp16 intermediate in float32 (ONNX Runtime's CPU provider has no fp16 Add).
    """
    f32 = TensorProto.FLOAT
    lo = g("Cast", g("Slice", levels, g.const([0]), g.const([-1])), to=f32)
    hi = g("Cast", g("Slice", levels, g.const([1]), g.const([np.iinfo(np.int64).max])), to=f32)
    total = g("Cast", g("CastLike", g("Add", lo, hi), levels), to=f32)
    return g("CastLike", g("Mul", total, g.const(0.5, np.float32)), levels)


def _leading_axis(g: _Nodes, x: str, v: str) -> str:
    """Reshape 1-D `v` to [len(v), 1, ..., 1] with rank(x) ones, to broadcast against Unsqueeze(x, 0)."""
    ones = g("ConstantOfShape", g("Shape", g("Shape", x)), value=numpy_helper.from_array(np.ones(1, np.int64)))
    return g("Reshape", v, g("Concat", g.const([-1]), ones, axis=0))


def _body_bsearch(g: _Nodes, x: str, levels: str, k: int) -> str:
    """Branchless binary search: log2(K) steps of Gather + Greater + Where + Add (int32 index)."""
    t = _thresholds(g, levels)
    zero = g.const(0, np.int32)
    step = k // 2
    middle = g("Slice", t, g.const([step - 1]), g.const([step]))
    idx = g("Where", g("Greater", x, middle), g.const(step, np.int32), zero)
    while step > 1:
        step //= 2
        # at this step idx is a multiple of 2*step; the candidate threshold is t[idx + step - 1]
        table = g("Slice", t, g.const([step - 1]), g.const([k - 1]))
        above = g("Greater", x, g("Gather", table, idx))
        idx = g("Add", idx, g("Where", above, g.const(step, np.int32), zero))
    return g("Gather", levels, idx)


def _body_select(g: _Nodes, x: str, levels: str, k: int) -> str:
    """Gather-free: Y = max(L_0, max_j Where(X > t_j, L_{j+1}, -inf)); exact because max picks one of the
    (sorted) levels, namely L_code; NaN and -inf compare false everywhere and get L_0."""
    t = _thresholds(g, levels)
    ninf = g("CastLike", g.const(-np.inf, np.float32), levels)
    y = g("Gather", levels, g.const(0))
    for j in range(k - 1):
        tj = g("Gather", t, g.const(j))
        level = g("Gather", levels, g.const(j + 1))
        y = g("Max", y, g("Where", g("Greater", x, tj), level, ninf))
    return y


def _body_count(g: _Nodes, x: str, levels: str, k: int) -> str:
    """Threshold count: Greater against all K-1 thresholds at once, ReduceSum over them."""
    t = _leading_axis(g, x, _thresholds(g, levels))
    above = g("Cast", g("Greater", g("Unsqueeze", x, g.const([0])), t), to=TensorProto.INT32)
    return g("Gather", levels, g("ReduceSum", above, g.const([0]), keepdims=0))


def _body_argmin(g: _Nodes, x: str, levels: str, k: int) -> str:
    """argmin |x - L| (first minimum). NOT exact: ties are decided by rounded distances instead of the
    thresholds, and NaN follows ArgMin's NaN handling. Kept for the benchmark only."""
    dist = g("Abs", g("Sub", g("Unsqueeze", x, g.const([0])), _leading_axis(g, x, levels)))
    return g("Gather", levels, g("ArgMin", dist, axis=0, keepdims=0))


def _body_lut(g: _Nodes, x: str, levels: str, k: int) -> str:
    """Fine lookup table over [t_0, t_{K-2}] in LUT_BUCKETS buckets plus one exact threshold comparison.

    Bucket b = min(max((x - t_0) * inv, 0), B - 1) (NaN -> 0); every x in the ±1-bucket neighbourhood
    of b has code base[b] or base[b] + 1, decided by x > tc[b]. Exact only while no two thresholds lie
    within 3 buckets of each other; kept for the benchmark only.
    """
    b_count = LUT_BUCKETS
    t = _thresholds(g, levels)
    t32 = g("Cast", t, to=TensorProto.FLOAT)
    first = g("Slice", t32, g.const([0]), g.const([1]))
    last = g("Slice", t32, g.const([-1]), g.const([np.iinfo(np.int64).max]))
    width = g("Div", g("Sub", last, first), g.const(float(b_count), np.float32))
    inv = g("Div", g.const(1.0, np.float32), width)
    # bucket edges e_{b-1} and e_{b+2}: thresholds below e_{b-1} count, the one in between is compared
    lower = g("Add", first, g("Mul", width, g.const(np.arange(-1, b_count - 1), np.float32)))
    upper = g("Add", lower, g("Mul", width, g.const(3.0, np.float32)))
    tcol = g("Unsqueeze", t32, g.const([1]))
    base = g("ReduceSum", g("Cast", g("Less", tcol, g("Unsqueeze", lower, g.const([0]))), to=TensorProto.INT32),
             g.const([0]), keepdims=0)
    inside = g("And", g("Not", g("Less", tcol, g("Unsqueeze", lower, g.const([0])))),
               g("Less", tcol, g("Unsqueeze", upper, g.const([0]))))
    # tpad[K-1] = +inf stands for "no threshold in the neighbourhood"
    tpad = g("Concat", t, g("CastLike", g.const([np.inf], np.float32), levels), axis=0)
    n_inside = g("ReduceSum", g("Cast", inside, to=TensorProto.INT32), g.const([0]), keepdims=0)
    nothing = g("Equal", n_inside, g.const(0, np.int32))
    tc = g("Gather", tpad, g("Where", nothing, g.const(k - 1, np.int32), base))
    lo_level = g("Gather", levels, base)
    hi_level = g("Gather", levels, g("Min", g("Add", base, g.const(1, np.int32)), g.const(k - 1, np.int32)))
    u = g("Mul", g("Sub", g("Cast", x, to=TensorProto.FLOAT), first), inv)  # in float32 for fp16 inputs too
    zero = g.const(0.0, np.float32)
    u = g("Min", g("Where", g("Greater", u, zero), u, zero), g.const(float(b_count - 1), np.float32))
    b = g("Cast", u, to=TensorProto.INT32)
    # Where(x > tc, hi, lo) as max(lo, min(hi, +-inf)): ONNX Runtime's Where is slow with tensor branches
    inf = g("CastLike", g.const(np.inf, np.float32), x)
    step = g("Where", g("Greater", x, g("Gather", tc, b)), inf, g("Neg", inf))
    return g("Max", g("Gather", lo_level, b), g("Min", g("Gather", hi_level, b), step))


def _tree(k: int) -> list[tuple[str, int]]:
    """A perfect binary search tree over K sorted levels, in preorder: ("branch", j) tests x <= t_j (true: go
    left), ("leaf", i) yields L_i. Node ids are positions in this list."""
    nodes: list[tuple[str, int]] = []

    def build(lo: int, hi: int) -> None:
        if hi - lo == 1:
            nodes.append(("leaf", lo))
            return
        mid = (lo + hi) // 2
        nodes.append(("branch", mid - 1))
        build(lo, mid)
        build(mid, hi)

    build(0, k)
    return nodes


def float32_thresholds(levels: np.ndarray) -> np.ndarray:
    """(L_j + L_{j+1}) * 0.5 rounded in float32, as the tie rule says (the values the bodies compare with)."""
    lv = np.asarray(levels, np.float32)
    return (lv[:-1] + lv[1:]) * np.float32(0.5)


def tree_attributes(levels: np.ndarray) -> dict[str, list[float]]:
    """The values a NUQuant node carries for the tree body: per tree node, its threshold (L_j + L_{j+1}) * 0.5,
    rounded in float32 as the tie rule says (0 for a leaf, whose value is unused), and its levels in leaf order."""
    lv = np.asarray(levels, np.float32)
    t = float32_thresholds(lv)
    nodes = _tree(len(lv))
    return {"tree_thresholds": [float(t[j]) if kind == "branch" else 0.0 for kind, j in nodes],
            "tree_levels": [float(lv[i]) for kind, i in nodes if kind == "leaf"]}


def _body_tree(g: _Nodes, x: str, levels: str, k: int) -> str:
    """One TreeEnsembleRegressor (ai.onnx.ml): a depth-log2(K) search tree with BRANCH_LEQ nodes, so a value
    equal to a threshold goes to the lower level, and NaN follows every node's true branch to L_0 (missing values
    track true); the thresholds and levels come from the node's tree_* attributes (tree_attributes), since an
    ONNX attribute cannot be computed from the levels input. float32 only. One pass instead of 3 per threshold."""
    nodes = _tree(k)
    branch = {i for i, (kind, _) in enumerate(nodes) if kind == "branch"}
    true_ids, false_ids = [0] * len(nodes), [0] * len(nodes)
    for i in branch:  # preorder: the left subtree starts right after the node, the right one after the left one
        true_ids[i], false_ids[i] = i + 1, _subtree_end(nodes, i + 1)
    leaves = [i for i in range(len(nodes)) if i not in branch]
    flat = g("Reshape", x, g.const([-1, 1]))
    tree = helper.make_node(
        "TreeEnsembleRegressor", [flat], [f"{g.prefix}tree"], domain=ML_DOMAIN, n_targets=1,
        nodes_treeids=[0] * len(nodes), nodes_nodeids=list(range(len(nodes))), nodes_featureids=[0] * len(nodes),
        nodes_modes=["BRANCH_LEQ" if i in branch else "LEAF" for i in range(len(nodes))],
        nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids,
        nodes_missing_value_tracks_true=[1 if i in branch else 0 for i in range(len(nodes))],
        target_treeids=[0] * len(leaves), target_nodeids=leaves, target_ids=[0] * len(leaves),
        aggregate_function="SUM", post_transform="NONE")
    tree.attribute.extend([
        helper.make_attribute_ref("nodes_values", AttributeProto.FLOATS, ref_attr_name="tree_thresholds"),
        helper.make_attribute_ref("target_weights", AttributeProto.FLOATS, ref_attr_name="tree_levels")])
    g.nodes.append(tree)
    return g("Reshape", f"{g.prefix}tree", g("Shape", x))


def _subtree_end(nodes: list[tuple[str, int]], start: int) -> int:
    """Index just past the subtree that starts at `start` (preorder)."""
    pending, i = 1, start
    while pending:
        pending += 1 if nodes[i][0] == "branch" else -1
        i += 1
    return i


# --- the grid body ------------------------------------------------------------------------------------------
#
# The runtime computes a bucket b = max(int(min((x - offset) * scale, B - 1)), 0) (int() truncates; NaN and -inf
# give a negative or out-of-range int that the max takes to 0, +inf gives B - 1). In exact arithmetic x sits at
# v = (x - offset) * scale, and the rounded float32 ops move v by far less than a bucket (relative error ~2**-22,
# B <= GRID_MAX_BUCKETS), so a value that lands in bucket b has v in [b - 1, b + 2), the bucket's window (bucket 0:
# v < 2, bucket B - 1: v >= B - 2). Thresholds below the window count for every value in it (grid_codes[b]); those
# inside it, at most M, are compared with x one by one (grid_thresholds, +inf padded); those above it count for
# none. So code = grid_codes[b] + sum_m [x > grid_thresholds[m, b]] = #{j : t_j < x}, exactly the tie rule, and the
# body looks Y = levels[code] up in one per-node table of (M + 1) * B levels.
# The first threshold sits at v = 3 and the last at v <= B - 4, so buckets 0 and B - 1 hold none in their windows.

def _grid_buckets(t: np.ndarray, comparisons: int) -> int:
    """The fewest buckets that leave at most `comparisons` thresholds in any window: any comparisons + 1
    consecutive thresholds must span >= 3 buckets. GRID_MAX_BUCKETS + 1 where none fits."""
    if len(t) <= comparisons:
        return 8
    span = float(np.min(t[comparisons:].astype(np.float64) - t[:-comparisons]))
    width = float(t[-1]) - float(t[0])
    if not span > 0 or not np.isfinite(width):
        return GRID_MAX_BUCKETS + 1
    return max(8, int(np.ceil(width * 3.125 / span)) + 8)  # 3.125 > 3: float32 offset/scale keep the spans >= 3


def grid_comparisons(codebooks) -> int | None:
    """The comparisons per bucket (M) a model's grid body needs so that every site's table has at most
    GRID_MAX_BUCKETS buckets, or None where more than GRID_MAX_COMPARISONS would be needed (then the tree)."""
    ts = [float32_thresholds(lv) for lv in codebooks]
    for m in range(1, GRID_MAX_COMPARISONS + 1):
        if all(_grid_table(t, m) is not None for t in ts):
            return m
    return None


def _grid_table(t: np.ndarray, comparisons: int) -> tuple[np.float32, np.float32, np.ndarray, np.ndarray] | None:
    """(offset, scale, codes [B], thresholds [M, B]) for the float32 thresholds t, or None if the grid fails."""
    buckets = _grid_buckets(t, comparisons)
    if buckets > GRID_MAX_BUCKETS:
        return None
    width = float(t[-1]) - float(t[0])
    scale = np.float32((buckets - 7) / width) if width > 0 else np.float32(1.0)
    offset64 = np.float64(t[0]) - 3.0 / np.float64(scale)
    if not abs(offset64) < np.finfo(np.float32).max:
        return None
    offset = np.float32(offset64)
    v = (t.astype(np.float64) - np.float64(offset)) * np.float64(scale)  # exact positions of the thresholds
    if not (np.all(np.isfinite(v)) and v[0] >= 2.5 and v[-1] <= buckets - 3.5):
        return None  # offset/scale rounding moved the ends into the edge buckets' windows
    if scale < np.finfo(np.float32).tiny or abs(float(offset)) + (buckets + 1) / float(scale) >= 2.0**127:
        return None  # a subnormal scale, or x - offset could overflow float32 next to the last threshold
    b = np.arange(buckets, dtype=np.float64)
    low = np.where(b == 0, -np.inf, b - 1)  # window [low, high)
    high = np.where(b == buckets - 1, np.inf, b + 2)
    codes = np.searchsorted(v, low, side="left")  # thresholds strictly below the window
    inside = np.searchsorted(v, high, side="left") - codes
    if inside.max() > comparisons:
        return None
    table = np.full((comparisons, buckets), np.inf, np.float32)
    for m in range(comparisons):
        has = inside > m
        table[m, has] = t[codes[has] + m]
    return offset, scale, codes.astype(np.int64), table


def grid_attributes(levels: np.ndarray, comparisons: int) -> dict:
    """The values a NUQuant node carries for the grid body with M = `comparisons` (see grid_comparisons)."""
    table = _grid_table(float32_thresholds(levels), comparisons)
    if table is None:
        raise ValueError(f"no grid of <= {GRID_MAX_BUCKETS} buckets with {comparisons} comparisons fits this codebook")
    offset, scale, codes, thresholds = table
    return {"grid_offset": float(offset), "grid_scale": float(scale), "grid_codes": [int(c) for c in codes],
            "grid_thresholds": [float(v) for v in thresholds.ravel()]}


def _grid_body(comparisons: int) -> Callable[[_Nodes, str, str, int], str]:
    def body(g: _Nodes, x: str, levels: str, k: int) -> str:
        """Bucket b; a = how many of the bucket's thresholds x exceeds; Y = table[a * B + b], where the table
        (built from `levels` and grid_codes, constant per node) holds levels[grid_codes[b] + a]. Flat tensors:
        GatherElements from a 1-D table is ONNX Runtime's cheap lookup; two per element for M = 1. float32 only."""
        i32 = TensorProto.INT32
        flat = g("Reshape", x, g.const([-1]))
        codes = g("Cast", g.ref("grid_codes", "value_ints"), to=i32)
        buckets = g("Cast", g("Size", codes), to=i32)
        top = g.const(k - 1, np.int32)
        table = g("Concat", *(g("Gather", levels, g("Min", g("Add", codes, g.const(a, np.int32)), top))
                              for a in range(comparisons + 1)), axis=0)
        last = g("Cast", g("Sub", buckets, g.const(1, np.int32)), to=TensorProto.FLOAT)
        u = g("Mul", g("Sub", flat, g.ref("grid_offset", "value_float")), g.ref("grid_scale", "value_float"))
        bucket = g("Max", g("Cast", g("Min", u, last), to=i32), g.const(0, np.int32))
        thresholds = g("Reshape", g.ref("grid_thresholds", "value_floats"), g.const([comparisons, -1]))
        above = None
        for m in range(comparisons):
            tm = g("Gather", thresholds, g.const(m), axis=0)
            step = g("Cast", g("Greater", flat, g("GatherElements", tm, bucket)), to=i32)
            above = step if above is None else g("Add", above, step)
        index = g("Add", bucket, g("Mul", above, buckets))
        return g("Reshape", g("GatherElements", table, index), g("Shape", x))
    return body


_BODIES: dict[str, Callable[[_Nodes, str, str, int], str]] = {
    "tree": _body_tree, "select": _body_select, "bsearch": _body_bsearch, "count": _body_count, "argmin": _body_argmin, "lut": _body_lut}


def nuquant_function(k: int, opset: int, body: str = DEFAULT_NUQUANT_BODY, comparisons: int = 1) -> FunctionProto:
    """NUQuant(X, levels) -> Y for codebooks of K = 2**bits levels, as a model-local function (the grid body for
    M = `comparisons` thresholds per bucket)."""
    if k < 2 or k & (k - 1):
        raise ValueError(f"NUQuant bodies need K = 2**bits levels, got {k}")
    g = _Nodes("nq_")
    y = (_grid_body(comparisons) if body == "grid" else _BODIES[body])(g, "X", "levels", k)
    g.nodes.append(helper.make_node("Identity", [y], ["Y"]))
    tree = body == "tree"
    attrs = {"tree": TREE_ATTRS, "grid": GRID_ATTRS}.get(body, ())
    what = f"grid body, M={comparisons}" if body == "grid" else f"{body} body"
    return helper.make_function(DOMAIN, "NUQuant", ["X", "levels"], ["Y"], g.nodes,
                                [helper.make_opsetid("", opset)] + ([helper.make_opsetid(ML_DOMAIN, ML_OPSET)] if tree else []),
                                attributes=list(PLUGIN_ATTRS) + list(attrs),
                                doc_string=f"I²NQ nearest-level quantize-dequantize ({what}, K={k}).")


def body_attributes(body: str, levels: np.ndarray, comparisons: int = 1) -> dict:
    """The attributes a NUQuant node needs for `body` (the grid and tree bodies read its codebook from them)."""
    if body == "grid":
        return grid_attributes(levels, comparisons)
    return tree_attributes(levels) if body == "tree" else {}


def lut_dequant_function(opset: int) -> FunctionProto:
    """LUTDequant(codes, levels; bits, shape, axis) -> W, generic in bits/shape/axis via attribute refs."""
    g = _Nodes("lut_")
    f32 = TensorProto.FLOAT
    bits64 = g.ref("bits", "value_int")
    bits = g("Cast", bits64, to=f32)
    shape = g.ref("shape", "value_ints")
    axis = g.ref("axis", "value_int")
    # bit p of the stream is bit p % 8 of byte p // 8: expand every byte into its 8 bits
    byte = g("Unsqueeze", g("Cast", "codes", to=f32), g.const([1]))
    pow2 = g.const(2.0 ** -np.arange(9), np.float32)  # 2^-k for k = 0..8
    shifted = g("Floor", g("Mul", byte, pow2))  # [nbytes, 9]: byte >> k
    hi = g("Slice", shifted, g.const([1]), g.const([9]), g.const([1]))
    lo = g("Slice", shifted, g.const([0]), g.const([8]), g.const([1]))
    stream = g("Reshape", g("Sub", lo, g("Mul", hi, g.const(2.0, np.float32))), g.const([-1]))
    numel = g("ReduceProd", shape, keepdims=0)
    nbits = g("Cast", g("Mul", g("Cast", numel, to=f32), bits), to=TensorProto.INT64)
    stream = g("Slice", stream, g.const([0]), g("Unsqueeze", nbits, g.const([0])))
    per_code = g("Reshape", stream, g("Concat", g.const([-1]), g("Unsqueeze", bits64, g.const([0])), axis=0))
    weights = g("Slice", g.const(2.0 ** np.arange(8), np.float32), g.const([0]), g("Unsqueeze", bits64, g.const([0])))
    code = g("MatMul", per_code, weights)  # [numel]
    # per-channel levels [C, K]: flat index (channel % C_levels) * K + code; per-tensor [K]: C_levels = 1
    k = g("Cast", g("Gather", g("Shape", "levels"), g.const(-1)), to=f32)
    c_levels = g("Div", g("Cast", g("Size", "levels"), to=f32), k)
    outer = g("Cast", g("ReduceProd", g("Slice", shape, g.const([0]),
                                        g("Unsqueeze", g("Add", axis, g.const(1)), g.const([0]))), keepdims=0), to=f32)
    inner = g("Div", g("Cast", numel, to=f32), outer)
    element = g("Cast", g("Range", g.const(0), numel, g.const(1)), to=f32)
    channel = g("Floor", g("Div", element, inner))
    channel = g("Sub", channel, g("Mul", g("Floor", g("Div", channel, c_levels)), c_levels))
    index = g("Cast", g("Add", g("Mul", channel, k), code), to=TensorProto.INT32)
    w = g("Gather", g("Reshape", "levels", g.const([-1])), index)
    g.nodes.append(helper.make_node("Reshape", [w, shape], ["W"]))
    return helper.make_function(DOMAIN, "LUTDequant", ["codes", "levels"], ["W"], g.nodes,
                                [helper.make_opsetid("", opset)], attributes=["bits", "shape", "axis", *PLUGIN_ATTRS],
                                doc_string="I²NQ weight rebuild: unpack LSB-first bit-packed codes, look up levels.")


def plugin_attrs() -> dict[str, str]:
    """Attributes every custom node carries so TensorRT maps it to the i2nq plugin (version 1)."""
    return {"plugin_namespace": "i2nq", "plugin_version": "1"}


def custom_node(op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> NodeProto:
    """A node of the ai.i2nq domain with the plugin attributes."""
    return helper.make_node(op, inputs, outputs, name=name, domain=DOMAIN, **attrs, **plugin_attrs())


@contextmanager
def schemas_registered() -> Iterator[None]:
    """ONNX op schemas for NUQuant and LUTDequant while the block runs: onnxscript, which torch's exporter builds
    graphs with, accepts only ops with a schema. They are removed afterwards, so other code in the process (an ONNX
    checker run on someone else's ai.i2nq-domain model) never sees them."""
    from onnx import defs
    from onnx.defs import OpSchema

    string, integer, ints = OpSchema.AttrType.STRING, OpSchema.AttrType.INT, OpSchema.AttrType.INTS
    optional = [OpSchema.Attribute(name, string, "", required=False) for name in (*PLUGIN_ATTRS, "i2nq_site")]
    floats = ["tensor(float)", "tensor(float16)"]
    param = OpSchema.FormalParameter
    schemas = [
        OpSchema("NUQuant", DOMAIN, DOMAIN_VERSION, doc="Nearest-level quantize-dequantize (tie: lower level).",
                 inputs=[param("X", "T"), param("levels", "T")], outputs=[param("Y", "T")],
                 type_constraints=[("T", floats, "")], attributes=optional),
        OpSchema("LUTDequant", DOMAIN, DOMAIN_VERSION, doc="Unpack bit-packed codes and look them up in levels.",
                 inputs=[param("codes", "C"), param("levels", "T")], outputs=[param("W", "T")],
                 type_constraints=[("C", ["tensor(uint8)"], ""), ("T", floats, "")],
                 attributes=[OpSchema.Attribute("bits", integer, "", required=True),
                             OpSchema.Attribute("shape", ints, "", required=True),
                             OpSchema.Attribute("axis", integer, "", required=False), *optional]),
    ]
    added = []
    for schema in schemas:
        if not defs.has(schema.name, DOMAIN_VERSION, DOMAIN):
            defs.register_schema(schema)
            added.append(schema.name)
    try:
        yield
    finally:
        for name in added:
            defs.deregister_schema(name, DOMAIN_VERSION, DOMAIN)
