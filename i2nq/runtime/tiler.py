"""Tiled inference: split frames into equal tiles with overlap margins, run them in batches, stitch.

Every tile of a frame has the same shape: tiles are spread evenly and edge tiles shift inward instead
of shrinking, so one static engine shape serves them all. With the overlap at the model's receptive-field
radius each output pixel is cut from a tile that saw all of its context (or the same zero padding at the
image border), so tiled output equals whole-frame output. With a smaller overlap, tiles are feathered
(linear ramps across each overlap) to hide seams. Only `batch` tiles are ever in flight, so memory on the
device is set by tile and batch, never by the frame size. `stream` hands a frame's output out row band by row
band as it is finished, so the host holds one row of tiles' output instead of the whole upscaled frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from i2nq.errors import I2NQError, option, setting
from i2nq.runtime.backends.base import Backend
from i2nq.runtime.memory import gib, largest_tile, resolve_budget

DEFAULT_TILE = 384  # input px: large enough that the overlap margins cost little, small enough for any device
#: Default batch: about this many input pixels of tiles per model call (at least one tile). Below it the per-call
#: overhead shows; above it a call only takes more memory. Smaller tiles thus get more of them per call, but never
#: more pixels per call than the default tile: memory falls with the tile. (Shipped model, 2 CPU cores: tiles of
#: 64/96/128 px ran 0.72/0.92/0.91x the default's rate per pixel computed; bench/results/runtime.md.)
CALL_PIXELS = 256 * 256
BATCH_PIXELS = CALL_PIXELS  # the former name


BLEND_OVERLAP = 32  # input px of overlap by default when a model's receptive field is unbounded (tiles are blended)


def default_overlap(receptive_field: int | None) -> int:
    """The default tile overlap: the receptive field (exact tiling), or BLEND_OVERLAP for a model whose receptive
    field is unbounded (window attention, global pooling, or too large to pay), whose tiles are blended."""
    return BLEND_OVERLAP if receptive_field is None else receptive_field


def default_tile(overlap: int) -> int:
    """The default tile side in input px for tiles overlapping by `overlap` px (by default the model's receptive
    field): DEFAULT_TILE, or 8x the overlap when that is larger, so that the margins stay a modest share of
    each tile. The one rule for tile sizes: the tiler uses it when no tile is given, and the tensorrt backend
    builds its default engine profile around it (TensorRTOptions.profile), so default tiles always fit."""
    return max(DEFAULT_TILE, 8 * overlap)


def default_batch(tile: tuple[int, int]) -> int:
    """Tiles per model call by default: CALL_PIXELS worth of input (rounded down), at least one."""
    return max(1, CALL_PIXELS // (tile[0] * tile[1]))


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis: all `tile` long, starting at `starts`; tile k owns input [cuts[k], cuts[k+1])."""

    tile: int
    starts: tuple[int, ...]
    cuts: tuple[int, ...]


