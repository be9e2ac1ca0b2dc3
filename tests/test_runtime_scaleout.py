"""Scale-out on Ray (i2nq.runtime.distributed): the same output as one process, resumable, fault-tolerant.

One local Ray cluster serves the whole module (4 logical CPUs; workers take 1 each and 1 thread). Frames are
compared exactly where the encoder is lossless (x264 at crf 0: the decoded frames are the frames it was given),
so "the same frames before encoding" is checked on the output itself; with B-frames in the output (lossy) the
timestamps, order and the join are checked, and the frames only to be close.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import i2nq
from i2nq.errors import I2NQError

ray = pytest.importorskip("ray", reason="the scale-out tests need Ray: pip install 'i2nq[ray]' (the Ray-free "
                               "parts are in test_runtime_scaleout_cli.py and test_runtime_segments.py)")

import scaleout_standins  # noqa: E402  (after the skip: the workers get it by value, see `cluster`)
from conftest import make_clip  # noqa: E402

pytestmark = pytest.mark.timeout(240)

TILING = dict(device="cpu", tile=16, batch=4)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module's tests: its address, for other processes to join."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(scaleout_standins)  # the workers cannot import tests/
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tiny_model) -> Path:
    return tiny_model(scale=2)


@pytest.fixture(scope="module")
def farm(cluster, model):
    with i2nq.DistributedUpscaler(model, **TILING, workers=2, threads=1, segment_seconds=1.0) as farm:
        yield farm


@pytest.fixture(scope="module")
def single(model) -> i2nq.Upscaler:
    return i2nq.Upscaler(model, **TILING)


@pytest.fixture(scope="module")
def rich_clip(tmp_path_factory) -> Path:
    """4 s at 12 fps in Matroska (1 ms timestamps, so frame steps alternate 83/84 ms), a keyframe every second,
    B-frames, an AAC track, and SRT cues, one of them across a keyframe."""
    folder = tmp_path_factory.mktemp("rich")
    mp4 = make_clip(folder / "src.mp4", frames=48, keyint=12, bframes=2)
    (folder / "cues.srt").write_text("1\n00:00:00,500 --> 00:00:01,200\nhello\n\n"
                                     "2\n00:00:01,900 --> 00:00:02,400\n<i>across</i>\n\n"
                                     "3\n00:00:03,500 --> 00:00:03,900\nbye\n")
    out = folder / "rich.mkv"
    with av.open(str(mp4)) as src, av.open(str(folder / "cues.srt")) as cues, av.open(str(out), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        text = dst.add_stream_from_template(cues.streams.subtitles[0])
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
        for packet in cues.demux(cues.streams.subtitles[0]):
            if packet.dts is not None:
                packet.stream = text
                dst.mux(packet)
    return out


def _frames(path: Path) -> list[tuple[int, np.ndarray]]:
    """(pts, the decoded YUV planes) of every frame."""
    with av.open(str(path)) as c:
        return [(f.pts, f.to_ndarray()) for f in c.decode(video=0)]


def _packets(path: Path, kind: str) -> list[tuple[Fraction, bytes]]:
    with av.open(str(path)) as c:
        stream = next((s for s in c.streams if s.type == kind), None)
        return [] if stream is None else [(p.pts * p.time_base, bytes(p)) for p in c.demux(stream) if p.size]


def _video_packets(path: Path) -> list[tuple[int, int, bool]]:
    with av.open(str(path)) as c:
        return [(p.pts, p.dts, p.is_keyframe) for p in c.demux(video=0) if p.size]


def _description(path: Path) -> list[tuple]:
    """Streams as a player sees them: kind, codec, and for video the size, format, colour tags and time base."""
    with av.open(str(path)) as c:
        out = []
        for s in c.streams:
            cc = s.codec_context
            extra = (cc.width, cc.height, cc.format.name, cc.colorspace, cc.color_range, cc.color_primaries,
                     cc.color_trc, s.time_base) if s.type == "video" else ()
            out.append((s.type, cc.name, *extra))
        return out


def _assert_same_video(got: Path, want: Path, exact: bool = True) -> None:
    assert _description(got) == _description(want)
    a, b = _frames(got), _frames(want)
    assert [t for t, _ in a] == [t for t, _ in b] and len(a) > 0  # same frames, order and timestamps
    if exact:
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    else:
        assert max(np.abs(x.astype(int) - y).mean() for (_, x), (_, y) in zip(a, b)) < 3
    for kind in ("audio", "subtitle"):
        assert _packets(got, kind) == _packets(want, kind)


def _segment_starts(plan_src: Path, parts: int, seconds: float = 1.0) -> list[int]:
    from i2nq.runtime.segments import plan_video

    return [s.first for s in plan_video(plan_src, parts, seconds).segments[1:]]


@pytest.mark.parametrize("suffix, part", [(".mkv", {}), (".mp4", {"start": 1.25, "duration": 2.0})])
def test_same_output_as_one_process(farm, single, rich_clip, tmp_path, suffix, part) -> None:
    """Lossless x264: every frame is the single-process frame before encoding, with its timestamp; audio and
    subtitle packets are copied once, byte for byte (converted to mov_text for MP4 in both paths)."""
    with pytest.warns(UserWarning) if suffix == ".mp4" else _nothing():
        want = single.upscale_video(rich_clip, tmp_path / f"single{suffix}", crf=0, preset="superfast",
                                    progress=False, **part)
    with pytest.warns(UserWarning) if suffix == ".mp4" else _nothing():
        got = farm.upscale_video(rich_clip, tmp_path / f"farm{suffix}", crf=0, preset="superfast", progress=False,
                                 **part)
    _assert_same_video(got, want)
    keys = {pts for pts, _, key in _video_packets(got) if key}
    if not part:
        starts = _segment_starts(rich_clip, 2)
        assert len(starts) == 3 and set(starts) <= keys  # each segment starts with a keyframe
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([want.name, got.name])  # job folder gone


def test_b_frames_out_join_with_continuous_timestamps(farm, single, rich_clip, tmp_path) -> None:
    """With B-frames in the output (x264 medium, lossy) the segments join with strictly increasing decoding
    timestamps and the same presentation timestamps; frames differ only by the encoding (other GOPs)."""
    want = single.upscale_video(rich_clip, tmp_path / "single.mkv", crf=18, progress=False)
    got = farm.upscale_video(rich_clip, tmp_path / "farm.mkv", crf=18, progress=False)
    _assert_same_video(got, want, exact=False)
    mp4 = farm.upscale_video(rich_clip.with_name("src.mp4"), tmp_path / "farm.mp4", crf=18, progress=False)
    packets = _video_packets(mp4)
    dts = [d for _, d, _ in packets]
    assert dts == sorted(set(dts)) and any(p != d for p, d, _ in packets)  # reordered, and in decoding order
    assert [t for t, _ in _frames(mp4)] == [t for t, _ in _frames(rich_clip.with_name("src.mp4"))]


def test_worker_killed_mid_segment_is_retried(cluster, model, single, rich_clip, tmp_path) -> None:
    """A worker SIGKILLed in the middle of a segment is restarted by Ray, which runs its segment again: the
    output is complete and the same."""
    marker = tmp_path / "killed"
    factory = functools.partial(scaleout_standins.KillOnce, str(model), str(marker), 20)
    want = single.upscale_video(rich_clip, tmp_path / "single.mkv", crf=0, preset="superfast", progress=False)
    with i2nq.DistributedUpscaler(model, **TILING, workers=2, threads=1, segment_seconds=1.0,
                                  backend_factory=factory) as farm:
        got = farm.upscale_video(rich_clip, tmp_path / "farm.mkv", crf=0, preset="superfast", progress=False)
        killed = int(marker.read_text())
        now = [info["pid"] for info in ray.get([actor.ready.remote() for actor in farm.actors])]
        assert killed in farm.pids and killed not in now and len(now) == 2  # Ray restarted it ...
        assert farm.stats == {"tasks": 4, "tried_again": 0, "workers_lost": 0}  # ... and ran its segment again
    _assert_same_video(got, want)


@pytest.fixture(scope="module")
def corrupt_clip(tmp_path_factory) -> Path:
    """48 frames, a keyframe every second, one P-frame packet at 2.5 s made undecodable (its NAL length)."""
    clip = make_clip(tmp_path_factory.mktemp("corrupt") / "corrupt.mp4", frames=48, keyint=12, bframes=2)
    with av.open(str(clip)) as c:
        pos = next(p.pos for p in c.demux(video=0) if p.pts == 30 * 1024)
    data = bytearray(clip.read_bytes())
    data[pos:pos + 4] = b"\xff\xff\xff\xff"
    clip.write_bytes(bytes(data))
    return clip


def test_corrupt_segment_ends_the_job_keeping_the_rest(cluster, model, corrupt_clip, tmp_path, capsys) -> None:
    """A segment that fails twice for its data ends the job with one line naming its time range; the finished
    segments stay for a rerun (which redoes only what is missing), and another option set is another job."""
    from i2nq.cli import main

    out = tmp_path / "out.mp4"
    cmd = ["upscale", str(corrupt_clip), "-o", str(out), "--model", str(model), "--device", "cpu", "--tile", "16",
           "--batch", "4", "--ray", cluster, "--workers", "2", "--segment-seconds", "1", "--crf", "0",
           "--preset", "superfast", "--no-progress"]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip()
    job = next(tmp_path.glob("out.mp4.i2nq-job-*"))
    assert err == (f"i2nq: error: segment 3 of 4 of corrupt.mp4 (00:00:02.000-00:00:03.000) failed 2 times: cannot "
                   f"decode {corrupt_clip}: Invalid data found when processing input; 3 finished segment(s) are kept in "
                   f"{job}: rerun the same command to do only the rest")
    assert not out.exists() and sorted(p.name for p in job.glob("*.json")) == [
        "000000.json", "000001.json", "000003.json", "job.json"]
    with pytest.warns(UserWarning, match=r"resuming out.mp4.i2nq-job-\w+: 3 of 4 segments are done already"):
        with pytest.raises(I2NQError, match=r"segment 3 of 4 .* \(00:00:02.000-00:00:03.000\) failed 2 times"), \
                i2nq.DistributedUpscaler(model, **TILING, workers=1, segment_seconds=1.0) as farm:
            farm.upscale_video(corrupt_clip, out, crf=0, preset="superfast", progress=False)
    with pytest.warns(UserWarning, match=f"{job.name} is the job folder of an earlier run with another"):
        with pytest.raises(I2NQError, match="3 finished segment"), \
                i2nq.DistributedUpscaler(model, **TILING, workers=1, segment_seconds=1.0) as farm:
            farm.upscale_video(corrupt_clip, out, crf=1, preset="superfast", progress=False)  # its own 3: none reused
    assert len(list(tmp_path.glob("out.mp4.i2nq-job-*"))) == 2


RESUMABLE = """
import faulthandler, functools, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks if it hangs
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal: a test run started in
# the background (`... &`, as CI may) ignores SIGINT, and its children inherit that
sys.path.insert(0, {tests!r})
import i2nq, ray, scaleout_standins
ray.cloudpickle.register_pickle_by_value(scaleout_standins)
factory = functools.partial(scaleout_standins.Slow, {model!r}, 0.02, {hang!r}, 40)
with i2nq.DistributedUpscaler({model!r}, device="cpu", tile=16, batch=4, workers=2, threads=1, segment_seconds=0.5,
                              ray_address={address!r}, backend_factory=factory) as farm:
    try:
        farm.upscale_video({clip!r}, {out!r}, crf=0, preset="superfast", progress=False)
    except KeyboardInterrupt:
        print("interrupted")
        sys.exit(130)
