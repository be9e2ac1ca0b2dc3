"""Memory guard: estimate the memory a model call takes before making it, and refuse (one line, with a tile that
fits) what would exceed a budget, instead of an allocation failure deep in ONNX Runtime or the system killing
the process.

The estimate (ONNX models): the graph's functions are inlined and ONNX shape inference gives every tensor's
size at two input shapes; each size is taken as linear in (batch x tile pixels), which it is for a fully
convolutional SR network. Walking the nodes in graph order, a tensor is live from the node that makes it to its
last reader; the estimate is the largest sum of live tensors (weights excluded: they are loaded already) times
OVERHEAD, the ratio of ONNX Runtime's measured peak (its CPU arena grows by doubling, and convolutions take
workspace) to that sum: 1.5-2.1 for the shipped model at tiles of 128 to 1000 px (docs/runtime.md).

The budget: `max_memory` / --max-memory, by default DEFAULT_BUDGET_FRACTION of the machine's physical memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from i2nq.errors import I2NQError, option

#: ONNX Runtime's peak over the live-tensor estimate (measured on the shipped model, see docs/runtime.md).
OVERHEAD = 2.2
#: Default budget: this share of the machine's physical memory.
DEFAULT_BUDGET_FRACTION = 0.5
_GIB = 1 << 30


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def resolve_budget(max_memory: int | str | None) -> int | None:
    """Bytes a model call may take: 'auto' (half the physical memory), a number of bytes, or None/0 (no guard)."""
    if max_memory == "auto":
        total = physical_memory()
        return int(total * DEFAULT_BUDGET_FRACTION) if total else None
    if max_memory is None:
        return None
    try:
        value = int(max_memory)
    except (TypeError, ValueError):
        raise I2NQError(f"max_memory must be a number of bytes, 'auto' or None, not {max_memory!r}") from None
    if value < 0:
        raise I2NQError(f"{option('--max-memory', 'max_memory=')} must be >= 0 (0: no limit), not {value}")
    return value or None


def parse_size(text: str) -> int:
    """Bytes from '8G', '512M', '1.5G', '0' (binary units: 1G = 2**30 bytes)."""
    text = text.strip()
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:].upper(), 1)
    number = text[:-1] if factor > 1 else text
    if number.upper().endswith("I"):  # 8Gi, 8GiB written loosely
        number = number[:-1]
    value = float(number) * factor
    if not 0 <= value < 1 << 60:
        raise ValueError(text)
    return int(value)


def gib(n: float) -> str:
    if n >= _GIB / 10:
        return f"{n / _GIB:.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


class GraphMemory:
    """Live tensor bytes of an ONNX graph as a function of p = batch x tile pixels: max over nodes of a + b p."""

    def __init__(self, steps: list[tuple[float, float]]) -> None:
        self.steps = steps

    def __call__(self, n: int, h: int, w: int) -> int:
        p = n * h * w
        return int(OVERHEAD * max((a + b * p for a, b in self.steps), default=0.0))

    @classmethod
    def of(cls, path: str | Path) -> GraphMemory | None:
        """The estimate for an ONNX file, or None when its shapes cannot be inferred."""
        try:
            import onnx
            from onnx import helper, inliner, shape_inference

            model = inliner.inline_local_functions(onnx.load(str(path), load_external_data=False))
            graph = model.graph
            weights = {t.name for t in graph.initializer}
            shapes = [(1, 48, 48), (2, 64, 64)]
            sizes = []
            for n, h, w in shapes:
                fixed = onnx.ModelProto()
                fixed.CopyFrom(model)
                dims = fixed.graph.input[0].type.tensor_type.shape.dim
                channels = dims[1].dim_value or 3
                for dim, value in zip(dims, (n, channels, h, w)):
                    dim.ClearField("dim_param")
                    dim.dim_value = value
                inferred = shape_inference.infer_shapes(fixed, data_prop=True).graph
                known = {}
                for info in (*inferred.value_info, *inferred.input, *inferred.output):
                    t = info.type.tensor_type
                    if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
                        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
                        known[info.name] = math.prod(d.dim_value for d in t.shape.dim) * itemsize
                sizes.append(known)
        except Exception:  # noqa: BLE001 - no estimate is better than a failure to open the model
            return None
        (p1, p2) = (n * h * w for n, h, w in shapes)

        def linear(name: str) -> tuple[float, float] | None:
            s1, s2 = sizes[0].get(name), sizes[1].get(name)
            if s1 is None or s2 is None:
                return None
            b = (s2 - s1) / (p2 - p1)
            return s1 - b * p1, b

        out_names = {o.name for o in graph.output}
        last: dict[str, int] = {}
        for i, node in enumerate(graph.node):
            for x in node.input:
                last[x] = i
        for name in out_names:
            last[name] = len(graph.node)
        live: dict[str, tuple[float, float]] = {}
        first = graph.input[0].name
        if (size := linear(first)) is not None:
            live[first] = size
        steps = []
        for i, node in enumerate(graph.node):
            biggest_input = max((live[x] for x in node.input if x in live), key=lambda ab: ab[1], default=(0.0, 0.0))
            for o in node.output:
                if o and o not in weights:
                    live[o] = linear(o) or biggest_input  # unknown: as large as its largest input
            steps.append((sum(a for a, _ in live.values()), sum(b for _, b in live.values())))
            for x in [x for x in live if last.get(x, -1) <= i and x not in out_names]:
                del live[x]
        return cls(steps) if steps else None


def largest_tile(estimate: Callable[[int, int, int], int], budget: int, least: int, most: int = 8192,
                 step: int = 16) -> int | None:
    """The largest square tile (a multiple of `step`, at least `least`) whose single-tile call fits `budget`."""
    lo = -(-least // step) * step
    if estimate(1, lo, lo) > budget:
        return None
    hi = max(lo, most // step * step)
    while lo < hi:  # largest fitting, by bisection over multiples of step
        mid = (lo + hi + step) // (2 * step) * step
        if estimate(1, mid, mid) <= budget:
            lo = mid
        else:
            hi = mid - step
    return lo