def plan_axis(length: int, tile: int, overlap: int, shrink: bool = True) -> AxisPlan:
    """Fewest tiles of at most `tile` px (exactly `tile` unless `shrink`) whose cores cover `length`."""
    if length <= tile:
        return AxisPlan(length, (0,), (0, length))
    n = -(-(length - 2 * overlap) // (tile - 2 * overlap))
    if shrink:  # the smallest equal tile with the same count: least redundant work
        tile = -(-(length - 2 * overlap) // n) + 2 * overlap
    starts = tuple((k * (length - tile) + (n - 1) // 2) // (n - 1) for k in range(n))
    cuts = (0, *((starts[k] + starts[k + 1] + tile) // 2 for k in range(n - 1)), length)
    return AxisPlan(tile, starts, cuts)


def feather_weights(plan: AxisPlan, length: int, scale: int) -> np.ndarray:
    """(tiles, length*scale) blend weights: linear ramps across each overlap, zero outside the tile."""
    size = plan.tile * scale
    pos = np.arange(size, dtype=np.float64) + 0.5
    weights = np.zeros((len(plan.starts), length * scale))
    for k, start in enumerate(plan.starts):
        w = np.ones(size)
        if k > 0:
            w = np.minimum(w, pos / ((plan.starts[k - 1] + plan.tile - start) * scale))
        if k < len(plan.starts) - 1:
            w = np.minimum(w, (size - pos) / ((start + plan.tile - plan.starts[k + 1]) * scale))
        weights[k, start * scale:start * scale + size] = w
    return weights


@dataclass(frozen=True)
class _Job:
    frame: int
    row: int
    col: int


class Tiler:
    """Runs uint8/uint16 BGR HxWx3 frames through a backend in tiles and returns the upscaled frames.

    A backend that takes a bounded range of tile shapes (a TensorRT engine's profile: `fixed_shape`, or
    `min_tile`..`max_tile`) bounds the tiles: the default tile shrinks to fit the maximum, an explicit tile
    that does not fit is an error, and frames (or tiles) below the minimum are padded.
    """

    def __init__(self, backend: Backend, tile: int | None = None, overlap: int | None = None,
                 batch: int | None = None, max_memory: int | str | None = None) -> None:
        """tile: max tile side in input px (0: whole frame); overlap: margin in input px (default: receptive field).

        max_memory: bytes a model call may take by the backend's estimate ('auto': half the physical memory on
        the CPU; None or 0: no guard). A default tile and batch shrink to fit it; an explicit tile or batch that
        does not fit (or, for whole frames, a frame that does not: check_frame) is an I2NQError naming a tile
        that fits."""
        meta = backend.meta
        self.backend, self.scale = backend, meta.scale
        self.overlap = default_overlap(meta.receptive_field) if overlap is None else overlap
        if self.overlap < 0 or (tile is not None and tile < 0) or (batch is not None and batch < 1):
            raise I2NQError(f"{option('--tile', 'tile')} and {option('--overlap', 'overlap')} must be >= 0 and "
                            f"{option('--batch', 'batch')} >= 1")
        self.exact = meta.receptive_field is not None and self.overlap >= meta.receptive_field
        high = getattr(backend, "max_tile", None)  # duck-typed backends may lack the range attributes
        if max_memory == "auto" and getattr(backend, "device", "cpu") not in ("cpu", None):
            max_memory = None  # the default budget is host memory; a GPU's is given explicitly
        self.budget = resolve_budget(max_memory)
        self.estimate = getattr(backend, "memory_estimate", None) if self.budget and backend.fixed_shape is None \
            else None
        if backend.fixed_shape is not None:
            fixed = backend.fixed_shape
            if tile and (tile, tile) != tuple(fixed):
                raise I2NQError(f"the engine takes tiles of exactly {fixed[0]}x{fixed[1]}, not {tile}x{tile}: drop "
                                f"--tile, or build an engine for this tile (i2nq build-engine --tile {tile} {tile})")
            self.tile: tuple[int, int] | None = fixed
        elif tile == 0:
            self.tile = None
        elif tile:
            if high is not None and (tile > high[0] or tile > high[1]):
                raise I2NQError(f"tile {tile} is larger than the engine's profile allows ({high[0]}x{high[1]} at "
                                f"most): lower --tile, or build the engine with a larger maximum shape")
            self.tile = (tile, tile)
        else:
            side = default_tile(self.overlap)
            fits = self._largest_fitting()
            if fits is not None and fits < side:  # a small memory budget: the largest tile that fits it
                side = max(fits, 2 * self.overlap + 16)
            self.tile = (side, side) if high is None else (min(side, high[0]), min(side, high[1]))
        if self.tile is not None and min(self.tile) <= 2 * self.overlap:
            raise I2NQError(f"tile {min(self.tile)} must be larger than twice the overlap ({self.overlap}); "
                            f"raise {option('--tile', 'tile')} or lower {option('--overlap', 'overlap')}"
                            + ("" if high is None else ", or build the engine with a larger maximum shape"))
        if batch is None and self.tile is not None:
            batch = default_batch(self.tile)
            while batch > 1 and not self._fits(batch, *self.tile):
                batch //= 2
        self.batch = min(batch or 1, backend.max_batch or 1 << 30)
        if self.tile is not None:
            self._check(self.batch, *self.tile, f"tile {self.tile[0]}" + (f" with batch {self.batch}"
                                                                         if self.batch > 1 else ""))

    def check_frame(self, height: int, width: int, frames: int = 1) -> None:
        """I2NQError when whole frames of this size (tile 0) would take more memory than the budget."""
        if self.tile is None:
            n = min(frames, self.batch)
            self._check(n, height, width, f"whole {width}x{height} frames ({setting('--tile', 'tile', 0)})")

    def memory(self, n: int, height: int, width: int) -> int | None:
        """The backend's estimate of a call on n tiles of height x width (bytes), or None."""
        estimate = getattr(self.backend, "memory_estimate", None)
        return None if estimate is None else estimate(n, height, width)

    def _fits(self, n: int, height: int, width: int) -> bool:
        need = self.estimate(n, height, width) if self.estimate is not None else None
        return need is None or need <= self.budget

    def _largest_fitting(self) -> int | None:
        if self.estimate is None or self.estimate(1, 16, 16) is None:
            return None
        return largest_tile(self.estimate, self.budget, 2 * self.overlap + 16)

    def _check(self, n: int, height: int, width: int, what: str) -> None:
        if self.estimate is None:
            return
        need = self.estimate(n, height, width)
        if need is None or need <= self.budget:
            return
        budget = f"the memory budget of {gib(self.budget)} ({option('--max-memory', 'max_memory')})"
        fits = self._largest_fitting()
        if fits is None:
            hint = f"even the smallest tile does not fit: raise {option('--max-memory', 'max_memory')}"
        else:
            hint = (f"{setting('--tile', 'tile', fits)} fits{'' if n == 1 else ' (batch 1)'}, or raise "
                    f"{option('--max-memory', 'max_memory')}")
        raise I2NQError(f"{what} would need about {gib(need)} for the model, over {budget}; {hint}")

    def plan(self, height: int, width: int) -> tuple[AxisPlan, AxisPlan]:
        """Row and column plans for a frame of this size."""
        if self.tile is None:
            return plan_axis(height, height, 0), plan_axis(width, width, 0)
        shrink = self.backend.fixed_shape is None  # a static engine needs exactly its tile shape
        low = getattr(self.backend, "min_tile", None) or (1, 1)
        plans = []
        for length, tile, least in ((height, self.tile[0], low[0]), (width, self.tile[1], low[1])):
            plan = plan_axis(length, tile, self.overlap, shrink)
            if plan.tile < least <= tile:  # a shrunk tile under the engine's minimum: take the full tile
                plan = plan_axis(length, tile, self.overlap, shrink=False)
            plans.append(plan)
        return plans[0], plans[1]

    def tiles_per_frame(self, height: int, width: int) -> int:
        """How many tiles one frame of this size takes."""
        rows, cols = self.plan(height, width)
        return len(rows.starts) * len(cols.starts)

    def run(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Upscale equal-size frames, batching tiles across frames."""
        height, width = frames[0].shape[:2]
        self.check_frame(height, width, len(frames))
        padded = self._padded_size(height, width)
        if padded is not None:
            return self._run_padded(frames, *padded)
        s = self.scale
        outputs = [np.empty((height * s, width * s, 3), f.dtype) for f in frames]
        for _ in self._tiles(frames, _WholeFrames(outputs)):
            pass
        return outputs

    def stream(self, frame: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Upscale one frame, handing out its output top to bottom as (first row, rows) as soon as they are
        final. Only the output of one row of tiles is held at a time (two where feathered tiles overlap), so
        memory is set by tile, batch and the frame's width, never by its height; the strips are equal to the
        rows of `run`."""
        height, width = frame.shape[:2]
        self.check_frame(height, width)
        padded = self._padded_size(height, width)
        if padded is not None:
            yield 0, self._run_padded([frame], *padded)[0]
            return
        rows, _ = self.plan(height, width)
        yield from self._tiles([frame], _RowBands(rows, self.exact, height, width, self.scale, frame.dtype))

    def _padded_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The size to pad a frame to when it is smaller than the engine's least tile (a static engine's shape or
        a profile's minimum), else None; I2NQError for a whole frame beyond the profile's largest shape."""
        least = self.backend.fixed_shape or getattr(self.backend, "min_tile", None)
        if least is not None and (height < least[0] or width < least[1]):
            return max(height, least[0]), max(width, least[1])
        high = getattr(self.backend, "max_tile", None)
        if self.tile is None and high is not None and (height > high[0] or width > high[1]):
            raise I2NQError(f"a whole {width}x{height} frame is larger than the engine's profile allows "
                            f"({high[1]}x{high[0]} at most): use tiles (--tile > 0) or build the engine with a "
                            f"larger maximum shape")
        return None

    def _tiles(self, frames: Sequence[np.ndarray], sink: _WholeFrames | _RowBands) -> Iterator[tuple[int, np.ndarray]]:
        """Run every tile of `frames` in batches; each tile's output goes where `sink` says, and `sink` hands out
        what a finished row of tiles completes."""
        height, width = frames[0].shape[:2]
        rows, cols = self.plan(height, width)
        s = self.scale
        blend = None if self.exact else _Feather(rows, cols, height, width, s)
        left = [len(cols.starts)] * len(frames)  # tiles still to come in each frame's current row of tiles
        for jobs in self._batches(len(frames), rows, cols):
            x = np.empty((len(jobs), 3, rows.tile, cols.tile), np.float32)
            for i, job in enumerate(jobs):
                frame = frames[job.frame]
                y0, x0 = rows.starts[job.row], cols.starts[job.col]
                tile = frame[y0:y0 + rows.tile, x0:x0 + cols.tile, ::-1].transpose(2, 0, 1)
                np.multiply(tile, np.float32(1.0 / _max_value(frame)), out=x[i], casting="unsafe")
            y = self.backend.run(x)
            for i, job in enumerate(jobs):
                out, origin = sink.target(job.frame)
                if blend is None:
                    _paste(out, y[i], rows, cols, job, s, origin)
                else:
                    blend.add(out, y[i], job, origin)
                left[job.frame] -= 1
                if left[job.frame] == 0:
                    left[job.frame] = len(cols.starts)
                    yield from sink.finish(job.frame, job.row)

    def _batches(self, count: int, rows: AxisPlan, cols: AxisPlan) -> Iterator[list[_Job]]:
        """Jobs in raster order per frame (the feathered blend relies on it), `batch` at a time."""
        jobs: list[_Job] = []
        for f in range(count):
            for r in range(len(rows.starts)):
                for c in range(len(cols.starts)):
                    jobs.append(_Job(f, r, c))
                    if len(jobs) == self.batch:
                        yield jobs
                        jobs = []
        if jobs:
            yield jobs

    def _run_padded(self, frames: Sequence[np.ndarray], th: int, tw: int) -> list[np.ndarray]:
        """Backends with a least tile shape (static engines, profiles with a minimum): reflect-pad frames smaller
        than it to th x tw (approximate at those borders)."""
        height, width = frames[0].shape[:2]
        pad = ((0, max(0, th - height)), (0, max(0, tw - width)), (0, 0))
        padded = [np.pad(f, pad, mode="symmetric") for f in frames]
        return [o[:height * self.scale, :width * self.scale] for o in self.run(padded)]


def _max_value(frame: np.ndarray) -> int:
    return 65535 if frame.dtype == np.uint16 else 255


def _to_pixels(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """RGB CHW float [0, 1] -> BGR HWC uint8/uint16, rounded and clipped."""
    peak = 65535 if dtype == np.uint16 else 255
    return np.clip(y[::-1].transpose(1, 2, 0) * peak + 0.5, 0, peak).astype(dtype)


class _WholeFrames:
    """Tile outputs go straight into whole output frames."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs = outputs

    def target(self, frame: int) -> tuple[np.ndarray, int]:
        """The array that holds `frame`'s output and the output row its first row is."""
        return self.outputs[frame], 0

    def finish(self, frame: int, row: int) -> Iterator[tuple[int, np.ndarray]]:
        return iter(())


class _RowBands:
    """One frame's output held one band at a time: the output rows one row of tiles writes. When a row of tiles
    is done, the rows no later tile touches are handed out; the next band is made when its first tile arrives,
    carrying the rows the two bands share where feathered tiles overlap (none in exact mode, where a band is
    gone once its rows are handed out and dropped)."""

    def __init__(self, rows: AxisPlan, exact: bool, height: int, width: int, s: int, dtype: np.dtype) -> None:
        n = len(rows.starts)
        if exact:  # each row of tiles writes exactly the rows it owns
            self.spans = [(rows.cuts[r] * s, rows.cuts[r + 1] * s) for r in range(n)]
        else:  # feathered: everything it covers
            self.spans = [(rows.starts[r] * s, (rows.starts[r] + rows.tile) * s) for r in range(n)]
        self.final = [self.spans[r + 1][0] for r in range(n - 1)] + [height * s]  # rows final after row r
        self.width, self.dtype = width * s, dtype
        self.emitted, self.row = 0, 0
        self.lo, self.band = self.spans[0][0], None
        self.carry: np.ndarray | None = None

    def target(self, frame: int) -> tuple[np.ndarray, int]:
        if self.band is None:
            lo, hi = self.spans[self.row]
            self.band = np.empty((hi - lo, self.width, 3), self.dtype)
            if self.carry is not None:
                self.band[:len(self.carry)] = self.carry
            self.lo, self.carry = lo, None
        return self.band, self.lo

    def finish(self, frame: int, row: int) -> Iterator[tuple[int, np.ndarray]]:
        start, end = self.emitted, self.final[row]
        done = self.band[start - self.lo:end - self.lo]
        if row + 1 < len(self.spans):
            shared = self.band[self.spans[row + 1][0] - self.lo:]  # rows both bands cover (feathered overlap)
            self.carry = shared if len(shared) else None
        self.emitted, self.row, self.band = end, row + 1, None
        yield start, done


def _paste(out: np.ndarray, y: np.ndarray, rows: AxisPlan, cols: AxisPlan, job: _Job, s: int, origin: int = 0) -> None:
    """Exact mode: copy the part of the tile output that this tile owns (`out` starts at output row `origin`)."""
    ya, yb = rows.cuts[job.row], rows.cuts[job.row + 1]
    xa, xb = cols.cuts[job.col], cols.cuts[job.col + 1]
    ty, tx = ya - rows.starts[job.row], xa - cols.starts[job.col]
    out[ya * s - origin:yb * s - origin, xa * s:xb * s] = _to_pixels(y[:, ty * s:(ty + yb - ya) * s, tx * s:(tx + xb - xa) * s],
                                                   out.dtype)


class _Feather:
    """Feathered blend composited in raster order straight into the output frame (no float frame buffer).

    Tile k is laid over the pixels already there with alpha w_k / (w_1 + ... + w_k), which yields the
    weighted mean of all tiles; weights are separable, so the running sums are 1-D.
    """

    def __init__(self, rows: AxisPlan, cols: AxisPlan, height: int, width: int, s: int) -> None:
        self.rows, self.cols, self.s = rows, cols, s
        self.wy, self.wx = feather_weights(rows, height, s), feather_weights(cols, width, s)
        self.wy_before = np.cumsum(self.wy, axis=0) - self.wy  # sum over earlier tile rows
        self.wx_upto = np.cumsum(self.wx, axis=0)  # sum over this and earlier tile columns
        self.wx_all = self.wx_upto[-1]

    def add(self, out: np.ndarray, y: np.ndarray, job: _Job, origin: int = 0) -> None:
        """Lay tile output `y` over `out`, which starts at output row `origin`."""
        s, th, tw = self.s, self.rows.tile * self.s, self.cols.tile * self.s
        y0, x0 = self.rows.starts[job.row] * s, self.cols.starts[job.col] * s
        ys, xs = slice(y0, y0 + th), slice(x0, x0 + tw)
        wy, wx = self.wy[job.row, ys], self.wx[job.col, xs]
        earlier = self.wy_before[job.row, ys, None] * self.wx_all[None, xs]
        total = earlier + wy[:, None] * self.wx_upto[job.col, None, xs]
        alpha = (wy[:, None] * wx[None, :] / total).astype(np.float32)[..., None]
        peak = _max_value(out)
        tile = np.clip(y[::-1].transpose(1, 2, 0), 0, 1) * peak
        local = slice(y0 - origin, y0 - origin + th)
        region = out[local, xs]
        out[local, xs] = (region * (1 - alpha) + tile * alpha + 0.5).astype(out.dtype)
