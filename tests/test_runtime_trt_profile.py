"""TensorRTOptions, and the one rule behind the default engine profile and the tiler's default tile: on the
stand-in tensorrt module (tests/trt_standin.py), every tile the tiler cuts from 540p, 1080p and 4K frames fits
the engine it built by default, for receptive fields from 10 to 70."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import i2nq
from i2nq.errors import I2NQError
from i2nq.plugins.engine import EngineRecord, build_engine
from i2nq.plugins.library import cache_dir
from i2nq.runtime.backends import open_backend
from i2nq.runtime.backends.tensorrt import TensorRTOptions
from i2nq.runtime.tiler import Tiler, default_tile

FRAMES = {"540p": (540, 960), "1080p": (1080, 1920), "4K": (2160, 3840)}


def _frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


@pytest.mark.parametrize("receptive_field", [10, 20, 30, 40, 50, 60, 68, 70])
def test_default_engine_takes_every_default_tile(trt: types.ModuleType, tiny_model, receptive_field: int) -> None:
    """Found on the way to a first GPU run: with the profile capped at 512 and the tile at max(384, 8 r), a
    receptive field of 68 (tile 544) made a 960x540 frame fail 'outside the engine's profile'."""
    trt.compute = "nearest"  # shapes are what this checks: a cheap 'model'
    backend = open_backend(tiny_model(receptive_field=receptive_field), "tensorrt", "cuda")
    tiler = Tiler(backend)
    side = default_tile(receptive_field)
    assert tiler.tile == (side, side) and backend.max_tile == (side, side) and backend.min_tile == (1, 1)
    assert tiler.batch <= backend.max_batch
    for name, (height, width) in FRAMES.items():
        rows, cols = tiler.plan(height, width)
        tiles = len(rows.starts) * len(cols.starts)
        for n in {min(tiler.batch, tiles - i) for i in range(0, tiles, tiler.batch)}:  # every call's shape
            y = backend.run(np.zeros((n, 3, rows.tile, cols.tile), np.float32))
            assert y.shape == (n, 3, 2 * rows.tile, 2 * cols.tile), name
    frame = _frame(*FRAMES["540p"])
    np.testing.assert_array_equal(tiler.run([frame])[0], frame.repeat(2, 0).repeat(2, 1))
    assert trt.builds == 1


def test_profile_rule_and_explicit_profiles() -> None:
    assert TensorRTOptions().profile(3, 3) == ((1, 3, 1, 1), (1, 3, 384, 384), (4, 3, 384, 384))
    assert TensorRTOptions().profile(3, 68) == ((1, 3, 1, 1), (1, 3, 544, 544), (4, 3, 544, 544))
    assert TensorRTOptions(tile=(64, 96), batch=2).profile(3, 68) == ((2, 3, 64, 96),) * 3
    assert TensorRTOptions(batch=2).profile(3, 3) == ((2, 3, 1, 1), (2, 3, 384, 384), (2, 3, 384, 384))
    assert TensorRTOptions(tile=[128, 128]).profile(1, 3) == ((1, 1, 128, 128), (1, 1, 128, 128), (4, 1, 128, 128))
    assert TensorRTOptions(max_shape=(8, 1088, 1920)).profile(3, 10) == \
        ((1, 3, 1, 1), (1, 3, 384, 384), (8, 3, 1088, 1920))
    assert TensorRTOptions(max_shape=(2, 200, 300)).profile(3, 10) == \
        ((1, 3, 1, 1), (1, 3, 200, 300), (2, 3, 200, 300))  # opt follows the rule, within the bounds
    options = TensorRTOptions(min_shape=[1, 64, 64], max_shape=[4, 256, 256])
    assert options.min_shape == (1, 64, 64) and hash(options)  # normalized: frozen and hashable
    with pytest.raises(I2NQError, match="min <= opt <= max"):
        TensorRTOptions(min_shape=(1, 600, 600)).profile(3, 3)
    with pytest.raises(I2NQError, match="either tile .* or min_shape"):
        TensorRTOptions(tile=(64, 64), min_shape=(1, 64, 64))
    with pytest.raises(I2NQError, match="tile must be 2 positive integers"):
        TensorRTOptions(tile=(0, 64))
    with pytest.raises(I2NQError, match="batch must be a positive integer"):
        TensorRTOptions(batch=0)
    assert i2nq.TensorRTOptions is TensorRTOptions


