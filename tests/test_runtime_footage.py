"""Video as real footage comes: sparse AVI index entries, timestamps out of order, variable frame rate; the
writer tried on the first frames before the model runs; a part done before a failure kept; the progress bar
counts what is decoded."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import i2nq
from i2nq.errors import I2NQError
from i2nq.runtime.video import REORDER_WINDOW, _Timeline

SIZE = (32, 24)


def _write(path: Path, codec: str, pts: list[int], rate: int = 10, time_base: Fraction | None = None,
           options: dict[str, str] | None = None) -> Path:
    """Frame i (pts[i]) is gray with its first i + 1 columns white, so its position in the sequence is legible."""
    width, height = SIZE
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if time_base is not None:
            stream.time_base = stream.codec_context.time_base = time_base
        for i, ts in enumerate(pts):
            image = np.full((height, width, 3), 60, np.uint8)
            image[:, :2 * (i + 1)] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = ts
            if time_base is not None:
                frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _decoded(path: Path) -> tuple[list[Fraction], list[int]]:
    """Presentation times of the decoded frames (in decoding order) and each frame's white columns (at the
    source's size), which say which source frame it is."""
    times, marks = [], []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            times.append(frame.pts * frame.time_base)
            gray = frame.to_ndarray(format="gray")
            columns = (gray[gray.shape[0] // 2] > 160).sum() * SIZE[0] / gray.shape[1]
            marks.append(int(round(columns / 2)))
    return times, marks


@pytest.fixture(scope="module")
def upscaler(tiny_model) -> i2nq.Upscaler:
    return i2nq.Upscaler(tiny_model(scale=2, nearest=True), device="cpu", tile=16, batch=4)


def test_sparse_avi_keeps_the_frames_a_player_shows(upscaler, tmp_path, capsys) -> None:
    """Gaps between AVI frames are index entries without data ("repeat the previous frame"): the header counts
    13 entries, 6 hold frames. Before, the run failed at the end with 'decoded 6 of 13 frames'."""
    src = _write(tmp_path / "sparse.avi", "mpeg4", [0, 1, 5, 6, 7, 12])
    with av.open(str(src)) as c:
        assert c.streams.video[0].frames == 13  # index entries, not frames
    times, marks = _decoded(src)
    assert len(times) == 6
    out = upscaler.upscale_video(src, tmp_path / "out.avi", progress=True)
    got_times, got_marks = _decoded(out)
    assert got_times == times and got_marks == marks == [1, 2, 3, 4, 5, 6]
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "6/6" in bar  # the bar counts frames with data, not index entries


def test_timestamps_out_of_order_are_put_in_order(upscaler, tmp_path) -> None:
    """H.264 with B-frames in AVI: FFmpeg hands out the frames in order but their timestamps shuffled (1, 4,
    3, 5, 2, ...), as in old AVIs with packed B-frames; before, every frame was computed and then the muxer
    refused the timestamps ('Invalid argument')."""
    src = _write(tmp_path / "bframes.avi", "libx264", list(range(12)), options={"bf": "3", "preset": "ultrafast"})
    times, marks = _decoded(src)
    assert times != sorted(times), "the clip no longer has shuffled timestamps: the test checks nothing"
    assert marks == list(range(1, 13))
    for name in ("out.mp4", "out.mkv", "out.avi"):
        got_times, got_marks = _decoded(upscaler.upscale_video(src, tmp_path / name, progress=False))
        assert got_marks == marks, name
        assert got_times == sorted(times), name


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_keeps_its_timing(upscaler, tmp_path, suffix) -> None:
    src = _write(tmp_path / f"vfr{suffix}", "libx264", [0, 1, 3, 7, 8, 20], rate=30, time_base=Fraction(1, 30),
                 options={"preset": "ultrafast"})
    times, marks = _decoded(src)
    assert np.diff([float(t) for t in times]).std() > 0.05  # really variable
    got_times, got_marks = _decoded(upscaler.upscale_video(src, tmp_path / f"out{suffix}", progress=False))
    assert got_times == times and got_marks == marks


def _placed(stamps: list[int | None], end: int | None = None) -> list[tuple[int, int]]:
    class Frame:
        def __init__(self, ts: int | None) -> None:
            self.pts, self.dts = ts, None

    timeline = _Timeline(Fraction(1, 10), Fraction(10))
    out = []
    for ts in stamps:
        out += [(t, d) for _, t, d in timeline.push(Frame(ts))]
    out += [(t, d) for _, t, d in timeline.finish(end)]
    return out


def test_timeline_orders_fills_and_times() -> None:
    assert _placed([1, 2, 3, 5, 4, 6], end=7) == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]
    assert _placed([0, 2, 7, 8], end=10) == [(0, 2), (2, 5), (7, 1), (8, 2)]  # variable: each until the next
    assert _placed([0, None, 2, 2, 3]) == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]  # missing, repeated
    restarted = _placed([100, 101, 102, 0, 1])  # the clock restarts (10 s back): it goes on after 102
    assert [t for t, _ in restarted] == [100, 101, 102, 103, 104]
    far = list(range(2 * REORDER_WINDOW + 4))
    far[1], far[-2] = far[-2], far[1]  # moved further than the window: still increasing
    assert all(b[0] > a[0] for a, b in zip(_placed(far), _placed(far)[1:]))


def test_writer_errors_fail_before_the_model_runs(upscaler, clip, tmp_path, monkeypatch) -> None:
    """H.264 and AAC cannot go into WebM: found by writing the first frames, before any model call."""
    calls = []
    monkeypatch.setattr(upscaler.tiler, "run", lambda frames: calls.append(1) or [])
    with pytest.raises(I2NQError, match=r"cannot write video .*out\.webm.*before upscaling") as info:
        upscaler.upscale_video(clip, tmp_path / "out.webm", codec="libx264", progress=False)
    assert "\n" not in str(info.value)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_a_model_failure_midway_keeps_the_part_done(upscaler, clip, tmp_path, monkeypatch) -> None:
    run, calls = upscaler.tiler.run, []

    def failing(frames):
        calls.append(len(frames))
        if len(calls) == 5:
            raise MemoryError
        return run(frames)

    monkeypatch.setattr(upscaler.tiler, "run", failing)
    with pytest.raises(I2NQError, match=r"not enough memory to upscale frame 4.*the 4 frames done .* were kept in "
                                        r".*out\.partial\.mp4") as info:
        upscaler.upscale_video(clip, tmp_path / "out.mp4", progress=False)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.partial.mp4"]
    times, _ = _decoded(tmp_path / "out.partial.mp4")
    assert times == [Fraction(i, 12) for i in range(4)]  # playable: the first 4 frames at their times


def test_an_interrupt_keeps_nothing(upscaler, clip, tmp_path, monkeypatch) -> None:
    run, calls = upscaler.tiler.run, []

    def interrupted(frames):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run(frames)

    monkeypatch.setattr(upscaler.tiler, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        upscaler.upscale_video(clip, tmp_path / "out.mp4", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_whole_frames_over_the_memory_budget_fail_before_anything_is_written(tiny_model, clip, tmp_path) -> None:
    up = i2nq.Upscaler(tiny_model(scale=2), device="cpu", tile=0, max_memory=360_000)
    with pytest.raises(I2NQError, match=r"whole 40x30 frames \(tile=0\) would need about .*; tile=\d+ fits"):
        up.upscale_video(clip, tmp_path / "out.mp4", progress=False)
    assert list(tmp_path.iterdir()) == []
