"""Video: PyAV decode -> batched SR -> encode, with audio and subtitle packets copied untouched (re-encoded,
with a warning, only where the output container cannot hold their codec: AAC into WebM, SRT into MP4).

Decoding and encoding run in their own threads, joined to inference by bounded queues, so they overlap
with the model and memory stays bounded for any length. Colours keep their meaning: frames go to RGB and back
with the source's matrix and range, and the output stream is tagged with them (an untagged source gets what
players assume for it, made explicit, since the upscaled output would otherwise be shown as HD video with
another matrix), and a 10-bit source stays 10-bit where the encoder can.

Frames and timing are those a player shows: every decoded frame, at its presentation time, shown until the next
one (so an AVI whose index repeats frames with empty entries, or variable-frame-rate video, keeps its timing);
timestamps that a decoder hands out of order (old AVIs with packed B-frames), twice or not at all are put in
order (see _Timeline). Before the model runs, the output is tried on the first frames (container, encoder,
timestamps, copied streams), so what cannot be written fails in seconds, not at the end. The output is written
to a temp file and published only when complete; Ctrl-C leaves nothing behind, while a source that breaks
midway, or a model that fails midway, leaves the part done as a playable file beside the output, and the error
says where.
"""

from __future__ import annotations

import heapq
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from i2nq.errors import I2NQError, option
from i2nq.files import atomic_output, keep_aside, scratch_file
from i2nq.runtime import progress as progress_bars
from i2nq.runtime.rescale import output_size, resize

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
COPIED_STREAMS = ("audio", "subtitle")
_END = object()


def is_video(path: Path) -> bool:
    """Whether the file name has a supported video suffix."""
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoOptions:
    """Encoder settings: an FFmpeg encoder name (None: libx264, or mpeg4 into .avi), constant-rate-factor
    quality and speed preset."""

    codec: str | None = None
    crf: int = 18
    preset: str = "medium"

    def encoder(self, container: str) -> str:
        """The encoder for this container. AVI stores no presentation times, and FFmpeg reads H.264 in AVI with
        each frame at the next one's time (a frame late, and wrong wherever frames repeat); MPEG-4 Part 2, the
        codec AVI was made for, keeps them."""
        return self.codec or ("mpeg4" if container == "avi" else "libx264")

    def encoder_options(self, container: str = "") -> dict[str, str]:
        """Options for the encoder (x264/x265/VP9/AV1 read crf and preset; others ignore them). x265 logs a
        page of settings per file unless told otherwise: only its errors get through the progress bar. Into
        .avi, H.264 and H.265 are encoded without B-frames (AVI cannot reorder them)."""
        codec = self.encoder(container)
        extra: dict[str, str] = {}
        no_bframes = container == "avi"
        if codec == "libx265":
            extra["x265-params"] = "log-level=error" + (":bframes=0" if no_bframes else "")
        elif no_bframes and codec == "libx264":
            extra["bf"] = "0"
        return {"crf": str(self.crf), "preset": self.preset, **extra}

    def bit_rate(self, width: int, height: int, rate: Fraction) -> int | None:
        """For encoders without a constant-quality mode (mpeg4): a bit rate that follows crf (0.25 bits per
        pixel at crf 18, doubling every 6 lower)."""
        return int(width * height * float(rate) * 0.25 * 2 ** ((18 - self.crf) / 6))


@dataclass(frozen=True)
class Span:
    """A part of a video in seconds from its start: [start, start + duration); duration None: to the end."""

    start: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start < float("inf"):
            raise I2NQError(f"{option('--start', 'start')} must be a time >= 0, got {self.start}")
        if self.duration is not None and not 0 < self.duration < float("inf"):
            raise I2NQError(f"{option('--duration', 'duration')} must be a time > 0, got {self.duration}")

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.duration is None


class _Cut:
    """Selects a Span of a source and rebases what it keeps to start at 0, per stream time base."""

    def __init__(self, span: Span, source: av.container.InputContainer, src: Path) -> None:
        self.origin = (source.start_time or 0) / av.time_base  # container timestamps of the first instant
        length = source.duration / av.time_base if source.duration else None
        if length is not None and span.start >= length:
            raise I2NQError(f"start {span.start:g} s is at or past the end of {src.name} ({length:.3f} s)")
        self.start = self.origin + span.start
        self.end = self.start + span.duration if span.duration is not None else float("inf")
        self.seconds = min(span.duration or float("inf"), (length or float("inf")) - span.start)

    def offset(self, time_base: Fraction) -> int:
        return round(Fraction(self.start) / time_base)

    def position(self, ts: int, time_base: Fraction) -> int:
        """-1 before the span, 0 inside, 1 after."""
        t = ts * time_base
        return -1 if t < self.start - 1e-9 else (0 if t < self.end - 1e-9 else 1)


