"""Segments of a video (i2nq.runtime.segments, no Ray): the plan, the join, the job folder."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import i2nq
from i2nq.errors import I2NQError
from i2nq.runtime.segments import (VideoJob, encode_segment, join_segments, pack_segment, plan_video, sha256,
                                   unpack_segment)
from i2nq.runtime.video import Span, VideoOptions


@pytest.fixture(scope="module")
def gops(tmp_path_factory) -> Path:
    """4 s at 12 fps, a keyframe every second, B-frames, audio."""
    from conftest import make_clip

    return make_clip(tmp_path_factory.mktemp("gops") / "gops.mp4", frames=48, keyint=12, bframes=2)


@pytest.mark.parametrize("parts, seconds, starts", [
    (2, 1.0, [0, 12, 24, 36]),  # a segment per GOP
    (2, 6.0, [0, 24]),  # at least one per worker
    (3, 6.0, [0, 12, 36]),  # the keyframes nearest to thirds
    (8, 6.0, [0, 12, 24, 36]),  # no more than there are keyframes
    (1, 6.0, [0]),
])
def test_segments_start_at_keyframes(gops, parts, seconds, starts) -> None:
    plan = plan_video(gops, parts, seconds)
    tb = Fraction(1, 12288)
    assert [0 if s.first is None else s.first * tb * 12 for s in plan.segments] == starts
    assert [s.seek for s in plan.segments] == [None, *(s.first for s in plan.segments[1:])]
    assert sum(s.frames for s in plan.segments) == plan.frames == 48
    assert plan.segments[-1].end is None and plan.segments[-1].finish == 4.0


def test_segments_of_a_part(gops) -> None:
    """A part decodes from the keyframe before its start, as the single-process path does; times are the part's."""
    plan = plan_video(gops, 2, 1.0, Span(1.25, 2.0))  # 2 s in 1 s segments: cut at the keyframe at 2 s
    assert [(s.frames, s.span) for s in plan.segments] == [(9, "00:00:00.000-00:00:00.750"),
                                                          (15, "00:00:00.750-00:00:02.000")]
    assert plan.segments[0].seek == round(1.25 * 12288)
    plan = plan_video(gops, 3, 6.0, Span(1.25, 2.0))  # at least 3: at the keyframes at 2 s and 3 s
    assert [(s.frames, s.span) for s in plan.segments] == [
        (9, "00:00:00.000-00:00:00.750"), (12, "00:00:00.750-00:00:01.750"), (3, "00:00:01.750-00:00:02.000")]
    with pytest.raises(I2NQError, match="at or past the end"):
        plan_video(gops, 2, 1.0, Span(5.0))


def _vfr_clip(path: Path) -> Path:
    """Frames 1/12 s apart, then from the second keyframe on 0.5 s apart: a segment's first decoding timestamps
    (x264 derives them from its first frames' spacing) would fall before the previous segment's last ones."""
    times = [i * 83 for i in range(12)] + [12 * 83 + i * 500 for i in range(12)]
    yy, xx = np.mgrid[0:30, 0:40]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=12, options={"crf": "20", "preset": "ultrafast", "g": "12", "bf": "2"})
        stream.width, stream.height, stream.pix_fmt = 40, 30, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            image = np.stack([(xx * 6 + i * 9) % 256, (yy * 8 + i * 5) % 256, (xx + yy) * 3 % 256], -1)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _join(src: Path, dst: Path, tiler, options: VideoOptions, parts: int = 2, seconds: float = 1.0) -> Path:
    plan = plan_video(src, parts, seconds)
    data = [encode_segment(src, s, tiler, options, dst.suffix) for s in plan.segments]
    join_segments(src, dst, lambda: (unpack_segment(d) for d in data), tiler.scale, options)
    return dst


def test_variable_frame_rate_joins_in_decoding_order(tiny_model, tmp_path) -> None:
    clip = _vfr_clip(tmp_path / "vfr.mp4")
    up = i2nq.Upscaler(tiny_model(scale=2), device="cpu", tile=0)
    options = VideoOptions(crf=18, preset="medium")  # B-frames in the output
    want = up.upscale_video(clip, tmp_path / "single.mp4", crf=18, preset="medium", progress=False)
    got = _join(clip, tmp_path / "joined.mp4", up.tiler, options)
    with av.open(str(got)) as c:
        packets = [(p.pts, p.dts) for p in c.demux(video=0) if p.size]
    dts = [d for _, d in packets]
    assert dts == sorted(set(dts)) and all(d <= p for p, d in packets)

    def times(path: Path) -> list[int]:
        with av.open(str(path)) as c:
            return [f.pts for f in c.decode(video=0)]

    assert times(got) == times(want) and len(times(got)) == 24


