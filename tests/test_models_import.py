"""Importing EDSR checkpoints of EDSR-PyTorch and BasicSR: the imported model computes what theirs computes.

The reference modules below follow each code base's EDSR (module names, mean shift, pixel range, residual
scaling) so that their state dicts have the same keys and their forward passes the same arithmetic.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from i2nq.errors import I2NQError
from i2nq.models import load
from i2nq.models.checkpoint import read_config
from i2nq.models.foreign import import_checkpoint

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def upsample(scale: int, n: int) -> nn.Sequential:
    stages = [(9, 3)] if scale == 3 else [(4, 2)] * int(math.log2(scale))
    return nn.Sequential(*[m for k, r in stages for m in (conv(n, k * n), nn.PixelShuffle(r))])


class MeanShift(nn.Conv2d):
    def __init__(self, rgb_range: float, sign: int, mean=DIV2K_MEAN, std=(1.0, 1.0, 1.0)) -> None:
        super().__init__(3, 3, 1)
        s = torch.tensor(std)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1) / s.view(3, 1, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(mean) / s


class PyTorchResBlock(nn.Module):
    def __init__(self, n: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(n, n), nn.ReLU(True), conv(n, n))
        self.res_scale = res_scale

    def forward(self, x):
        return self.body(x).mul(self.res_scale) + x


class EDSRPyTorch(nn.Module):
    """EDSR-PyTorch's model/edsr.py: input and output in [0, rgb_range]."""

    def __init__(self, scale: int, n_blocks: int, n: int, res_scale: float = 1.0, rgb_range: float = 255, **ms) -> None:
        super().__init__()
        self.sub_mean, self.add_mean = MeanShift(rgb_range, -1, **ms), MeanShift(rgb_range, 1, **ms)
        self.head = nn.Sequential(conv(3, n))
        self.body = nn.Sequential(*[PyTorchResBlock(n, res_scale) for _ in range(n_blocks)], conv(n, n))
        self.tail = nn.Sequential(upsample(scale, n), conv(n, 3))

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(self.body(x) + x))


class BasicSRResBlock(nn.Module):
    def __init__(self, n: int, res_scale: float) -> None:
        super().__init__()
        self.conv1, self.conv2, self.relu, self.res_scale = conv(n, n), conv(n, n), nn.ReLU(True), res_scale

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class EDSRBasicSR(nn.Module):
    """BasicSR's archs/edsr_arch.py: input and output in [0, 1], img_range inside."""

    def __init__(self, scale: int, n_blocks: int, n: int, res_scale: float = 1.0, img_range: float = 255.0) -> None:
        super().__init__()
        self.img_range, self.mean = img_range, torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1)
        self.conv_first = conv(3, n)
        self.body = nn.Sequential(*[BasicSRResBlock(n, res_scale) for _ in range(n_blocks)])
        self.conv_after_body = conv(n, n)
        self.upsample = upsample(scale, n)
        self.conv_last = conv(n, 3)

    def forward(self, x):
        x = self.conv_first((x - self.mean) * self.img_range)
        res = self.conv_after_body(self.body(x)) + x
        return self.conv_last(self.upsample(res)) / self.img_range + self.mean