#: Stream colorspace tag (AVCOL_SPC) -> swscale matrix.
_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
_BT709, _SMPTE170M, _UNSPECIFIED, _MPEG, _JPEG = 1, 6, 2, 1, 2
#: Exact rounding and full chroma interpolation: swscale's default drifts by about one level per round trip.
_SWS_FLAGS = (av.video.reformatter.Interpolation.BILINEAR | av.video.reformatter.Interpolation.ACCURATE_RND
              | av.video.reformatter.Interpolation.FULL_CHR_H_INT)


@dataclass(frozen=True)
class StreamColor:
    """The YUV <-> RGB conversion of one video: the source's matrix and range (tag values as FFmpeg numbers),
    and whether it has more than 8 bits per sample (then frames travel as 16-bit RGB)."""

    colorspace: int
    full_range: bool
    primaries: int
    transfer: int
    deep: bool

    @classmethod
    def of(cls, video: av.video.stream.VideoStream) -> StreamColor:
        """From the stream's tags; untagged ones as players guess them: BT.709 for HD sizes, else BT.601."""
        cc = video.codec_context
        guess = _BT709 if cc.height > 576 or cc.width >= 1280 else _SMPTE170M
        known = (lambda tag: tag not in (0, _UNSPECIFIED))
        deep = cc.format is not None and max(c.bits for c in cc.format.components) > 8
        return cls(cc.colorspace if cc.colorspace in _MATRIX else guess, cc.color_range == _JPEG,
                   cc.color_primaries if known(cc.color_primaries) else guess,
                   cc.color_trc if known(cc.color_trc) else guess, deep)

    @property
    def rgb(self) -> str:
        return "bgr48le" if self.deep else "bgr24"

    def _convert(self, frame: av.VideoFrame, fmt: str, to_rgb: bool) -> av.VideoFrame:
        matrix, yuv_range = _MATRIX[self.colorspace], _JPEG if self.full_range else _MPEG
        return frame.reformat(format=fmt, src_colorspace=matrix, dst_colorspace=matrix,
                              src_color_range=yuv_range if to_rgb else _JPEG,
                              dst_color_range=_JPEG if to_rgb else yuv_range, interpolation=_SWS_FLAGS)

    def to_bgr(self, frame: av.VideoFrame) -> np.ndarray:
        """BGR uint8, or uint16 for a deep source."""
        return self._convert(frame, self.rgb, to_rgb=True).to_ndarray()

    def from_bgr(self, image: np.ndarray, pix_fmt: str) -> av.VideoFrame:
        return self._convert(av.VideoFrame.from_ndarray(image, format=self.rgb), pix_fmt, to_rgb=False)

    def tag(self, encoder: av.video.stream.VideoStream) -> None:
        cc = encoder.codec_context
        cc.colorspace, cc.color_range = self.colorspace, _JPEG if self.full_range else _MPEG
        cc.color_primaries, cc.color_trc = self.primaries, self.transfer


@dataclass
class _Frame:
    image: np.ndarray
    pts: int
    time_base: Fraction
    duration: int = 1  # in time_base units: until the next frame (the last: until the stream ends)


class _Stopped(Exception):
    """Another stage failed or was interrupted."""


#: Decoded frames whose timestamps are put in order together: a timestamp may arrive this many frames early or
#: late (old AVIs with packed B-frames hand them out one frame off). Frames wait here in decoded (YUV) form.
REORDER_WINDOW = 4
#: A timestamp this far (seconds) behind the previous one is a discontinuity (a stream that restarts its clock),
#: not a frame out of order: what follows is shifted to go on after the previous frame.
DISCONTINUITY = 1.0


