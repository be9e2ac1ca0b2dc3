"""Check, without TensorRT installed, that the TensorRT Python API our code calls exists in real TensorRT releases.

TensorRT's Python bindings are on PyPI (tensorrt-cu12-bindings / tensorrt-cu13-bindings: the pybind11 module,
about 1 MB) although the libraries they load are not, so the bindings cannot be imported here. Their binary
still holds every bound name as a string. This script collects the attributes that i2nq's TensorRT code reads
from TensorRT objects and looks for each in the bindings of the given wheels:

    pip download --no-deps -d third_party/trt-wheels tensorrt-cu12-bindings==10.13.0.35 \\
        tensorrt-cu12-bindings==10.16.1.11 tensorrt-cu13-bindings==11.4.0.106
    python bench/gpu/trt_api_names.py third_party/trt-wheels/*.whl

Exit 1 if a name is missing from a release where no fallback covers it. A name found is not a call that works:
only a GPU with TensorRT shows that.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("i2nq/plugins/engine.py", "i2nq/plugins/gpu.py", "i2nq/runtime/backends/tensorrt.py")
#: Variables that hold TensorRT objects in those files (the module itself is `trt`).
TRT_OBJECTS = {"trt", "builder", "network", "parser", "config", "profile", "registry", "timing", "engine", "context",
               "logger", "cache", "on_disk"}
#: Names used only as a fallback for another (gpu.register_plugin: get_creator, else get_plugin_creator).
FALLBACKS = {"get_plugin_creator": "get_creator"}


def used_names() -> set[str]:
    """Attributes read from TensorRT objects: trt.X.Y, builder.X(...).Y, self.engine.X, getattr(registry, "X")."""
    names: set[str] = set()
    for source in SOURCES:
        for node in ast.walk(ast.parse((REPO / source).read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                    and _root(node.args[0]) in TRT_OBJECTS and isinstance(node.args[1], ast.Constant):
                names.add(node.args[1].value)
            elif isinstance(node, ast.Attribute) and _root(node.value) in TRT_OBJECTS:
                names.add(node.attr)
    # `engine` is also a pathlib.Path in engine.py, and trt.__version__ a str: their methods are not TensorRT's.
    return names - set(dir(Path)) - set(dir(str))


def _root(node: ast.AST) -> str | None:
    """The variable an attribute chain starts from (`self.engine.x` starts from `engine`)."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        inner = node.func if isinstance(node, ast.Call) else node.value
        if isinstance(node, ast.Attribute) and isinstance(inner, ast.Name) and inner.id == "self":
            return node.attr
        node = inner
    return node.id if isinstance(node, ast.Name) else None


def bound_names(wheel: Path) -> bytes:
    """The bindings module and its Python wrapper of a tensorrt-*-bindings wheel, as one blob."""
    with zipfile.ZipFile(wheel) as z:
        return b"\0".join(z.read(n) for n in z.namelist() if n.endswith(("tensorrt.so", "__init__.py")))


def main(wheels: list[str]) -> int:
    if not wheels:
        print(__doc__)
        return 2
    names = sorted(used_names())
    missing = 0
    print(f"{len(names)} names: {' '.join(names)}")
    for wheel in map(Path, wheels):
        blob = bound_names(wheel)
        absent = [n for n in names if n.encode() not in blob]
        uncovered = [n for n in absent if not (n in FALLBACKS and FALLBACKS[n].encode() in blob)]
        missing += len(uncovered)
        note = f"absent but covered by a fallback: {', '.join(sorted(set(absent) - set(uncovered)))}" \
            if set(absent) - set(uncovered) else ""
        print(f"{wheel.name}: {'all found' if not uncovered else 'MISSING ' + ', '.join(uncovered)} {note}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
