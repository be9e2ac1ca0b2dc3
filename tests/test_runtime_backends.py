"""Backends: the ONNX path needs no torch; the torch backend wraps i2nq.models.load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import i2nq
from i2nq.runtime import backends

NO_TORCH = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class BlockTorch(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, BlockTorch())
    import numpy as np
    import i2nq, i2nq.runtime
    assert "torch" not in sys.modules
    upscaler = i2nq.Upscaler(sys.argv[1])
    out = upscaler.upscale(np.zeros((9, 11, 3), np.uint8))
    assert out.shape == (18, 22, 3), out.shape
    from i2nq.cli import main
    assert main(["upscale", sys.argv[2], "-o", sys.argv[3], "--model", sys.argv[1], "--no-progress"]) == 0
    assert "torch" not in sys.modules
    print("ok")
""")


def test_onnx_path_runs_without_torch(tiny_model, clip, tmp_path) -> None:
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(tiny_model(scale=2)), str(clip),
                             str(tmp_path / "out.mp4")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_auto_prefers_gpu_backends(monkeypatch) -> None:
    files = backends.ModelFiles(onnx=Path("m.onnx"), checkpoint="m")
    monkeypatch.setattr(backends, "_gpu_present", lambda: False)
    assert backends._auto_choice(files, cpu_only=False) == ("onnxruntime", False)
    assert backends._auto_choice(backends.ModelFiles(checkpoint="m"), cpu_only=False) == ("torch", False)
    monkeypatch.setattr(backends, "_gpu_present", lambda: True)
    monkeypatch.setattr(backends, "_installed", lambda name: True)
    assert backends._auto_choice(files, cpu_only=False) == ("tensorrt", True)
    assert backends._auto_choice(files, cpu_only=True) == ("onnxruntime", False)


def test_parse_device() -> None:
    assert backends.parse_device(None) == (False, 0)
    assert backends.parse_device("cpu") == (True, 0)
    assert backends.parse_device("cuda:1") == (False, 1)
    assert backends.parse_device(2) == (False, 2)


def test_torch_backend_wraps_models_load(monkeypatch, tmp_path) -> None:
    torch = pytest.importorskip("torch")

    class Nearest(torch.nn.Module):
        info = types.SimpleNamespace(arch="nearest", scale=2, bits="fp32", receptive_field=0)

        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    loaded = []
    fake = types.ModuleType("i2nq.models")
    fake.load = lambda ref: loaded.append(ref) or Nearest()
    monkeypatch.setitem(sys.modules, "i2nq.models", fake)
    edsr = types.ModuleType("i2nq.models.edsr")  # without it the test passed only after another had imported it
    edsr.fold_relus_ = lambda module: module
    monkeypatch.setitem(sys.modules, "i2nq.models.edsr", edsr)
    checkpoint = tmp_path / "m.safetensors"
    checkpoint.write_bytes(b"")
    upscaler = i2nq.Upscaler(checkpoint, device="cpu", tile=8)
    assert upscaler.backend.name == "torch" and loaded == [checkpoint]
    image = np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    assert np.array_equal(upscaler.upscale(image), image.repeat(2, 0).repeat(2, 1))