def test_segments_with_another_stream_header_are_not_joined(gops, tiny_model, tmp_path) -> None:
    up = i2nq.Upscaler(tiny_model(scale=2, nearest=True), device="cpu", tile=0)
    options = VideoOptions(crf=0, preset="ultrafast")
    plan = plan_video(gops, 2, 2.0)
    data = [encode_segment(gops, s, up.tiler, options, ".mp4") for s in plan.segments]
    second = unpack_segment(data[1])
    second.header["extradata"] = ""  # as if its encoder had written another header
    forged = pack_segment(second.header, [bytes(p[4]) for p in second.packets()])
    with pytest.raises(I2NQError, match="cannot join the segments of out.mp4 without re-encoding: the libx264 "
                                        "encoder wrote another stream header for segment 1; run without workers"):
        join_segments(gops, tmp_path / "out.mp4", lambda: (unpack_segment(d) for d in (data[0], forged)), 2, options)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(I2NQError, match="is damaged"):
        unpack_segment(data[0][:-10])


def test_job_folder_keeps_what_matches_its_checksum(gops, tiny_model, tmp_path) -> None:
    up = i2nq.Upscaler(tiny_model(scale=2, nearest=True), device="cpu", tile=0)
    plan = plan_video(gops, 2, 1.0)
    dst = tmp_path / "out.mp4"
    job = VideoJob(dst, "ab" * 32)
    assert job.load_plan() is None
    job.start(plan, {"what": "a test"})
    assert job.load_plan() == plan and job.finished(plan) == {}
    data = encode_segment(gops, plan.segments[1], up.tiler, VideoOptions(preset="ultrafast"), ".mp4")
    with pytest.raises(I2NQError, match="damaged on its way"):
        job.save(1, data, sha256(data[:-1]))
    record = job.save(1, data, sha256(data))
    assert record["frames"] == 12 and set(job.finished(plan)) == {1}
    assert job.read(1, record).header["frames"] == 12
    seg = job.folder / "000001.seg"
    seg.write_bytes(seg.read_bytes()[:-1] + b"?")  # changed after it was written: redone by a rerun
    assert job.finished(plan) == {}
    with pytest.raises(I2NQError, match="does not match its checksum"):
        job.read(1, record)
    other = VideoJob(dst, "cd" * 32)
    assert other.folder != job.folder and other.others() == [job.folder] and other.load_plan() is None


def _decoded(path: Path) -> tuple[list[int], list[np.ndarray], int | None]:
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray()) for f in c.decode(video=0)]
        return [t for t, _ in frames], [a for _, a in frames], c.streams.video[0].duration


@pytest.mark.parametrize("suffix, outscale", [(".mkv", 1.5), (".avi", None)])
def test_joined_segments_are_the_single_process_output(gops, tiny_model, tmp_path, suffix, outscale) -> None:
    """With an outscale (resized after the model), and into AVI (MPEG-4 Part 2, a coarser time base, the empty
    index entries that place the first frame and make the last one last): the same frames at the same times."""
    up = i2nq.Upscaler(tiny_model(scale=2), device="cpu", tile=0, outscale=outscale)
    lossless = suffix != ".avi"
    options = VideoOptions(crf=0, preset="superfast") if lossless else VideoOptions()
    want = up.upscale_video(gops, tmp_path / f"single{suffix}", crf=options.crf, preset=options.preset,
                            progress=False)
    plan = plan_video(gops, 2, 1.0)
    data = [encode_segment(gops, s, up.tiler, options, suffix, outscale=outscale) for s in plan.segments]
    got = tmp_path / f"joined{suffix}"
    join_segments(gops, got, lambda: (unpack_segment(d) for d in data), up.output_scale, options)
    (a_times, a, a_length), (b_times, b, b_length) = _decoded(got), _decoded(want)
    assert a_times == b_times and len(a) == 48 and a_length == b_length
    with av.open(str(got)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == ((60, 45) if outscale else (80, 60))
    assert a[0].shape == b[0].shape
    if lossless:
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    else:
        assert max(np.abs(x.astype(int) - y).mean() for x, y in zip(a, b)) < 3