class MSRResNet(nn.Module):
    """BasicSR's archs/srresnet_arch.py: input and output in [0, 1]."""

    def __init__(self, scale: int, n_blocks: int, n: int) -> None:
        super().__init__()
        self.upscale = scale
        self.conv_first = conv(3, n)
        self.body = nn.Sequential(*[BasicSRResBlock(n, 1.0) for _ in range(n_blocks)])
        self.upconv1 = conv(n, n * (9 if scale == 3 else 4))
        if scale == 4:
            self.upconv2 = conv(n, n * 4)
        self.pixel_shuffle = nn.PixelShuffle(3 if scale == 3 else 2)
        self.conv_hr, self.conv_last = conv(n, n), conv(n, 3)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, x):
        out = self.body(self.lrelu(self.conv_first(x)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upscale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + nn.functional.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Weights with some spread (default init plus noise), biases nonzero, the mean shift left alone."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mean" not in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def frame(seed: int = 0, size=(13, 11)) -> torch.Tensor:
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("rgb_range", [255.0, 1.0])
def test_edsr_pytorch_import_computes_the_same(tmp_path, scale, rgb_range):
    ref = randomized(EDSRPyTorch(scale, 3, 8, rgb_range=rgb_range), scale)
    torch.save(ref.state_dict(), tmp_path / "edsr.pt")
    ours = load(tmp_path / "edsr.pt")
    x = frame(scale)
    with torch.no_grad():
        want, got = ref(x * rgb_range) / rgb_range, ours(x)
    assert got.shape == (1, 3, 13 * scale, 11 * scale)
    assert float((got - want).abs().max()) < 1e-5 * max(1.0, float(want.abs().max()))
    assert (ours.arch, ours.scale, ours.n_blocks, ours.n_feats, ours.res_scale) == ("edsr-baseline", scale, 3, 8, 1.0)


@pytest.mark.parametrize("wrap", ["params", "params_ema", "module.", "safetensors"])
def test_basicsr_import_computes_the_same(tmp_path, wrap):
    ref = randomized(EDSRBasicSR(4, 2, 8, res_scale=0.1), 7)
    state = ref.state_dict()
    path = tmp_path / ("edsr.safetensors" if wrap == "safetensors" else "edsr.pth")
    if wrap == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif wrap == "module.":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save({wrap: state, "other": {"step": torch.tensor(1)}}, path)
    imported = import_checkpoint(path, res_scale=0.1)
    x = frame(1)
    with torch.no_grad():
        diff = float((imported.model(x) - ref(x)).abs().max())
    assert diff < 1e-5
    assert imported.source == dict(format="BasicSR", file=path.name, rgb_range=255.0, res_scale=0.1)
    with torch.no_grad():  # the default res_scale (1 below 256 features) is not this model's: the check can fail
        assert float((import_checkpoint(path).model(x) - ref(x)).abs().max()) > 1e-3


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_msrresnet_import_computes_the_same_and_exports(tmp_path, scale):
    from i2nq.export.onnx_export import to_onnx
    from i2nq.quant import I2NQConfig, calibrate_, quantize_

    ref = randomized(MSRResNet(scale, 2, 8), scale)
    torch.save({"params": ref.state_dict()}, tmp_path / "msrresnet.pth")
    imported = import_checkpoint(tmp_path / "msrresnet.pth")
    model, x = imported.model, frame(scale)
    assert (model.arch, model.scale, model.n_blocks, model.n_feats) == ("srresnet", scale, 2, 8)
    assert imported.source["format"] == "BasicSR"
    with torch.no_grad():
        assert float((model(x) - ref(x)).abs().max()) < 1e-5
    quantize_(model, I2NQConfig(bits=4))
    calibrate_(model, [torch.rand(2, 3, 16, 16)])
    import onnxruntime as ort

    sess = ort.InferenceSession(to_onnx(model.eval()).SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(sess.run(None, {"input": x.numpy()})[0] - model(x).numpy()).max() < 1e-5
    with pytest.raises(I2NQError, match="MSRResNet works on pixels in"):
        import_checkpoint(tmp_path / "msrresnet.pth", rgb_range=255)


def test_res_scale_default_follows_feature_count(tmp_path):
    torch.save(EDSRBasicSR(2, 1, 256).state_dict(), tmp_path / "l.pth")
    torch.save(EDSRBasicSR(2, 1, 16).state_dict(), tmp_path / "m.pth")
    big, small = import_checkpoint(tmp_path / "l.pth").model, import_checkpoint(tmp_path / "m.pth").model
    assert (big.arch, big.res_scale, small.arch, small.res_scale) == ("edsr", 0.1, "edsr-baseline", 1.0)


def test_convert_cli_writes_an_i2nq_checkpoint_that_quantizes_and_exports(tmp_path):
    ref = randomized(EDSRPyTorch(2, 2, 8), 3)
    torch.save(ref.state_dict(), tmp_path / "edsr_x2.pt")
    cli = [sys.executable, "-m", "i2nq.cli"]
    r = subprocess.run([*cli, "convert", str(tmp_path / "edsr_x2.pt"), "-o", str(tmp_path / "f.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "EDSR-PyTorch EDSR, 2 blocks, 8 features, x2, res_scale 1, rgb_range 255" in r.stdout
    cfg = read_config(tmp_path / "f.safetensors")
    assert cfg["source"]["format"] == "EDSR-PyTorch"
    assert cfg["arch_overrides"] == {"n_blocks": 2, "n_feats": 8}
    r = subprocess.run([*cli, "inspect", str(tmp_path / "f.safetensors")], capture_output=True, text=True)
    assert "imported     from EDSR-PyTorch edsr_x2.pt (rgb_range 255.0, res_scale 1.0)" in r.stdout
    x = frame(2)
    with torch.no_grad():
        assert float((load(tmp_path / "f.safetensors")(x) - ref(x * 255) / 255).abs().max()) < 1e-5
    again = subprocess.run([*cli, "convert", str(tmp_path / "edsr_x2.pt"), "-o", str(tmp_path / "f.safetensors")],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr
    own = subprocess.run([*cli, "convert", str(tmp_path / "f.safetensors"), "-o", str(tmp_path / "g.safetensors")],
                         capture_output=True, text=True)
    assert own.returncode == 2 and "already an i2nq checkpoint; there is nothing to convert" in own.stderr

    r = subprocess.run([*cli, "quantize", str(tmp_path / "edsr_x2.pt"), "-o", str(tmp_path / "q.safetensors"),
                        "--steps", "0", "--calib-batches", "1", "--batch", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*cli, "export-onnx", str(tmp_path / "q.safetensors"), "-o", str(tmp_path / "q.onnx"),
                        "--verify"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = ref(x * 255) / 255
    assert y.shape == tuple(want.shape)
    assert 10 * np.log10(1 / float(((torch.from_numpy(y) - want) ** 2).mean())) > 25  # W4A4 stays near the float model


def mutated(state: dict, drop: str | None = None, **shapes) -> dict:
    state = {k: v for k, v in state.items() if k != drop}
    state.update({k: torch.zeros(s) for k, s in shapes.items()})
    return state


@pytest.mark.parametrize("case, msg", [
    ("keys", "not a model architecture i2nq or spandrel knows"),
    ("missing", "unexpected structure (missing body.1.body.2.bias)"),
    ("extra", "unexpected structure (unexpected body.0.body.1.weight)"),
    ("gray", "only 3-channel RGB"),
    ("upsampler", "unsupported upsampler"),
    ("mean", "RGB mean other than DIV2K"),
    ("std", "rgb_std other than 1"),
    ("pickle", "not unpickled for safety"),
    ("garbage", "not a readable torch checkpoint"),
    ("list", "not a state dict"),
    ("shape", "tensor shapes do not form the model"),
])
def test_import_bad_input_is_one_clear_error(tmp_path, case, msg):
    state = EDSRPyTorch(2, 2, 8).state_dict()
    path = tmp_path / "x.pt"
    obj = {
        "keys": {"w": torch.zeros(1)},
        "missing": mutated(state, drop="body.1.body.2.bias"),
        "extra": mutated(state, **{"body.0.body.1.weight": (8,)}),
        "gray": mutated(state, **{"head.0.weight": (8, 1, 3, 3)}),
        "upsampler": mutated(state, **{"tail.0.0.weight": (16, 8, 3, 3)}),
        "mean": EDSRPyTorch(2, 2, 8, mean=(0.5, 0.5, 0.5)).state_dict(),
        "std": EDSRPyTorch(2, 2, 8, std=(0.5, 0.5, 0.5)).state_dict(),
        "pickle": EDSRPyTorch(2, 2, 8),
        "list": [torch.zeros(1)],
        "shape": mutated(state, **{"body.0.body.0.bias": (9,)}),
    }.get(case)
    if case == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:
        torch.save(obj, path)
    with pytest.raises(I2NQError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        import_checkpoint(path)
    r = subprocess.run([sys.executable, "-m", "i2nq.cli", "convert", str(path), "-o", str(tmp_path / "o.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_upscaler_runs_foreign_weights_on_the_torch_backend(tmp_path):
    from i2nq import Upscaler

    ref = randomized(EDSRBasicSR(2, 2, 8), 5)
    torch.save({"params": ref.state_dict()}, tmp_path / "EDSR_Mx2.pth")
    img = np.random.default_rng(0).integers(0, 256, (40, 33, 3), dtype=np.uint8)  # BGR, as cv2 reads
    up = Upscaler(tmp_path / "EDSR_Mx2.pth", backend="torch", tile=24)
    with torch.no_grad():
        rgb = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        want = (ref(rgb)[0].permute(1, 2, 0).numpy()[..., ::-1] * 255).clip(0, 255)
    got = up.upscale(img)
    assert got.shape == (80, 66, 3) and np.abs(got.astype(np.float64) - want).max() <= 0.51
