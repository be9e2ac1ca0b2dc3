"""Models, checkpoints, metrics, calibration and QAT (CPU, small)."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from i2nq.calib.data import PairSet, bicubic_down
from i2nq.calib.metrics import psnr_y, rgb_to_y, ssim_y
from i2nq.calib.pipeline import quantize_model
from i2nq.calib.train import TrainConfig
from i2nq.errors import I2NQError
from i2nq.models import build, load, save
from i2nq.quant import I2NQConfig, UniformConfig, calibrate_, quantize_, quantized_sites


def tiny(scale: int = 2, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("edsr-small", scale, n_blocks=2, n_feats=8, **kw)


def randomize_tail(model: torch.nn.Module) -> None:
    """The bicubic-skip arch starts with a zero tail; give it weights so outputs depend on the body."""
    with torch.no_grad():
        (model.tail[-1] if isinstance(model.tail, torch.nn.Sequential) else model.tail).weight.normal_(0, 0.05)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_model_shapes_and_descriptor(scale):
    m = tiny(scale).eval()
    out = m(torch.rand(1, 3, 13, 17))
    assert out.shape == (1, 3, 13 * scale, 17 * scale)
    assert m.info.scale == scale and m.info.bits == "fp32" and m.info.arch == "edsr-small"


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("arch", ["edsr-small", "edsr-baseline", "srresnet"])
def test_receptive_field_bounds_influence(arch, scale):
    """A pixel change moves outputs only within the stated radius (the tiler relies on this), and the radius
    is tight: the farthest output moved lies within one pixel of it."""
    torch.manual_seed(0)
    m = build(arch, scale, n_blocks=2, n_feats=4).eval().double()
    randomize_tail(m)
    r, s, farthest = m.receptive_field, scale, 0.0
    for c in range(r + 4, r + 4 + scale):  # every sub-pixel phase of the upsampler
        x = torch.rand(1, 3, 2 * r + 9 + scale, 2 * r + 9 + scale, dtype=torch.float64)
        with torch.no_grad():
            y0 = m(x)
            x[0, :, c, c] += 0.5
            changed = (m(x) - y0).abs().amax(1)[0] > 0
        ys, xs = torch.nonzero(changed, as_tuple=True)
        assert ys.numel() > 0
        # output pixel o is centered at input coordinate (o + 0.5) / s - 0.5
        farthest = max(farthest, float(((torch.cat([ys, xs]).double() + 0.5) / s - 0.5 - c).abs().max()))
    assert r - 1 < farthest <= r


def test_metrics_agree_with_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 40, 52, generator=g)
    sr = (hr + 0.05 * torch.randn(3, 40, 52, generator=g)).clamp(0, 1)
    b = 3
    ya, yb = rgb_to_y(sr)[b:-b, b:-b].numpy(), rgb_to_y(hr)[b:-b, b:-b].numpy()
    assert psnr_y(sr, hr, b) == pytest.approx(peak_signal_noise_ratio(yb, ya, data_range=255), abs=1e-9)
    ref = structural_similarity(yb, ya, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim_y(sr, hr, b) == pytest.approx(ref, abs=1e-6)
    assert ssim_y(hr, hr, b) == pytest.approx(1.0)


@pytest.mark.parametrize("config", [None, I2NQConfig(bits=3), UniformConfig(bits=2)])
def test_checkpoint_round_trip(tmp_path, config):
    m = tiny()
    randomize_tail(m)
    if config is not None:
        quantize_(m, config)
        calibrate_(m, [torch.rand(2, 3, 12, 12)])
    path = save(m.eval(), tmp_path / "m.safetensors")
    back = load(path)
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))
    assert back.info == m.info and back.quant_config == m.quant_config


def test_checkpoint_bad_inputs(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    for target, msg in [(tmp_path / "missing.safetensors", "not found"), (bad, "not a readable"),
                        ("no-such-model", "unknown model")]:
        with pytest.raises(I2NQError, match=msg):
            load(target)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(I2NQError, match="not a model architecture i2nq or spandrel knows"):
        load(tmp_path / "foreign.safetensors")


def test_quantize_keeps_head_and_tail_float_and_pins_zero_after_relu():
    m = tiny()
    quantize_(m, I2NQConfig(bits=2))
    names = [n for n, _ in quantized_sites(m)]
    assert names == ["body.0.conv1", "body.0.conv2", "body.1.conv1", "body.1.conv2", "body.2", "tail.0.0"]
    assert isinstance(m.head, torch.nn.Conv2d) and isinstance(m.tail[-1], torch.nn.Conv2d)
    samples = calibrate_(m, [torch.rand(2, 3, 16, 16)])
    assert float((samples["body.0.conv2"] == 0).float().mean()) > 0.2  # post-ReLU inputs hold exact zeros
    assert m.body[0].conv2.act_quant.codebook.levels()[0].item() == 0.0
    assert m.body[0].conv1.act_quant.codebook.levels()[0].item() < 0  # a signed site keeps a free L_0
    with pytest.raises(I2NQError, match="unsupported"):
        quantize_(tiny(), I2NQConfig(bits=5))


def smooth_pairs() -> PairSet:
    """Two smooth random 96x96 images as x2 training pairs of 12x12 LR patches."""
    g = torch.Generator().manual_seed(0)
    imgs = [torch.nn.functional.avg_pool2d(torch.rand(1, 3, 96, 96, generator=g), 5, 1, 2)[0] for _ in range(2)]
    return PairSet.from_images(imgs, 2, 12)


def test_a_few_qat_steps_reduce_the_loss():
    data = smooth_pairs()
    parent = tiny()
    randomize_tail(parent)
    cfg = TrainConfig(steps=30, batch=4, lr_patch=12, lr=2e-3, quant_lr=2e-3, log_every=1000, distill=0.0)
    eval_batch = data.batch(8, 12, torch.Generator().manual_seed(9))

    def loss(model):
        with torch.no_grad():
            return float(torch.nn.functional.l1_loss(model(eval_batch[0]), eval_batch[1]))

    quiet = dict(sets=(data, None), log=lambda s: None)
    untrained = quantize_model(parent, I2NQConfig(bits=4), None, TrainConfig(steps=0, batch=4, lr_patch=12), **quiet)
    trained = quantize_model(parent, I2NQConfig(bits=4), None, cfg, **quiet)
    assert loss(trained) < loss(untrained)


def test_feature_distillation_pulls_every_site_toward_the_parent():
    """FeatureTaps: one normalized-MSE term per quantized conv against the parent's conv of the same name; a few
    QAT steps with it (and no other loss) bring the sites' features closer; its hooks are gone after training."""
    from i2nq.calib.train import FeatureTaps

    data = smooth_pairs()
    parent = tiny()
    randomize_tail(parent)
    x = data.batch(8, 12, torch.Generator().manual_seed(9))[0]

    def feature_loss(student):
        taps = FeatureTaps(student, parent)
        try:
            with torch.no_grad():
                student(x), parent(x)
            return float(taps.loss())
        finally:
            taps.close()

    quiet = dict(sets=(data, None), log=lambda s: None)
    untrained = quantize_model(parent, I2NQConfig(bits=2), None, TrainConfig(steps=0, batch=4, lr_patch=12), **quiet)
    cfg = TrainConfig(steps=30, batch=4, lr_patch=12, lr=2e-3, quant_lr=2e-3, log_every=1000, hr_loss=0.0,
                      feature_distill=1.0)
    trained = quantize_model(parent, I2NQConfig(bits=2), None, cfg, **quiet)
    before, after = feature_loss(untrained), feature_loss(trained)
    assert 0 < after < before
    assert all(not m._forward_hooks for m in [*trained.modules(), *parent.modules()])
    close = copy.deepcopy(parent)
    quantize_(close, I2NQConfig(bits=8))
    calibrate_(close, [torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))])
    assert feature_loss(close) < before / 10  # 8-bit sites sit close to the parent
    with pytest.raises(ValueError, match="quantized student"):
        FeatureTaps(parent, parent)


