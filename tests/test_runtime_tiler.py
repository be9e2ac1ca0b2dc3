"""Tiling: plans are valid, and tiled output equals whole-frame output."""

from __future__ import annotations

import numpy as np
import pytest

from i2nq.errors import I2NQError
from i2nq.runtime.backends import open_backend
from i2nq.runtime.tiler import Tiler, plan_axis


def _assert_close(tiled: np.ndarray, whole: np.ndarray) -> None:
    """Equal up to float rounding: at most 1 level off, on at most 0.1% of values."""
    diff = np.abs(tiled.astype(np.int64) - whole.astype(np.int64))
    assert tiled.shape == whole.shape and tiled.dtype == whole.dtype
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3


@pytest.mark.parametrize("length", [1, 2, 7, 16, 17, 31, 64, 100, 257])
@pytest.mark.parametrize("tile,overlap", [(7, 3), (8, 0), (16, 3), (24, 5), (64, 8)])
@pytest.mark.parametrize("shrink", [True, False])
def test_plan_axis_covers_with_equal_inward_tiles(length: int, tile: int, overlap: int, shrink: bool) -> None:
    plan = plan_axis(length, tile, overlap, shrink)
    assert plan.tile == min(length, tile) or (shrink and plan.tile < tile)
    assert plan.cuts[0] == 0 and plan.cuts[-1] == length and len(plan.cuts) == len(plan.starts) + 1
    for k, start in enumerate(plan.starts):
        lo, hi = plan.cuts[k], plan.cuts[k + 1]
        assert 0 <= start and start + plan.tile <= length  # edge tiles shift inward, never shrink
        assert lo < hi
        assert lo == 0 or lo >= start + overlap  # every owned pixel sees `overlap` px of context
        assert hi == length or hi <= start + plan.tile - overlap


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (5, 90), (11, 9)])
@pytest.mark.parametrize("tile,batch", [(7, 1), (13, 3), (24, 4), (200, 2)])
def test_tiled_equals_whole_frame(tiny_model, scale: int, size: tuple[int, int], tile: int, batch: int) -> None:
    backend = open_backend(tiny_model(scale=scale), device="cpu")
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    whole = Tiler(backend, tile=0).run([image])[0]
    tiled = Tiler(backend, tile=tile, batch=batch).run([image])[0]
    assert whole.shape == (size[0] * scale, size[1] * scale, 3)
    _assert_close(tiled, whole)


@pytest.mark.parametrize("tile,overlap,batch", [(13, None, 3), (24, None, 4), (16, 2, 3), (0, None, None)])
@pytest.mark.parametrize("size", [(37, 53), (100, 31), (5, 90)])
def test_streamed_rows_equal_the_whole_output(tiny_model, size, tile, overlap, batch) -> None:
    """stream() hands out the rows of run() top to bottom, exact and feathered, band by band."""
    tiler = Tiler(open_backend(tiny_model(scale=4, convs=4), device="cpu"), tile=tile, overlap=overlap, batch=batch)
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    whole = tiler.run([image])[0]
    parts = list(tiler.stream(image))
    assert [start for start, _ in parts] == list(np.cumsum([0] + [len(p) for _, p in parts[:-1]]))
    assert len(parts) == (1 if tile == 0 else len(tiler.plan(*size)[0].starts))
    assert np.array_equal(np.concatenate([p for _, p in parts]), whole)


def test_tiles_batch_across_frames(tiny_model) -> None:
    backend = open_backend(tiny_model(scale=2), device="cpu")
    frames = [np.random.default_rng(i).integers(0, 65536, (19, 23, 3), dtype=np.uint16) for i in range(3)]
    whole = Tiler(backend, tile=0).run(frames)
    tiled = Tiler(backend, tile=10, batch=5).run(frames)
    for t, w in zip(tiled, whole, strict=True):
        assert t.dtype == np.uint16
        assert np.abs(t.astype(np.int64) - w).max() <= 1


def test_overlap_below_receptive_field_is_feathered(tiny_model) -> None:
    backend = open_backend(tiny_model(scale=2, convs=4), device="cpu")
    image = np.random.default_rng(3).integers(0, 256, (48, 61, 3), dtype=np.uint8)
    whole = Tiler(backend, tile=0).run([image])[0].astype(np.int64)
    feathered = Tiler(backend, tile=16, overlap=2)
    assert not feathered.exact
    diff = np.abs(feathered.run([image])[0] - whole)
    assert 0 < diff.max() <= 16 and diff.mean() < 1.0  # seams hidden, not exact