def test_tiles_fit_a_smaller_profile(trt: types.ModuleType, tiny_model) -> None:
    """An engine built with a smaller profile bounds the tiles: the default tile shrinks into it, frames below
    its minimum are padded, and what cannot fit is a one-line error."""
    trt.compute = "nearest"
    model = tiny_model(receptive_field=10)
    options = TensorRTOptions(min_shape=(1, 32, 32), max_shape=(2, 200, 300))
    up = i2nq.Upscaler(model, backend="tensorrt", device="cuda", tensorrt=options)
    assert up.tiler.tile == (200, 300) and up.tiler.batch == 1  # default: about 256x256 input px a call
    capped = i2nq.Upscaler(model, backend="tensorrt", device="cuda", batch=4, tensorrt=options)
    assert capped.tiler.batch == 2  # never more than the engine's max batch
    frame = _frame(540, 960)
    np.testing.assert_array_equal(up.upscale(frame), frame.repeat(2, 0).repeat(2, 1))
    small = _frame(20, 50)
    np.testing.assert_array_equal(up.upscale(small), small.repeat(2, 0).repeat(2, 1))  # padded to 32 rows
    assert all(32 <= h <= 200 and 32 <= w <= 300 for _, _, h, w in up.backend.engine.runs)
    with pytest.raises(I2NQError, match="tile 256 is larger than the engine's profile allows"):
        i2nq.Upscaler(model, backend="tensorrt", device="cuda", tile=256, tensorrt=options)
    whole = i2nq.Upscaler(model, backend="tensorrt", device="cuda", tile=0, tensorrt=options)
    with pytest.raises(I2NQError, match="whole 960x540 frame is larger than the engine's profile allows"):
        whole.upscale(frame)
    assert whole.upscale(_frame(150, 250)).shape == (300, 500, 3)
    assert trt.builds == 1


def test_upscaler_without_options_keeps_its_static_engine(trt: types.ModuleType, tiny_model) -> None:
    up = i2nq.Upscaler(tiny_model(), "tensorrt", "cuda", 16, None, 3)  # positional, as before TensorRTOptions
    assert up.backend.fixed_shape == (16, 16) and up.backend.max_batch == 3
    with pytest.raises(I2NQError, match="inside TensorRTOptions"):
        build_engine(tiny_model(), tile=(16, 16), options=TensorRTOptions(tile=(32, 32)))
    assert build_engine(tiny_model(), tile=(16, 16), batch=3, options=TensorRTOptions(tile=(16, 16), batch=3)) \
        .name.startswith("tiny_default-3x3x16x16")


def test_cuda_graphs_are_captured_once_per_shape_and_replayed(trt: types.ModuleType, tiny_model) -> None:
    model = tiny_model()
    plain = open_backend(model, "tensorrt", "cuda", tensorrt=TensorRTOptions())
    graphs = open_backend(model, "tensorrt", "cuda", tensorrt=TensorRTOptions(cuda_graphs=True))
    cp = sys.modules["cupy"]
    rng = np.random.default_rng(3)
    for _ in range(2):
        x = rng.random((10, 3, 12, 9), dtype=np.float32)  # chunks of 4, 4 and 2 tiles: two shapes
        np.testing.assert_array_equal(graphs.run(x), plain.run(x))
    # captured after its first run, then replayed; the first graph is the 1x3x16x16 check every backend runs once
    # when it is opened (i2nq.runtime.backends.check_backend), never replayed
    assert [g.launches for g in cp.graphs] == [0, 3, 1]
    assert trt.builds == 1  # CUDA graphs are a run-time option: the same engine
    (engine,) = (cache_dir() / "engines").glob("*.engine")
    assert EngineRecord.load(engine).profile[2][0] == 4