def test_progressive_start_takes_the_float_weights_of_a_quantized_model(tmp_path):
    """quantize_model(start=M): the student begins from M's float weights (a QAT model keeps them under the
    float conv's names), with its own fresh quantizers; the float parent stays the teacher; another network is a
    one-line error."""
    data = smooth_pairs()
    parent = tiny()
    randomize_tail(parent)
    quiet = dict(sets=(data, None), log=lambda s: None)
    cfg = TrainConfig(steps=5, batch=4, lr_patch=12, lr=1e-2, quant_lr=1e-3, log_every=1000, distill=1.0)
    first = quantize_model(parent, I2NQConfig(bits=4), tmp_path / "w4.safetensors", cfg, **quiet)
    assert not torch.equal(first.body[0].conv1.weight, parent.body[0].conv1.weight)  # QAT moved them
    assert not torch.equal(first.head.weight, parent.head.weight)  # and the float head's
    second = quantize_model(parent, I2NQConfig(bits=3), None, TrainConfig(steps=0, batch=4, lr_patch=12),
                            start=tmp_path / "w4.safetensors", **quiet)
    assert torch.equal(second.body[0].conv1.weight, first.body[0].conv1.weight)
    assert torch.equal(second.head.weight, first.head.weight)  # float convs too
    assert second.body[0].conv1.act_quant.codebook.levels().numel() == 8  # its own 3-bit quantizers
    with pytest.raises(I2NQError, match="not the same network"):
        quantize_model(parent, I2NQConfig(bits=3), None, TrainConfig(steps=0, batch=4, lr_patch=12),
                       start=build("edsr-small", 2, n_blocks=2, n_feats=4), **quiet)