class _Timeline:
    """Presentation timestamps for frames in the order the decoder hands them out, as a player shows them.

    A decoder outputs frames in presentation order; the timestamps it attaches are the frame's pts, else the
    packet's dts. Some files get them wrong: old AVIs with packed B-frames (pts 1, 2, 3, 5, 4, ...), streams
    without timestamps, clocks that restart. Here the k-th frame gets the smallest timestamp among those of the
    frames around it (a window of REORDER_WINDOW), which puts a shuffled run back in order and leaves a correct
    one (variable frame rate included) as it is; a frame without a timestamp, or with one not after the
    previous frame's, goes one tick after it (a clock that jumps back by more than DISCONTINUITY seconds shifts
    everything after it to go on from there). Each frame lasts until the next one; the last until `end`.
    """

    def __init__(self, time_base: Fraction, rate: Fraction | None) -> None:
        self.step = max(1, round(1 / ((rate or Fraction(24)) * time_base)))  # one frame at the nominal rate
        self.jump = max(1, round(DISCONTINUITY / time_base))
        self.held: deque = deque()
        self.times: list[int] = []  # heap of the held frames' timestamps
        self.last: int | None = None
        self.offset = 0  # added to the timestamps after a clock restart
        self.high: int | None = None  # the largest timestamp pushed (offset included)
        self.pending: tuple[av.VideoFrame, int] | None = None  # waits for the next timestamp: its duration

    def push(self, frame: av.VideoFrame) -> Iterator[tuple[av.VideoFrame, int, int]]:
        """(frame, timestamp, duration) for the frames that are placed now."""
        ts = frame.pts if frame.pts is not None else frame.dts
        if ts is not None:
            ts += self.offset
            if self.high is not None and self.high - ts > self.jump:  # the clock restarted: go on after the rest
                self.offset += self.high + self.step - ts
                ts = self.high + self.step
            self.high = ts if self.high is None else max(self.high, ts)
            heapq.heappush(self.times, ts)
        self.held.append((frame, ts))
        while len(self.held) > REORDER_WINDOW:
            yield from self._place(*self.held.popleft())

    def finish(self, end: int | None) -> Iterator[tuple[av.VideoFrame, int, int]]:
        """The frames still held; the last one lasts until `end` (a source timestamp), or one frame step."""
        while self.held:
            yield from self._place(*self.held.popleft())
        if self.pending is not None:
            frame, ts = self.pending
            stop = None if end is None or self.offset else end  # (after a restart, `end` is on the old clock)
            yield frame, ts, stop - ts if stop is not None and stop > ts else self.step
            self.pending = None

    def _place(self, frame: av.VideoFrame, raw: int | None) -> Iterator[tuple[av.VideoFrame, int, int]]:
        if raw is None:
            ts = 0 if self.last is None else self.last + self.step
        else:
            ts = heapq.heappop(self.times)
            if self.last is not None and ts <= self.last:  # a repeated timestamp, or one moved beyond the window
                ts = self.last + 1
        if self.pending is not None:
            yield self.pending[0], self.pending[1], ts - self.pending[1]
        self.pending, self.last = (frame, ts), ts


@dataclass
class _Packets:
    """What the demuxer saw of the video stream: packets with data, and where the last one ends."""

    count: int = 0
    end: int | None = None
    display_matrix: list[int] | None = None

    def add(self, packet: av.Packet) -> None:
        if not packet.size:
            return
        self.count += 1
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None:
            stop = ts + max(packet.duration or 0, 0)
            self.end = stop if self.end is None else max(self.end, stop)

    def truncated(self, video: av.video.stream.VideoStream) -> bool:
        """Whether the stream holds fewer frames than its header promises and ends before the header says it
        does. (An AVI's header counts index entries, and an entry without data repeats the frame before it:
        such a stream holds fewer packets than entries, but reaches its end.)"""
        if not video.frames or self.count >= video.frames:
            return False
        if video.duration and self.end is not None:
            return self.end < (video.start_time or 0) + video.duration
        return True


class _Pipeline:
    """The three stages and the queues between them. An interrupt or a failure to write stops them all; a failure
    of the source or the model midway (`soft`) stops decoding and upscaling, and the frames done are still
    encoded and the file finished, so the part done can be kept."""

    def __init__(self, depth: int) -> None:
        self.decoded: queue.Queue = queue.Queue(depth)
        self.upscaled: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.halt_decoding = threading.Event()
        self.error: BaseException | None = None
        self.soft: I2NQError | None = None

    def put(self, q: queue.Queue, item: object) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self, q: queue.Queue) -> object:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stopped

    def thread(self, target: Callable[[], None]) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the main thread, which re-raises it
                self.error = self.error or exc
                self.stop.set()

        worker = threading.Thread(target=body, daemon=True)
        worker.start()
        return worker


@dataclass
class _Outcome:
    """How a run ended: frames written, where the written part ends (seconds), and a failure midway."""

    frames: int = 0
    seconds: float = 0.0
    failure: I2NQError | None = None


TRIAL_FRAMES = 3  # frames written by the trial before the model runs