def test_default_tile_and_batch(tiny_model) -> None:
    tiler = Tiler(open_backend(tiny_model(scale=2), device="cpu"))
    assert tiler.overlap == 3 and tiler.exact and tiler.tile == (384, 384) and tiler.batch == 1
    assert tiler.tiles_per_frame(2000, 1000) == 6 * 3


def test_tile_must_exceed_twice_the_overlap(tiny_model) -> None:
    with pytest.raises(I2NQError, match="twice the overlap"):
        Tiler(open_backend(tiny_model(scale=2), device="cpu"), tile=6)


class _StaticShape:
    """Wraps a backend as if it were a static engine of one tile shape and batch (like TensorRT)."""

    def __init__(self, inner, shape: tuple[int, int], batch: int) -> None:
        self.inner, self.meta, self.fixed_shape, self.max_batch, self.name = inner, inner.meta, shape, batch, "static"

    def run(self, x: np.ndarray) -> np.ndarray:
        assert x.shape[2:] == self.fixed_shape and x.shape[0] <= self.max_batch
        return self.inner.run(x)


def test_static_shape_backend_gets_only_its_tile(tiny_model) -> None:
    inner = open_backend(tiny_model(scale=2), device="cpu")
    image = np.random.default_rng(5).integers(0, 256, (41, 50, 3), dtype=np.uint8)
    whole = Tiler(inner, tile=0).run([image])[0]
    _assert_close(Tiler(_StaticShape(inner, (16, 20), 2), batch=8).run([image])[0], whole)
    small = Tiler(_StaticShape(inner, (64, 64), 2)).run([image])[0]  # padded: approximate at the padded border
    assert small.shape == whole.shape
    assert np.abs(small[:70, :90].astype(int) - whole[:70, :90]).max() <= 1


class _Nearest:
    """A numpy 'model' (nearest-neighbour x2) that records the batch shapes it is given."""

    name, fixed_shape, max_batch = "nearest", None, None

    def __init__(self) -> None:
        from i2nq.runtime.backends import ModelMeta

        self.meta, self.shapes = ModelMeta("nearest", 2, "fp32", 0), []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        return x.repeat(2, axis=2).repeat(2, axis=3)


def test_large_frame_goes_to_the_backend_in_bounded_batches() -> None:
    backend = _Nearest()
    image = np.random.default_rng(0).integers(0, 256, (2001, 2503, 3), dtype=np.uint8)
    tiler = Tiler(backend)
    out = tiler.run([image])[0]
    assert np.array_equal(out, image.repeat(2, 0).repeat(2, 1))
    assert len(backend.shapes) == tiler.tiles_per_frame(2001, 2503) > 30
    assert max(n * h * w for n, _, h, w in backend.shapes) <= 512 * 512  # the default batch of tile pixels


def test_unbounded_receptive_field_blends_tiles(tiny_model) -> None:
    """A model whose receptive field is unbounded (metadata "unbounded") is tiled with a default overlap and a
    feathered blend, never claimed exact; an explicit overlap is still honoured."""
    from i2nq.runtime import Upscaler
    from i2nq.runtime.tiler import BLEND_OVERLAP

    up = Upscaler(tiny_model(scale=2, receptive_field="unbounded"), device="cpu", tile=96)
    assert up.meta.receptive_field is None and up.tiler.overlap == BLEND_OVERLAP and not up.tiler.exact
    image = np.random.default_rng(0).integers(0, 256, (150, 170, 3), dtype=np.uint8)
    whole = Upscaler(tiny_model(scale=2, receptive_field="unbounded"), device="cpu", tile=0).upscale(image)
    # the tiny model's true radius is 3 px, so a blend over 32 px overlaps reproduces it up to rounding
    assert np.abs(up.upscale(image).astype(int) - whole).max() <= 1
    assert Upscaler(tiny_model(scale=2, receptive_field="unbounded"), device="cpu", tile=96, overlap=8).tiler.overlap == 8
