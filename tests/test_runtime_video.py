"""Video: frames, timestamps and audio survive; failures and interrupts leave no output."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
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


COLOURS = np.array([[200, 30, 40], [30, 180, 60], [40, 60, 200], [230, 220, 30]], np.uint8)
MATRIX = {1: "ITU709", 6: "ITU601"}


def _colour_clip(path: Path, size: tuple[int, int], tags: tuple[int, int] | None) -> Path:
    """Four vertical colour bars, encoded with the matrix and range of `tags` (colorspace, range) and tagged
    so, or BT.601 limited range and untagged."""
    width, height = size
    spc, rng = tags or (6, 1)
    image = np.repeat(COLOURS, width // 4, axis=0)[None].repeat(height, axis=0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=12, options={"crf": "8", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if tags:
            cc = stream.codec_context
            cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = spc, rng, spc, spc
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format="yuv420p", src_colorspace=MATRIX[spc], dst_colorspace=MATRIX[spc], src_color_range=2,
                dst_color_range=rng)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _as_shown(path: Path) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The first frame in RGB as a player shows it: matrix and range from the tags, untagged video taken as
    BT.709 when HD-sized (else BT.601) and limited range; and the stream's tags."""
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        tags = (cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc)
        frame = next(c.decode(video=0))
    matrix = MATRIX.get(tags[0], "ITU709" if frame.height > 576 or frame.width >= 1280 else "ITU601")
    rgb = frame.reformat(format="rgb24", src_colorspace=matrix, dst_colorspace=matrix,
                         src_color_range=2 if tags[1] == 2 else 1, dst_color_range=2).to_ndarray()
    return rgb, tags


@pytest.mark.parametrize("tags,size,out_tags", [
    ((1, 1), (64, 48), (1, 1, 1, 1)),  # BT.709, limited range
    ((6, 2), (64, 48), (6, 2, 6, 6)),  # BT.601, full range
    (None, (160, 160), (6, 1, 6, 6)),  # untagged SD that becomes HD-sized (640x640 would be guessed BT.709)
])
def test_colours_and_colour_tags_survive(tiny_model, tmp_path, tags, size, out_tags) -> None:
    """Colour bars look the same after upscaling: the frames are converted with the source's matrix and
    range, and the output says which (before the fix, BT.709 video came out BT.601-encoded and untagged:
    green 180 was shown as 155)."""
    upscaler = i2nq.Upscaler(tiny_model(scale=4, nearest=True), device="cpu", tile=0)
    clip = _colour_clip(tmp_path / "bars.mp4", size, tags)
    out = upscaler.upscale_video(clip, tmp_path / "out.mp4", crf=8, preset="ultrafast", progress=False)
    shown, got_tags = _as_shown(out)
    assert got_tags == out_tags
    source, _ = _as_shown(clip)
    bar = size[0] // 4
    for i in range(4):
        before = source[8:-8, i * bar + 4:(i + 1) * bar - 4].reshape(-1, 3).mean(0)
        after = shown[32:-32, 4 * (i * bar + 4):4 * ((i + 1) * bar - 4)].reshape(-1, 3).mean(0)
        # Each 8-bit YUV <-> RGB round trip may round a level away (full range does, exactly computed).
        assert np.abs(after - before).max() <= 2, (i, before, after)


def test_ten_bit_source_stays_ten_bit(tiny_model, tmp_path) -> None:
    """A 10-bit source goes through the model as 16-bit RGB and comes out 10-bit: a gentle gradient keeps
    its fine steps (8-bit frames would leave about a quarter of its levels)."""
    width, height = 128, 16
    ramp = np.linspace(0.35, 0.50, width)  # ~150 ten-bit levels, ~38 eight-bit ones
    rgb = (np.broadcast_to(ramp[None, :, None], (height, width, 3)) * 65535).astype(np.uint16)
    clip = tmp_path / "deep.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=12, options={"crf": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb48le").reformat(
                format="yuv420p10le", src_colorspace="ITU601", dst_colorspace="ITU601", src_color_range=2,
                dst_color_range=1)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    upscaler = i2nq.Upscaler(tiny_model(scale=2, nearest=True), device="cpu", tile=0)
    result = upscaler.upscale_video(clip, tmp_path / "out.mp4", crf=0, preset="ultrafast", progress=False)

    def luma(path: Path) -> tuple[str, np.ndarray]:
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            return frame.format.name, frame.reformat(format="gray16le").to_ndarray()

    fmt, y = luma(result)
    _, y_src = luma(clip)
    assert fmt == "yuv420p10le"
    row, row_src = y[height], y_src[height // 2]
    assert len(np.unique(row)) > 100 and len(np.unique(row_src)) > 100
    assert np.abs(row[::2].astype(int) - row_src.astype(int)).max() <= 2 * 64  # within 2 ten-bit codes


def test_rotation_and_pixel_aspect_survive(upscaler, tmp_path) -> None:
    """A phone clip's display rotation and an anamorphic (DVD-like) pixel aspect ratio carry over."""
    clip = tmp_path / "rotated.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=12, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        stream.set_display_rotation(90)
        stream.codec_context.sample_aspect_ratio = Fraction(32, 27)
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((16, 32, 3), 90, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    result = upscaler.upscale_video(clip, tmp_path / "out.mp4", preset="ultrafast", progress=False)
    with av.open(str(result)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.width, stream.sample_aspect_ratio) == (64, Fraction(32, 27))
        assert next(c.decode(stream)).rotation == 90


def _subtitles(path: Path) -> list[tuple[bytes, Fraction]]:
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts * p.time_base) for p in c.demux(c.streams.subtitles[0]) if p.size]