def upscale_video(src: Path, dst: Path, tiler, options: VideoOptions = VideoOptions(),
                  progress: bool | None = None, span: Span = Span(), max_pixels: int | None = None,
                  outscale: float | None = None) -> None:
    """Upscale every frame of `src` (or of its `span`, rebased to start at 0) into `dst`, as many frames per
    model call as fill the tiler's batch. max_pixels: the largest frame (width x height) accepted (None: any).
    outscale: the output's size over the input's (None: the model's scale; else a resize after the model).
    progress: a bar of decoded frames on stderr (None: when stderr is a terminal).

    Raises I2NQError; when the source or the model fails midway, the part done is kept beside `dst` as
    `{stem}.partial{suffix}` and the error says so."""
    try:
        source = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise I2NQError(f"cannot read video {src}: {_reason(exc)}") from None
    with source:
        if not source.streams.video:
            raise I2NQError(f"{src} has no video stream")
        video = source.streams.video[0]
        video.thread_type = "AUTO"
        cc = video.codec_context
        if max_pixels and cc.width * cc.height > max_pixels:
            raise I2NQError(f"{src} has {cc.width}x{cc.height} frames = {cc.width * cc.height / 1e6:.0f} megapixels, "
                            f"over the limit of {max_pixels / 1e6:g} megapixels; pass "
                            f"{option('--max-pixels', 'max_pixels=')} to raise it")
        scale = tiler.scale
        size = output_size(cc.height, cc.width, outscale) if outscale is not None else \
            (cc.height * scale, cc.width * scale)
        if hasattr(tiler, "check_frame"):  # memory for whole frames (--tile 0): before anything is written
            tiler.check_frame(cc.height, cc.width)
        copied = [s for s in source.streams if s.type in COPIED_STREAMS]
        cut = None if span.whole else _Cut(span, source, src)
        color = StreamColor.of(video)
        matrix = _trial(src, dst, options, color, size, cut)  # what cannot be written fails here, in seconds
        if cut is not None and span.start > 0:  # to the keyframe before the start; frames before it are dropped
            source.seek(cut.offset(video.time_base), stream=video, backward=True)
        shown = progress_bars.shown(progress)
        bar = progress_bars.bar(None, "frame", src.name, shown)
        counter = _count_frames(src, cut, bar) if shown else None

        def upscale(frames: list[np.ndarray]) -> list[np.ndarray]:
            out = tiler.run(frames)
            return out if outscale is None else [resize(f, size, scale, outscale) for f in out]

        with atomic_output(dst) as tmp:
            sink = open_sink(tmp, dst)
            try:
                with sink:
                    writer = _Writer(sink, video, copied, color, size, options, matrix, src, dst)
                    tiles = tiler.tiles_per_frame(cc.height, cc.width)
                    outcome = _run(source, video, copied, writer, color, upscale, max(1, tiler.batch // tiles),
                                   bar, cut, counter)
            except (av.error.FFmpegError, ValueError) as exc:  # e.g. a codec the output container cannot hold
                raise I2NQError(f"cannot write video {dst}: {_reason(exc)}") from None
            if outcome.failure is not None:
                raise _failed_midway(outcome, tmp, dst)


def partial_path(dst: Path) -> Path:
    """Where the part of a video done before a failure is kept: `{stem}.partial{suffix}` beside the output."""
    return dst.with_name(f"{dst.stem}.partial{dst.suffix}")


def _failed_midway(outcome: _Outcome, tmp: Path, dst: Path) -> I2NQError:
    """The error for a run that failed midway, after keeping the finished part (if any) beside `dst`."""
    if not outcome.frames:
        return I2NQError(f"{outcome.failure}; no frame was finished, so nothing was kept")
    kept = keep_aside(tmp, partial_path(dst))
    return I2NQError(f"{outcome.failure}; the {outcome.frames} frame{'s' if outcome.frames != 1 else ''} done "
                     f"(0-{outcome.seconds:.2f} s) were kept in {kept}")


def _count_frames(src: Path, cut: _Cut | None, bar) -> threading.Thread:
    """A thread that counts the video's frames for the progress bar: its packets with data (inside the cut),
    read without decoding. Index entries without data (an AVI's repeated frames) are not frames."""

    def count() -> None:
        n = 0
        try:
            with av.open(str(src)) as probe:
                stream = probe.streams.video[0]
                for packet in probe.demux(stream):
                    ts = packet.pts if packet.pts is not None else packet.dts
                    if not packet.size:
                        continue
                    if cut is not None and ts is not None:
                        where = cut.position(ts, stream.time_base)
                        if where < 0:
                            continue
                        if where > 0:
                            break
                    n += 1
        except (av.error.FFmpegError, OSError):
            return  # the run itself reports what is wrong with the file
        bar.total = max(n, bar.n)
        bar.refresh()

    worker = threading.Thread(target=count, daemon=True)
    worker.start()
    return worker


def _trial(src: Path, dst: Path, options: VideoOptions, color: StreamColor, size: tuple[int, int],
           cut: _Cut | None) -> list[int] | None:
    """Write the first TRIAL_FRAMES frames (resized, not upscaled by the model) and the copied streams' packets
    among them into a scratch file beside `dst`, the way the run will: container, encoder, pixel format,
    timestamps and copied streams are all tried before the model runs. Returns the source's display matrix."""
    items: list[object] = []
    stats = _Packets()
    with av.open(str(src)) as probe:
        video = probe.streams.video[0]
        copied = [s for s in probe.streams if s.type in COPIED_STREAMS]
        if cut is not None and cut.start > cut.origin:
            probe.seek(cut.offset(video.time_base), stream=video, backward=True)
        frames = 0
        try:
            for item in _demux(probe, video, copied, color, cut, stats):
                items.append(item)
                frames += isinstance(item, _Frame)
                if frames == TRIAL_FRAMES:
                    break
        except av.error.FFmpegError:
            pass  # a broken source is the run's to report, with what it kept
        if not frames:
            return stats.display_matrix
        try:
            with scratch_file(dst) as path, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the run itself announces re-encoded streams
                with av.open(str(path), "w") as sink:
                    writer = _Writer(sink, video, copied, color, size, options, stats.display_matrix, src, dst)
                    for item in items:
                        if isinstance(item, _Frame):
                            item.image = cv2.resize(item.image, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
                            writer.frame(item)
                        else:
                            writer.packet(item)
                    writer.finish()
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise I2NQError(f"cannot write video {dst}: {_reason(exc)} (found before upscaling, by writing the "
                            "first frames)") from None
    return stats.display_matrix


class _Writer:
    """The output side of a run: the encoder and the carried streams of `sink`, frames and packets in."""

    def __init__(self, sink: av.container.OutputContainer, video: av.video.stream.VideoStream,
                 copied: list, color: StreamColor, size: tuple[int, int], options: VideoOptions,
                 display_matrix: list[int] | None, src: Path, dst: Path) -> None:
        self.sink, self.color = sink, color
        self.encoder = _add_encoder(sink, video, size, options, color, display_matrix)
        self.streams = {s.index: _carry(sink, s, src, dst) for s in copied}
        self.durations: dict[int, int] = {}  # pts -> duration of frames given to the encoder
        self.frames = 0
        self.last: int | None = None
        self.end: int | None = None  # where the last frame given ends (encoder time base units)
        self.seconds = 0.0  # and in seconds

    def frame(self, item: _Frame) -> None:
        frame = self.color.from_bgr(item.image, self.encoder.pix_fmt)
        pts, duration, tb = item.pts, item.duration, self.encoder.codec_context.time_base
        if tb != item.time_base:  # an encoder with a coarser time base: the nearest tick, still increasing
            pts = round(item.pts * item.time_base / tb)
            pts = pts if self.last is None else max(pts, self.last + 1)
            duration = max(1, round((item.pts + item.duration) * item.time_base / tb) - pts)
        frame.pts, frame.time_base = pts, tb
        if self.last is None and pts > 0 and self.sink.format.name == "avi":
            self._empty_entry(0)  # AVI stores no start time: an empty entry first makes the first frame start late
        self.durations[pts] = duration
        self._mux(self.encoder.encode(frame))
        self.frames += 1
        self.last, self.end = pts, pts + duration
        self.seconds = float((pts + duration) * tb)

    def packet(self, item: av.Packet) -> None:
        target = self.streams[item.stream.index]
        if isinstance(target, _Transcoder):
            self.sink.mux(list(target.encode(item)))
        else:
            item.stream = target
            self.sink.mux(item)

    def finish(self) -> None:
        """Flush the encoder and transcoders. AVI stores no durations: an empty index entry at the end makes the
        last frame last as long as in the source (as the AVI muxer fills gaps between frames)."""
        self._mux(self.encoder.encode(None))
        for target in self.streams.values():
            if isinstance(target, _Transcoder):
                self.sink.mux(list(target.encode(None)))
        if self.sink.format.name == "avi" and self.last is not None and self.end - 1 > self.last:
            self._empty_entry(self.end - 1)

    def _empty_entry(self, pts: int) -> None:
        """An AVI index entry without data at `pts`: the frame before it goes on being shown."""
        packet = av.Packet(b"")
        packet.pts = packet.dts = pts
        packet.time_base, packet.stream = self.encoder.codec_context.time_base, self.encoder
        self.sink.mux(packet)

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            duration = self.durations.pop(packet.pts, None)
            if duration:  # encoders drop frame durations; the muxer needs them (the last frame's above all)
                packet.duration = duration
            self.sink.mux(packet)


def _carry(sink: av.container.OutputContainer, stream: av.stream.Stream, src: Path, dst: Path):
    """The output stream that carries `stream`: a copy where the container can hold its codec, else a
    re-encoding to one it can hold (audio; text subtitles), announced with a warning, else an error."""
    try:
        return sink.add_stream_from_template(stream)
    except ValueError:
        pass
    name = stream.codec_context.name
    transcoder = _TRANSCODERS[stream.type].into(sink, stream) if stream.type in _TRANSCODERS else None
    if transcoder is None:
        raise I2NQError(f"{dst.suffix} files cannot hold the {name} {stream.type} stream {stream.index} of "
                        f"{src.name}; write {'.mkv' if dst.suffix.lower() != '.mkv' else '.mp4'} instead")
    warnings.warn(f"re-encoding {stream.type} stream {stream.index} ({name}) of {src.name} to "
                  f"{transcoder.out.codec_context.name}: {dst.suffix} files cannot hold {name}", stacklevel=2)
    return transcoder


class _Transcoder:
    """Decodes one copied stream and encodes it to the first of CODECS the output container holds."""

    CODECS: tuple[str, ...] = ()

    def __init__(self, source: av.stream.Stream, out: av.stream.Stream) -> None:
        self.source, self.out = source, out

    @classmethod
    def into(cls, sink: av.container.OutputContainer, source: av.stream.Stream) -> _Transcoder | None:
        if not cls.accepts(source):
            return None
        for name in cls.CODECS:
            try:
                out = cls._add(sink, name, source)
            except (ValueError, av.error.FFmpegError):  # not built in, or not for this container
                continue
            return cls(source, out)  # once the stream is added, a failure is an error, not a reason to add another
        return None

    @classmethod
    def accepts(cls, source: av.stream.Stream) -> bool:
        return True

    @staticmethod
    def _add(sink: av.container.OutputContainer, name: str, source: av.stream.Stream) -> av.stream.Stream:
        return sink.add_stream(name)

    def encode(self, packet: av.Packet | None) -> Iterator[av.Packet]:
        """Output packets for one source packet (None: flush everything)."""
        raise NotImplementedError


class _AudioTranscoder(_Transcoder):
    CODECS = ("aac", "libopus", "libmp3lame", "flac")
    BIT_RATE = 192_000  # per stereo pair, for the lossy codecs: transparent for AAC and Opus

    def __init__(self, source: av.audio.stream.AudioStream, out: av.audio.stream.AudioStream) -> None:
        super().__init__(source, out)
        codec = out.codec_context.codec
        layout = source.codec_context.layout
        out.layout = layout
        if codec.name != "flac":
            out.bit_rate = self.BIT_RATE * max(1, layout.nb_channels // 2)
        self.resampler = av.AudioResampler(format=codec.audio_formats[0].name, layout=layout, rate=out.rate)

    @staticmethod
    def _add(sink: av.container.OutputContainer, name: str, source: av.stream.Stream) -> av.stream.Stream:
        rates = av.codec.Codec(name, "w").audio_rates  # Opus: 48 kHz and a few lower rates only
        return sink.add_stream(name, rate=source.rate if not rates or source.rate in rates else max(rates))

    def encode(self, packet: av.Packet | None) -> Iterator[av.Packet]:
        for frame in self.source.codec_context.decode(packet):
            for chunk in self.resampler.resample(frame):
                yield from self.out.encode(chunk)
        if packet is None:
            for chunk in self.resampler.resample(None):
                yield from self.out.encode(chunk)
            yield from self.out.encode(None)


class _SubtitleTranscoder(_Transcoder):
    """Text subtitles (SubRip, ASS, mov_text, WebVTT) to the text format the container holds; cue times and
    styling carried through FFmpeg's ASS representation. Bitmap subtitles cannot be converted."""

    CODECS = ("mov_text", "subrip", "webvtt", "ass")
    TEXT = ("subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text")

    @classmethod
    def accepts(cls, source: av.stream.Stream) -> bool:
        return source.codec_context.name in cls.TEXT

    def __init__(self, source: av.subtitles.stream.SubtitleStream, out: av.subtitles.stream.SubtitleStream) -> None:
        super().__init__(source, out)
        source.codec_context.open(strict=False)  # its ASS header: the encoder needs it before the file starts
        out.codec_context.subtitle_header = source.codec_context.subtitle_header

    def encode(self, packet: av.Packet | None) -> Iterator[av.Packet]:
        cues = self.source.codec_context.decode2(packet) if packet is not None else None
        if cues is None:
            return
        out = self.out.codec_context.encode_subtitle(cues)
        out.pts = out.dts = packet.pts
        out.duration, out.time_base, out.stream = packet.duration, packet.time_base, self.out
        yield out


_TRANSCODERS = {"audio": _AudioTranscoder, "subtitle": _SubtitleTranscoder}


def open_sink(tmp: Path, dst: Path):
    """An output container at `tmp` (written for `dst`: errors name it); I2NQError when FFmpeg cannot open it."""
    try:
        return av.open(str(tmp), "w")
    except (av.error.FFmpegError, OSError) as exc:
        raise I2NQError(f"cannot write video {dst}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The first line of an FFmpeg error, without the file name PyAV appends."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


#: Encoders whose time base denominator has 16 bits: timestamps are converted to the nearest such time base.
_SHORT_TIME_BASE = ("mpeg4", "msmpeg4", "msmpeg4v2", "h263p", "mpeg1video", "mpeg2video")


def _add_encoder(sink: av.container.OutputContainer, video: av.video.stream.VideoStream, size: tuple[int, int],
                 options: VideoOptions, color: StreamColor, display_matrix: list[int] | None) -> av.video.stream.VideoStream:
    """A video stream of `size` (height, width) that keeps the input's time base (so pts carry over), tagged with
    the source's colours, pixel aspect ratio and display rotation."""
    name = options.encoder(sink.format.name)
    try:
        av.codec.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        raise I2NQError(f"unknown video encoder {name!r} (e.g. libx264, libx265, libvpx-vp9, mpeg4)") from None
    rate = video.average_rate or video.guessed_rate or Fraction(24)
    encoder = sink.add_stream(name, rate=rate, options=options.encoder_options(sink.format.name))
    height, width = size
    encoder.width, encoder.height = width, height
    if name in ("mpeg4", "msmpeg4", "msmpeg4v2", "mpeg2video", "mpeg1video", "h263p"):  # no crf: a bit rate
        encoder.codec_context.bit_rate = options.bit_rate(width, height, rate)
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    deep = pix_fmt + "10le"  # a deep source stays 10-bit where the encoder can (x264, x265, SVT-AV1)
    supported = {f.name for f in encoder.codec_context.codec.video_formats or ()}
    encoder.pix_fmt = deep if color.deep and deep in supported else pix_fmt
    time_base = video.time_base
    if name in _SHORT_TIME_BASE and time_base.denominator > 65535:  # MPEG-4 Part 2 and its kin: 16 bits
        time_base = time_base.limit_denominator(65535)
    encoder.time_base = time_base
    encoder.codec_context.time_base = time_base
    color.tag(encoder)
    if video.codec_context.sample_aspect_ratio:  # anamorphic video (e.g. DVD): the same pixel shape, scaled
        encoder.codec_context.sample_aspect_ratio = video.codec_context.sample_aspect_ratio
    if display_matrix is not None:  # e.g. a phone clip shot upright: frames stay as coded, shown rotated
        encoder.set_display_matrix(display_matrix)
    return encoder


def _run(source, video, copied, writer: _Writer, color: StreamColor, upscale, frames_per_call: int, bar, cut,
         counter: threading.Thread | None) -> _Outcome:
    """Decode (thread) -> upscale (this thread) -> encode and mux (thread)."""
    pipe = _Pipeline(depth=2 * frames_per_call + 8)
    stats = _Packets()
    name = Path(source.name).name

    def decode() -> None:
        count = 0
        try:
            for item in _demux(source, video, copied, color, cut, stats):
                if pipe.halt_decoding.is_set():
                    break
                count += isinstance(item, _Frame)
                pipe.put(pipe.decoded, item)
            else:
                if cut is None and stats.truncated(video):
                    end = float(stats.end * video.time_base) if stats.end is not None else 0.0
                    raise I2NQError(f"{name} is truncated or corrupt: its header promises {video.frames} frames "
                                    f"({float(video.duration * video.time_base):.2f} s), its data ends at {end:.2f} s")
        except av.error.FFmpegError as exc:
            failure = I2NQError(f"cannot decode {name} after {count} frames: {_reason(exc)}")
            failure.decode_reason = _reason(exc)  # for a segment of scale-out (i2nq.runtime.segments)
            if not count:
                raise failure from None
            pipe.soft = pipe.soft or failure
        except I2NQError as exc:
            pipe.soft = pipe.soft or exc
        if count == 0 and pipe.soft is None:
            raise I2NQError(f"no video frames to upscale in {name}"
                            + (f" from {cut.start - cut.origin:g} s" if cut is not None else ""))
        pipe.put(pipe.decoded, _END)

    def encode() -> None:
        while (item := pipe.get(pipe.upscaled)) is not _END:
            if isinstance(item, _Frame):
                writer.frame(item)
                bar.update(1)
            else:
                writer.packet(item)
        writer.finish()

    threads = [pipe.thread(decode), pipe.thread(encode)]
    try:
        with bar:
            _upscale_stage(pipe, upscale, frames_per_call)
            threads[1].join()
            if counter is not None:
                counter.join(timeout=10)
    except _Stopped:
        pass  # a worker failed: its error is raised below
    finally:
        pipe.stop.set()
        for worker in threads:
            worker.join()
    if pipe.error is not None:
        raise pipe.error
    return _Outcome(writer.frames, writer.seconds, pipe.soft)


def _model_failure(exc: Exception, frame: int) -> I2NQError:
    """A failure of the model (or its memory) midway, as a one-line error."""
    if isinstance(exc, I2NQError):
        return exc
    if isinstance(exc, MemoryError):
        return I2NQError(f"not enough memory to upscale frame {frame}; lower {option('--tile', 'tile=')} or "
                         f"{option('--batch', 'batch=')}")
    text = str(exc).strip().splitlines()
    return I2NQError(f"the model failed on frame {frame}: {text[0] if text else type(exc).__name__}")


def _upscale_stage(pipe: _Pipeline, upscale: Callable[[list[np.ndarray]], list[np.ndarray]], size: int) -> None:
    """Gather frames into calls of `size`; copied packets keep their place in the stream order. A model failure
    ends the run here: what was upscaled before it is still encoded."""
    pending: list = []
    frames: list[_Frame] = []
    done = 0
    while True:
        item = pipe.get(pipe.decoded)
        if item is not _END:
            pending.append(item)
            if isinstance(item, _Frame):
                frames.append(item)
        if item is _END or len(frames) == size:
            if frames:
                try:
                    images = upscale([f.image for f in frames])
                except Exception as exc:  # noqa: BLE001 - any model failure; interrupts are not Exceptions
                    pipe.soft = pipe.soft or _model_failure(exc, done)
                    pipe.halt_decoding.set()
                    pipe.put(pipe.upscaled, _END)
                    return
                for frame, image in zip(frames, images, strict=True):
                    frame.image = image
                done += len(frames)
            for p in pending:
                pipe.put(pipe.upscaled, p)
            pending, frames = [], []
        if item is _END:
            pipe.put(pipe.upscaled, _END)
            return


def _demux(source, video, copied, color: StreamColor, cut: _Cut | None, stats: _Packets) -> Iterator[object]:
    """Decoded video frames (BGR, with the timestamps and durations of _Timeline) and copied packets, in file
    order; with a cut, only those inside it (copied packets whole: those that start inside), rebased to start
    at 0. `stats` learns what the video packets were and the display matrix of the first frame."""
    tb = video.time_base
    timeline = _Timeline(tb, video.average_rate or video.guessed_rate)
    past = set()  # streams that reached the end of the cut
    end = None if cut is None or cut.end == float("inf") else round(Fraction(cut.end) / tb)
    first = True

    def frames(placed: Iterator[tuple[av.VideoFrame, int, int]]) -> Iterator[_Frame]:
        for frame, ts, duration in placed:
            if cut is not None:
                where = cut.position(ts, tb)
                if where > 0:
                    past.add(video.index)
                    return
                if where < 0:
                    continue
                if end is not None:
                    duration = max(1, min(duration, end - ts))
                ts -= cut.offset(tb)
            yield _Frame(color.to_bgr(frame), ts, tb, duration)

    for packet in source.demux(video, *copied):
        stream = packet.stream
        if stream.index != video.index:
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                continue
            if cut is not None:
                where = cut.position(ts, stream.time_base)
                if where > 0:
                    past.add(stream.index)
                if where:
                    continue
                off = cut.offset(stream.time_base)
                packet.pts = None if packet.pts is None else packet.pts - off
                packet.dts = None if packet.dts is None else packet.dts - off
            yield packet
        elif video.index not in past:
            stats.add(packet)
            for frame in packet.decode():
                if first:
                    first = False
                    side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
                    if side is not None:
                        stats.display_matrix = np.frombuffer(bytes(side), "<i4").tolist()
                if video.index in past:
                    break
                yield from frames(timeline.push(frame))
        if cut is not None and len(past) == 1 + len(copied):
            return
    if video.index not in past:
        yield from frames(timeline.finish(stats.end))
