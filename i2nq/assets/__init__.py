"""Shipped assets: default models, a sample image and a sample clip, resolved by name."""

from __future__ import annotations

from pathlib import Path

from i2nq.errors import I2NQError

ASSETS = Path(__file__).resolve().parent
MODELS = ASSETS / "models"


def model_names() -> list[str]:
    """Names of the shipped models (each has a .safetensors checkpoint, some also an .onnx export)."""
    return sorted({p.stem for p in MODELS.glob("*.safetensors")} | {p.stem for p in MODELS.glob("*.onnx")})


def shipped_model(name: str, suffix: str) -> Path:
    """Path of shipped model `name` with `suffix` ('.safetensors' or '.onnx'); I2NQError if absent."""
    path = MODELS / f"{name}{suffix}"
    if not path.is_file():
        known = ", ".join(model_names()) or "none"
        raise I2NQError(f"no shipped model {name!r} with a {suffix} file (shipped: {known})")
    return path


def sample(name: str) -> Path:
    """Path of a shipped sample file (e.g. 'sample.png', 'sample.mp4')."""
    path = ASSETS / name
    if not path.is_file():
        raise I2NQError(f"shipped sample {name!r} is missing from {ASSETS}")
    return path
