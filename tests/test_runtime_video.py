"""Video: frames, timestamps and audio survive; failures and interrupts leave no output."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

import i2nq
from i2nq.errors import I2NQError


def _video(path: Path) -> tuple[tuple[int, int], list[Fraction]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        times = [frame.pts * frame.time_base for frame in c.decode(stream)]
        return (stream.codec_context.width, stream.codec_context.height), times


def _audio(path: Path) -> list[tuple[Fraction, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts * p.time_base, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.fixture(scope="module")
def upscaler(tiny_model) -> i2nq.Upscaler:
    return i2nq.Upscaler(tiny_model(scale=2), device="cpu", tile=16, batch=4)


def test_round_trip_keeps_frames_timestamps_and_audio(upscaler, clip, tmp_path) -> None:
    out = upscaler.upscale_video(clip, tmp_path / "out.mp4", crf=30, preset="ultrafast", progress=False)
    (w, h), times = _video(clip)
    (w2, h2), times2 = _video(out)
    assert (w2, h2) == (2 * w, 2 * h)
    assert times2 == times and len(times) == 12
    audio = _audio(clip)
    assert audio and _audio(out) == audio  # packets copied untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_other_container_and_codec(upscaler, clip, tmp_path) -> None:
    out = upscaler.upscale_video(clip, tmp_path / "out.mkv", codec="mpeg4", progress=False)
    assert len(_video(out)[1]) == 12 and _audio(out)


def test_unknown_codec(upscaler, clip, tmp_path) -> None:
    with pytest.raises(I2NQError, match="unknown video encoder"):
        upscaler.upscale_video(clip, tmp_path / "out.mp4", codec="nope", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_leaves_no_file(upscaler, clip, tmp_path, monkeypatch) -> None:
    calls = []
    run = upscaler.tiler.run

    def interrupted(frames):
        calls.append(len(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run(frames)

    monkeypatch.setattr(upscaler.tiler, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        upscaler.upscale_video(clip, tmp_path / "out.mp4", progress=False)
    assert calls == [1, 1]  # 12 tiles a frame, batch 4: one frame per call
    assert list(tmp_path.iterdir()) == []


def test_truncated_video(upscaler, clip, tmp_path) -> None:
    data = clip.read_bytes()
    for cut in (len(data) // 3, len(data) - 200):
        bad = tmp_path / "cut.mp4"
        bad.write_bytes(data[:cut])
        with pytest.raises(I2NQError, match="cut.mp4"):
            upscaler.upscale_video(bad, tmp_path / "out.mp4", progress=False)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]


def test_codec_the_container_cannot_hold(upscaler, clip, tmp_path) -> None:
    with pytest.raises(I2NQError, match="cannot write video"):
        upscaler.upscale_video(clip, tmp_path / "out.webm", progress=False)  # H.264 + AAC in WebM
    assert list(tmp_path.iterdir()) == []