print("done")
"""


def _start_and_wait(script: Path, folder: Path, records: int) -> tuple[subprocess.Popen, list[str]]:
    """Run the job script until `records` segments are finished in its job folder."""
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    done: list[str] = []
    while time.monotonic() < deadline and run.poll() is None:
        done = sorted(p.name for p in folder.glob("out.mkv.i2nq-job-*/0*.json"))
        if len(done) >= records:
            return run, done
        time.sleep(0.05)
    run.kill()
    out, err = run.communicate()
    raise AssertionError(f"no {records} segments finished in time: {err}")


def test_resume_after_a_killed_job(cluster, model, single, tmp_path) -> None:
    """The driver is SIGKILLed in the middle; the same command again redoes only the missing segments and ends
    with the output an uninterrupted run gives."""
    clip = make_clip(tmp_path / "clip.mp4", frames=48, keyint=6, bframes=2)  # 8 keyframes: 8 segments of 0.5 s
    hang = tmp_path / "hang"
    hang.touch()
    out = tmp_path / "out.mkv"
    script = tmp_path / "job.py"
    script.write_text(RESUMABLE.format(tests=str(Path(__file__).parent), model=str(model), hang=str(hang),
                                       address=cluster, clip=str(clip), out=str(out)))
    run, _ = _start_and_wait(script, tmp_path, 2)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    records = sorted(p.name for p in tmp_path.glob("out.mkv.i2nq-job-*/0*.json"))
    job = json.loads(next(tmp_path.glob("out.mkv.i2nq-job-*/job.json")).read_text())
    total = len(job["plan"]["segments"])
    assert not out.exists() and 2 <= len(records) < total == 8
    damaged = next(tmp_path.glob(f"out.mkv.i2nq-job-*/{records[0][:-5]}.seg"))
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"?")  # no longer what its record says: redone
    hang.unlink()
    rerun = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(records) - 1} of {total} segments are done already" in rerun.stderr
    want = single.upscale_video(clip, tmp_path / "single.mkv", crf=0, preset="superfast", progress=False)
    _assert_same_video(out, want)
    assert not list(tmp_path.glob("*.i2nq-job-*"))


def test_interrupt_keeps_the_finished_segments(cluster, model, tmp_path) -> None:
    """Ctrl-C in the middle: the job stops at once, says what it keeps, and leaves no partial output."""
    clip = make_clip(tmp_path / "clip.mp4", frames=48, keyint=6, bframes=2)
    hang = tmp_path / "hang"
    hang.touch()
    script = tmp_path / "job.py"
    script.write_text(RESUMABLE.format(tests=str(Path(__file__).parent), model=str(model), hang=str(hang),
                                       address=cluster, clip=str(clip), out=str(tmp_path / "out.mkv")))
    run, _ = _start_and_wait(script, tmp_path, 1)
    run.send_signal(signal.SIGINT)
    try:
        out, err = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGUSR1)  # where it hangs: every thread's stack, to stderr
        time.sleep(5)
        run.kill()
        out, err = run.communicate()
        raise AssertionError(f"the job did not stop within 60 s of Ctrl-C; stdout {out!r}; stderr:\n{err[-30000:]}")
    assert run.returncode == 130 and out.strip() == "interrupted"  # it did not wait for the hanging segments
    job = next(tmp_path.glob("out.mkv.i2nq-job-*"))
    kept = len(list(job.glob("0*.json")))
    assert f"stopped; {kept} finished segment(s) are kept in {job}: rerun the same command" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.mp4", "hang", "job.py", job.name])
    assert not [p for p in job.iterdir() if ".part" in p.name]


def test_folder_batch_with_a_bad_file(farm, single, clip, tmp_path) -> None:
    """Images and videos of a folder are tasks on the workers; the good ones are done (as one process does them),
    the bad one is named, and a rerun skips the finished outputs."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (30, 20)), ("b.jpg", (12, 40))):
        cv2.imwrite(str(src / name), rng.integers(0, 256, (*size, 3), np.uint8))
    (src / "bad.png").write_bytes(rng.bytes(300))
    (src / "clip.mp4").write_bytes(clip.read_bytes())
    errors = []
    with pytest.raises(i2nq.runtime.upscaler.FolderError, match="1 of 4 images failed") as info:
        farm.upscale_folder(src, tmp_path / "out", on_error=lambda path, message: errors.append((path.name, message)),
                            progress=False, crf=0, preset="superfast")
    assert [name for name, _ in errors] == ["bad.png"] and "cannot decode" in errors[0][1]
    assert sorted(p.name for p in info.value.written) == ["a.png", "b.jpg", "clip.mp4"]
    for name in ("a.png", "b.jpg"):
        single.upscale_file(src / name, tmp_path / f"single_{name}")
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / f"single_{name}").read_bytes()
    want = single.upscale_video(clip, tmp_path / "single.mp4", crf=0, preset="superfast", progress=False)
    _assert_same_video(tmp_path / "out" / "clip.mp4", want)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.jpg", "clip.mp4"]
    with pytest.raises(i2nq.runtime.upscaler.FolderError) as info:
        farm.upscale_folder(src, tmp_path / "out", on_error=lambda *_: None, progress=False)
    assert len(info.value.skipped) == 3 and not info.value.written


def test_one_progress_bar_for_the_job(farm, clip, tmp_path, capsys) -> None:
    farm.upscale_video(clip, tmp_path / "out.mp4", preset="ultrafast")
    chunks = [c.strip() for c in capsys.readouterr().err.replace("\n", "\r").split("\r") if c.strip()]
    assert chunks and all(c.startswith("clip.mp4:") for c in chunks)  # one bar, not one per worker
    assert "12/12" in chunks[-1] and "frame/s" in chunks[-1]


def _cli(args: list[str], code: str = "") -> subprocess.CompletedProcess:
    program = textwrap.dedent(f"""
        import sys
        {code}
        from i2nq.cli import main
        rc = main({args!r})
        print("ray imported" if "ray" in sys.modules else "ray not imported")
        sys.exit(rc)
    """)
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)


def test_unreachable_cluster_is_a_one_line_error(model, clip, tmp_path) -> None:
    import socket

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    r = _cli(["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(model), "--ray", f"127.0.0.1:{port}"])
    assert r.returncode == 2 and r.stderr.startswith(f"i2nq: error: cannot reach the Ray cluster at 127.0.0.1:{port}: ")
    assert len(r.stderr.splitlines()) == 1 and list(tmp_path.iterdir()) == []


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