def test_bicubic_down_matches_shape_and_range():
    hr = torch.rand(3, 24, 36)
    lr = bicubic_down(hr, 4)
    assert lr.shape == (3, 6, 9) and float(lr.min()) >= 0 and float(lr.max()) <= 1
    assert torch.equal(lr, (lr * 255).round() / 255)


@pytest.mark.parametrize("argv, msg", [
    (["eval", "--model", "missing.safetensors", "--hr", "."], "checkpoint not found"),
    (["eval", "--model", "no-such-model", "--hr", "."], "unknown model"),
    (["train", "--arch", "resnet", "-o", "x.safetensors"], "unknown arch"),
    (["quantize", "x.safetensors", "-o", "y.safetensors", "--bits", "5"], "unsupported weight bits 5"),
])
def test_cli_bad_input_is_one_line(tmp_path, argv, msg):
    r = subprocess.run([sys.executable, "-m", "i2nq.cli", *argv], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert msg in r.stderr


def test_cli_eval_empty_folder(tmp_path):
    m = tiny()
    save(m, tmp_path / "m.safetensors")
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "i2nq.cli", "eval", "--model", str(tmp_path / "m.safetensors"),
                        "--hr", str(tmp_path / "empty")], capture_output=True, text=True)
    assert r.returncode == 2 and "no images" in r.stderr and "Traceback" not in r.stderr


