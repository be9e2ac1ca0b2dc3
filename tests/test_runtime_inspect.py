"""`i2nq inspect`: model descriptions read from the files themselves (no torch), one-line errors otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from i2nq.cli import main
from i2nq.runtime.inspect import inspect_model


def test_shipped_export_agrees_with_its_checkpoint() -> None:
    """The ONNX export and the checkpoint it came from describe the same model."""
    onnx_info = inspect_model("default")
    ckpt = inspect_model(Path(onnx_info["file"]).with_suffix(".safetensors"))
    assert onnx_info["format"] == "onnx" and ckpt["format"] == "checkpoint"
    for key in ("arch", "scale", "bits"):
        assert onnx_info["meta"][key] == ckpt["meta"][key]
    sites = [c["site"] for c in ckpt["quantized_convs"]]
    assert [a["site"] for a in onnx_info["activation_sites"]] == sites
    assert [w["site"] for w in onnx_info["weight_sites"]] == sites
    w_bits = ckpt["quant"]["w_bits"]
    assert {w["bits"] for w in onnx_info["weight_sites"]} == {w_bits}
    assert {a["levels"] for a in onnx_info["activation_sites"]} == {1 << ckpt["quant"]["a_bits"]}
    assert {c["act_levels"] for c in ckpt["quantized_convs"]} == {1 << ckpt["quant"]["a_bits"]}
    # Packed codes take bits/8 bytes per weight element.
    for w in onnx_info["weight_sites"]:
        numel = 1
        for d in w["shape"]:
            numel *= d
        assert w["code_bytes"] == (numel * w_bits + 7) // 8
    sizes = onnx_info["initializer_bytes"]
    assert sizes["codes"] == sum(w["code_bytes"] for w in onnx_info["weight_sites"])
    assert sum(sizes.values()) < onnx_info["bytes"]


def test_plain_onnx_and_cli_json(tiny_model, capsys) -> None:
    path = tiny_model(scale=3, convs=2)
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["meta"]["scale"] == "3" and info["meta"]["receptive_field"] == "2"
    assert info["activation_sites"] == [] and info["weight_sites"] == []
    assert info["ops"]["Conv"] == 2
    assert main(["inspect", str(tiny_model(metadata=False))]) == 0
    assert "no i2nq metadata" in capsys.readouterr().out


@pytest.mark.parametrize("name,content,message", [
    ("broken.onnx", b"garbage", "cannot read broken.onnx as ONNX"),
    ("model.engine", b"x", "model.engine.json"),
    ("weights.safetensors", b"\x05\x00\x00\x00\x00\x00\x00\x00{}", "not an i2nq checkpoint"),
    ("notes.txt", b"hello", "unsupported model file"),
    ("edsr_x4.pt", b"PK\x03\x04", "import it first with i2nq convert edsr_x4.pt -o edsr_x4.safetensors"),
])
def test_bad_files_are_one_line_errors(tmp_path: Path, capsys, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    assert main(["inspect", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_engine_is_described_from_its_record(tmp_path: Path, capsys) -> None:
    from i2nq.plugins.engine import EngineRecord
    from i2nq.runtime.backends import ModelMeta

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine")
    EngineRecord("ab" * 32, "1", ((1, 3, 64, 64),) * 3, "float16", "11.1.0", "NVIDIA H200",
                 ModelMeta("edsr-small", 4, "w4a4", 20)).save(engine)
    assert main(["inspect", str(engine)]) == 0
    out = capsys.readouterr().out
    assert "edsr-small x4, w4a4" in out and "TensorRT 11.1.0 for NVIDIA H200" in out