@pytest.fixture
def subtitled(tmp_path) -> Path:
    """An MKV with an SRT track (muxed from FFmpeg's own SRT demuxer), the second cue in italics."""
    (tmp_path / "cues.srt").write_text("1\n00:00:00,000 --> 00:00:00,200\nhello\n\n"
                                       "2\n00:00:00,250 --> 00:00:00,400\n<i>world</i>\n")
    clip = tmp_path / "subtitled.mkv"
    with av.open(str(tmp_path / "cues.srt")) as cues, av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 32, 16, "yuv420p"
        text = out.add_stream_from_template(cues.streams.subtitles[0])
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((16, 32, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        for packet in cues.demux(cues.streams.subtitles[0]):
            if packet.dts is not None:
                packet.stream = text
                out.mux(packet)
        out.mux(video.encode(None))
    return clip


def test_subtitles_are_copied(upscaler, subtitled, tmp_path) -> None:
    cues = _subtitles(subtitled)
    assert [c[0] for c in cues] == [b"hello", b"<i>world</i>"]
    result = upscaler.upscale_video(subtitled, tmp_path / "out.mkv", preset="ultrafast", progress=False)
    assert _subtitles(result) == cues
    assert len(_video(result)[1]) == 6


def _cues(path: Path) -> list[tuple[Fraction, Fraction, list[bytes]]]:
    """(start, duration, ASS dialogue texts) of each nonempty cue."""
    with av.open(str(path)) as c:
        stream = c.streams.subtitles[0]
        cues = [(p.pts * p.time_base, p.duration * p.time_base, stream.codec_context.decode2(p))
                for p in c.demux(stream) if p.size]
        return [(t, d, [r.ass.split(b",", 8)[-1] for r in subs]) for t, d, subs in cues if subs is not None and len(subs)]


def test_subtitles_the_container_cannot_hold_are_converted(upscaler, subtitled, tmp_path) -> None:
    with pytest.warns(UserWarning, match=r"re-encoding subtitle stream 1 \(srt\) of subtitled.mkv to mov_text"):
        result = upscaler.upscale_video(subtitled, tmp_path / "out.mp4", preset="ultrafast", progress=False)
    with av.open(str(result)) as c:
        assert c.streams.subtitles[0].codec_context.name == "mov_text"
    assert _cues(subtitled) == [(0, Fraction(1, 5), [b"hello"]), (Fraction(1, 4), Fraction(3, 20), [b"{\\i1}world{\\i0}"])]
    # the same times and text, still in italics (mov_text leaves the closing tag at the end of a cue implicit)
    assert _cues(result) == [(0, Fraction(1, 5), [b"hello"]), (Fraction(1, 4), Fraction(3, 20), [b"{\\i1}world"])]
    with pytest.raises(I2NQError, match=r"^.avi files cannot hold the srt subtitle stream 1 of subtitled.mkv; "
                                        r"write .mkv instead$"):
        upscaler.upscale_video(subtitled, tmp_path / "out.avi", codec="mpeg4", progress=False)
    assert not (tmp_path / "out.avi").exists()


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


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.int32) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """4 s at 12 fps, a keyframe every second, B-frames, with audio: parts of it start between keyframes."""
    from conftest import make_clip

    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", frames=48, keyint=12, bframes=2)


@pytest.mark.parametrize("start, duration, first, count", [(1.25, 1.0, 15, 12), (3.5, None, 42, 6), (0, 0.5, 0, 6)])
def test_a_part_is_cut_and_rebased_to_zero(tiny_model, long_clip, tmp_path, start, duration, first, count) -> None:
    up = i2nq.Upscaler(tiny_model(scale=2, nearest=True), device="cpu", tile=0)  # output = nearest x2 of the input
    out = up.upscale_video(long_clip, tmp_path / "part.mp4", crf=10, preset="ultrafast", progress=False,
                           start=start, duration=duration)
    _, times = _video(out)
    assert times == [Fraction(i, 12) for i in range(count)]
    source = _frames(long_clip)
    shown = [min(range(len(source)), key=lambda i: np.abs(source[i] - f[::2, ::2]).mean()) for f in _frames(out)]
    assert shown == list(range(first, first + count))  # the right frames, none before the start or after the end
    start, end = Fraction(start), Fraction(start) + Fraction(duration or 4.0)
    want = [(t - start, data) for t, data in _audio(long_clip) if start <= t < end]
    got = _audio(out)
    assert [data for _, data in got] == [data for _, data in want]  # whole packets inside the part, untouched
    # rebased with them; MP4 stores where a track starts in its movie time scale (1 ms here)
    assert max(abs(t - u) for (t, _), (u, _) in zip(got, want)) <= Fraction(1, 1000) and got[0][0] < Fraction(1, 40)


def test_bad_parts_are_one_line_errors(tiny_model, long_clip, tmp_path) -> None:
    up = i2nq.Upscaler(tiny_model(scale=2, nearest=True), device="cpu", tile=0)
    for kwargs, msg in [(dict(start=4.0), "at or past the end of long.mp4 (4.000 s)"),
                        (dict(start=-1.0), "start must be a time >= 0"),
                        (dict(duration=0.0), "duration must be a time > 0")]:
        with pytest.raises(I2NQError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            up.upscale_video(long_clip, tmp_path / "part.mp4", progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []
    png = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(I2NQError, match="not a video"):
        up.upscale_path(png, tmp_path / "b.png", start=1.0)


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("1.5", 1.5), ("01:30", 90.0), ("1:02:03.5", 3723.5)])
def test_time_arguments(text, seconds) -> None:
    from i2nq.runtime.commands import _time

    assert _time(text) == seconds


@pytest.mark.parametrize("text", ["abc", "-1", "1::2", "1:2:3:4", "nan", "inf", ""])
def test_bad_time_arguments(text) -> None:
    import argparse

    from i2nq.runtime.commands import _time

    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        _time(text)


def test_cli_preview_of_a_part(tiny_model, long_clip, tmp_path) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "i2nq.cli", "upscale", str(long_clip), "--model", str(tiny_model(scale=2)),
           "--device", "cpu", "--no-progress", "--preset", "ultrafast"]
    r = subprocess.run([*cmd, "-o", str(tmp_path / "p.mp4"), "--start", "0:01.25", "--duration", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(_video(tmp_path / "p.mp4")[1]) == 12
    r = subprocess.run([*cmd, "-o", str(tmp_path / "q.mp4"), "--start", "1:00"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "i2nq: error: start 60 s is at or past the end of long.mp4 (4.000 s)"
    assert not (tmp_path / "q.mp4").exists()


def _samples(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(stream)]), stream.rate


@pytest.mark.parametrize("start", [0.0, 0.25])
def test_audio_the_container_cannot_hold_is_reencoded(upscaler, clip, tmp_path, start) -> None:
    with pytest.warns(UserWarning, match=r"re-encoding audio stream 1 \(aac\) of clip.mp4 to libopus: .webm files"):
        out = upscaler.upscale_video(clip, tmp_path / "out.webm", codec="libvpx-vp9", crf=40, preset="ultrafast",
                                     progress=False, start=start)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "opus"
    assert len(_video(out)[1]) == round(12 * (1 - start))
    samples, rate = _samples(out)
    assert abs(len(samples) / rate - (1 - start)) < 0.03  # the same length, to about an Opus frame
    spectrum = np.abs(np.fft.rfft(samples[rate // 50: -rate // 50]))
    peak = np.argmax(spectrum) * rate / (len(samples) - 2 * (rate // 50))
    rms = np.sqrt(np.mean(samples[rate // 50: -rate // 50] ** 2))
    assert abs(peak - 440) < 5 and abs(rms - 0.3 / np.sqrt(2)) < 0.02  # the 440 Hz tone at its level