def test_cli_eval_json(tmp_path):
    import cv2
    import json

    m = tiny()
    randomize_tail(m)
    save(m, tmp_path / "m.safetensors")
    (tmp_path / "hr").mkdir()
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8), (5, 5), 0)
    cv2.imwrite(str(tmp_path / "hr" / "a.png"), img)
    r = subprocess.run([sys.executable, "-m", "i2nq.cli", "eval", "--model", str(tmp_path / "m.safetensors"),
                        "--hr", str(tmp_path / "hr"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"psnr_y", "ssim_y", "bicubic_psnr_y"} <= out.keys() and out["images"][0]["name"] == "a.png"


def test_outputs_get_the_usual_file_mode(tmp_path):
    """safetensors writes private 0600 files; our outputs get what the umask gives, or keep the replaced file's."""
    import os

    from i2nq.files import _umask

    path = save(tiny(), tmp_path / "m.safetensors")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask() and _umask() == os.umask(_umask())
    path.chmod(0o640)
    save(tiny(), path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_training_images_from_a_folder_an_image_or_video_frames(tmp_path, monkeypatch):
    import cv2

    from i2nq.calib import data as data_mod
    from i2nq.calib.data import training_images
    from conftest import make_clip

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert [t.shape for t in training_images(tmp_path / "imgs")] == [(3, 40, 50)] * 2
    assert len(training_images(tmp_path / "imgs" / "0.png")) == 1
    clip = make_clip(tmp_path / "clip.mp4", frames=48, keyint=12, bframes=2)  # 4 s at 12 fps
    frames = training_images(clip, frames=4)
    import av

    with av.open(str(clip)) as c:
        decoded = [data_mod.to_tensor(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    # frames at 0.5, 1.5, 2.5 and 3.5 s: numbers 6, 18, 30, 42
    assert [min(range(48), key=lambda i: float((decoded[i] - f).abs().mean())) for f in frames] == [6, 18, 30, 42]
    (tmp_path / "notes.txt").write_text("x")
    for target in (tmp_path / "missing", tmp_path / "notes.txt"):
        with pytest.raises(I2NQError, match="must be a folder of images, an image or a video"):
            training_images(target)
    with pytest.raises(I2NQError, match="frames must be >= 1"):
        training_images(clip, frames=0)
    monkeypatch.setattr(data_mod, "MAX_TRAIN_PIXELS", 3000)
    with pytest.raises(I2NQError, match="holds 0 MP, more than the 0 MP kept in memory; use fewer"):
        training_images(tmp_path / "imgs")


def test_quantize_on_your_own_data_records_it(tmp_path):
    import cv2

    m = tiny()
    randomize_tail(m)
    save(m, tmp_path / "f.safetensors")
    rng = np.random.default_rng(1)
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"),
                    cv2.GaussianBlur(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8), (5, 5), 0))
    r = subprocess.run([sys.executable, "-m", "i2nq.cli", "quantize", str(tmp_path / "f.safetensors"), "-o",
                        str(tmp_path / "q.safetensors"), "--steps", "2", "--batch", "2", "--calib-batches", "1",
                        "--data", str(tmp_path / "imgs")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from i2nq.models.checkpoint import read_config

    assert read_config(tmp_path / "q.safetensors")["training"]["data"] == "imgs"
    r = subprocess.run([sys.executable, "-m", "i2nq.cli", "inspect", str(tmp_path / "q.safetensors")],
                       capture_output=True, text=True)
    assert "training     qat, 2 steps, on imgs" in r.stdout
    small = subprocess.run([sys.executable, "-m", "i2nq.cli", "quantize", str(tmp_path / "f.safetensors"), "-o",
                            str(tmp_path / "q2.safetensors"), "--data", str(tmp_path / "imgs"), "--patch", "48"],
                           capture_output=True, text=True)
    assert small.returncode == 2 and "need images of at least 96 px a side at x2 (the largest is 90x80)" in small.stderr


def test_mixed_lr_recipe_pairs_each_image_with_both_downscales():
    import cv2

    from i2nq.calib.data import TRAIN_RECIPES, bicubic_down

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 48, 40, generator=g)
    pairs = PairSet.from_images([hr], 4, recipes=TRAIN_RECIPES["mixed"])
    assert len(pairs.hr) == len(pairs.lr) == 2 and torch.equal(pairs.hr[0], pairs.hr[1])
    assert torch.equal(pairs.lr[0], bicubic_down(hr, 4))
    img = hr.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    want = torch.from_numpy(cv2.resize(img, (10, 12), interpolation=cv2.INTER_CUBIC)).permute(2, 0, 1).float() / 255
    assert torch.equal(pairs.lr[1], want)


def test_train_init_must_be_a_float_model_of_the_same_arch(tmp_path):
    from i2nq.calib.pipeline import train_float

    parent = tmp_path / "p.safetensors"
    save(tiny(), parent)
    cfg = TrainConfig(steps=1, batch=2, lr_patch=8, log_every=100)
    with pytest.raises(I2NQError, match="fine-tuning needs a float edsr-small x4"):
        train_float("edsr-small", 4, tmp_path / "o.safetensors", cfg, init=parent)
    out = train_float("edsr-small", 2, tmp_path / "o.safetensors", cfg, init=parent, log=lambda _: None)
    assert out.n_blocks == 2  # the init's architecture, not the registry default
