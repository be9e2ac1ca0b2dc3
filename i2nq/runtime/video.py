"""Video: PyAV decode -> batched SR -> encode, with audio and subtitle packets copied untouched (re-encoded,
with a warning, only where the output container cannot hold their codec: AAC into WebM, SRT into MP4).

Decoding and encoding run in their own threads, joined to inference by bounded queues, so they overlap
with the model and memory stays bounded for any length. Every frame keeps its timestamp. Colours keep
their meaning: frames go to RGB and back with the source's matrix and range, and the output stream is
tagged with them (an untagged source gets what players assume for it, made explicit, since the upscaled
output would otherwise be shown as HD video with another matrix), and a 10-bit source stays 10-bit where
the encoder can. The output is written to a temp file and renamed only when complete; an error or Ctrl-C
leaves nothing behind.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from i2nq.errors import I2NQError
from i2nq.files import atomic_output
from i2nq.runtime.tiler import Tiler

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
COPIED_STREAMS = ("audio", "subtitle")
_END = object()


def is_video(path: Path) -> bool:
    """Whether the file name has a supported video suffix."""
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoOptions:
    """Encoder settings: an FFmpeg encoder name, constant-rate-factor quality and speed preset."""

    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"

    def encoder_options(self) -> dict[str, str]:
        """Options for the encoder (x264/x265/VP9/AV1 read crf and preset; others ignore them). x265 logs a
        page of settings per file unless told otherwise: only its errors get through the progress bar."""
        quiet = {"x265-params": "log-level=error"} if self.codec == "libx265" else {}
        return {"crf": str(self.crf), "preset": self.preset, **quiet}


@dataclass(frozen=True)
class Span:
    """A part of a video in seconds from its start: [start, start + duration); duration None: to the end."""

    start: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start < float("inf"):
            raise I2NQError(f"start must be a time >= 0, got {self.start}")
        if self.duration is not None and not 0 < self.duration < float("inf"):
            raise I2NQError(f"duration must be a time > 0, got {self.duration}")

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


class _Stopped(Exception):
    """Another stage failed or was interrupted."""


class _Pipeline:
    """The three stages and the queues between them; the first error stops them all."""

    def __init__(self, depth: int) -> None:
        self.decoded: queue.Queue = queue.Queue(depth)
        self.upscaled: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.error: BaseException | None = None

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


def upscale_video(src: Path, dst: Path, tiler: Tiler, options: VideoOptions = VideoOptions(),
                  progress: bool = True, span: Span = Span(), max_pixels: int | None = None) -> None:
    """Upscale every frame of `src` (or of its `span`, rebased to start at 0) into `dst`, as many frames per
    model call as fill the tiler's batch. max_pixels: the largest frame (width x height) accepted (None: any)."""
    try:
        source = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise I2NQError(f"cannot read video {src}: {_reason(exc)}") from None
    with source:
        if not source.streams.video:
            raise I2NQError(f"{src} has no video stream")
        video = source.streams.video[0]
        video.thread_type = "AUTO"
        if max_pixels and video.codec_context.width * video.codec_context.height > max_pixels:
            cc = video.codec_context
            raise I2NQError(f"{src} has {cc.width}x{cc.height} frames = {cc.width * cc.height / 1e6:.0f} megapixels, "
                            f"over the limit of {max_pixels / 1e6:g} megapixels; pass --max-pixels (max_pixels=) "
                            "to raise it")
        copied = [s for s in source.streams if s.type in COPIED_STREAMS]
        cut = None if span.whole else _Cut(span, source, src)
        if cut is not None and span.start > 0:  # to the keyframe before the start; frames before it are dropped
            source.seek(cut.offset(video.time_base), stream=video, backward=True)
        with atomic_output(dst) as tmp:
            try:
                sink = av.open(str(tmp), "w")
            except (av.error.FFmpegError, OSError) as exc:
                raise I2NQError(f"cannot write video {dst}: {_reason(exc)}") from None
            try:
                with sink:
                    color = StreamColor.of(video)
                    encoder = _add_encoder(sink, video, tiler.scale, options, color, _display_matrix(src))
                    streams = {s.index: _carry(sink, s, src, dst) for s in copied}
                    tiles = tiler.tiles_per_frame(video.codec_context.height, video.codec_context.width)
                    _run(source, video, copied, sink, encoder, streams, color, tiler.run, max(1, tiler.batch // tiles),
                         tqdm(total=_expected_frames(source, video, cut), unit="frame", desc=src.name,
                              disable=not progress, dynamic_ncols=True), cut)
            except (av.error.FFmpegError, ValueError) as exc:  # e.g. a codec the output container cannot hold
                raise I2NQError(f"cannot write video {dst}: {_reason(exc)}") from None


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


def _expected_frames(source: av.container.InputContainer, video: av.video.stream.VideoStream,
                     cut: _Cut | None = None) -> int | None:
    """Frame count for the progress bar's ETA: from the header, else estimated from duration and rate."""
    rate = video.average_rate or video.guessed_rate
    if cut is not None:
        return round(cut.seconds * rate) if rate and cut.seconds < float("inf") else None
    if video.frames:
        return video.frames
    if rate and video.duration:
        return round(video.duration * video.time_base * rate)
    if rate and source.duration:
        return round(source.duration / av.time_base * rate)
    return None


def _reason(exc: BaseException) -> str:
    """The first line of an FFmpeg error, without the file name PyAV appends."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _add_encoder(sink: av.container.OutputContainer, video: av.video.stream.VideoStream, scale: int,
                 options: VideoOptions, color: StreamColor, display_matrix: list[int] | None) -> av.video.stream.VideoStream:
    """A video stream at `scale` times the input size that keeps the input's time base (so pts carry over),
    tagged with the source's colours, pixel aspect ratio and display rotation."""
    try:
        av.codec.Codec(options.codec, "w")
    except (av.error.FFmpegError, ValueError):
        raise I2NQError(f"unknown video encoder {options.codec!r} (e.g. libx264, libx265, libvpx-vp9, mpeg4)") from None
    rate = video.average_rate or video.guessed_rate or Fraction(24)
    encoder = sink.add_stream(options.codec, rate=rate, options=options.encoder_options())
    width, height = video.codec_context.width * scale, video.codec_context.height * scale
    encoder.width, encoder.height = width, height
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    deep = pix_fmt + "10le"  # a deep source stays 10-bit where the encoder can (x264, x265, SVT-AV1)
    supported = {f.name for f in encoder.codec_context.codec.video_formats or ()}
    encoder.pix_fmt = deep if color.deep and deep in supported else pix_fmt
    encoder.time_base = video.time_base
    encoder.codec_context.time_base = video.time_base
    color.tag(encoder)
    if video.codec_context.sample_aspect_ratio:  # anamorphic video (e.g. DVD): the same pixel shape, scaled
        encoder.codec_context.sample_aspect_ratio = video.codec_context.sample_aspect_ratio
    if display_matrix is not None:  # e.g. a phone clip shot upright: frames stay as coded, shown rotated
        encoder.set_display_matrix(display_matrix)
    return encoder


def _display_matrix(src: Path) -> list[int] | None:
    """The source's display matrix (rotation/flip, 9 int32), which FFmpeg hands over on decoded frames."""
    with av.open(str(src)) as probe:
        frame = next(probe.decode(video=0), None)
    side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX) if frame is not None else None
    return np.frombuffer(bytes(side), "<i4").tolist() if side is not None else None


def _run(source, video, copied, sink, encoder, streams, color, upscale, frames_per_call, bar, cut) -> None:
    """Decode (thread) -> upscale (this thread) -> encode and mux (thread)."""
    pipe = _Pipeline(depth=2 * frames_per_call + 8)

    def decode() -> None:
        count = 0
        try:
            for item in _demux(source, video, copied, color, cut):
                count += isinstance(item, _Frame)
                pipe.put(pipe.decoded, item)
        except av.error.FFmpegError as exc:
            raise I2NQError(f"cannot decode {source.name}: {_reason(exc)}") from None
        if cut is None and video.frames and count < video.frames:
            raise I2NQError(f"{source.name} is truncated or corrupt: decoded {count} of {video.frames} frames")
        if count == 0:
            raise I2NQError(f"no video frames to upscale in {source.name}"
                            + (f" from {cut.start - cut.origin:g} s" if cut is not None else ""))
        pipe.put(pipe.decoded, _END)

    def encode() -> None:
        while (item := pipe.get(pipe.upscaled)) is not _END:
            if isinstance(item, _Frame):
                frame = color.from_bgr(item.image, encoder.pix_fmt)
                frame.pts, frame.time_base = item.pts, item.time_base
                sink.mux(encoder.encode(frame))
                bar.update(1)
            elif isinstance(target := streams[item.stream.index], _Transcoder):
                sink.mux(list(target.encode(item)))
            else:
                item.stream = target
                sink.mux(item)
        sink.mux(encoder.encode(None))
        for target in streams.values():
            if isinstance(target, _Transcoder):
                sink.mux(list(target.encode(None)))

    threads = [pipe.thread(decode), pipe.thread(encode)]
    try:
        with bar:
            _upscale_stage(pipe, upscale, frames_per_call)
            threads[1].join()
    except _Stopped:
        pass  # a worker failed: its error is raised below
    finally:
        pipe.stop.set()
        for worker in threads:
            worker.join()
    if pipe.error is not None:
        raise pipe.error


def _upscale_stage(pipe: _Pipeline, upscale: Callable[[list[np.ndarray]], list[np.ndarray]], size: int) -> None:
    """Gather frames into calls of `size`; copied packets keep their place in the stream order."""
    pending: list = []
    frames: list[_Frame] = []
    while True:
        item = pipe.get(pipe.decoded)
        if item is not _END:
            pending.append(item)
            if isinstance(item, _Frame):
                frames.append(item)
        if item is _END or len(frames) == size:
            for frame, image in zip(frames, upscale([f.image for f in frames]) if frames else [], strict=True):
                frame.image = image
            for p in pending:
                pipe.put(pipe.upscaled, p)
            pending, frames = [], []
        if item is _END:
            pipe.put(pipe.upscaled, _END)
            return


def _demux(source, video, copied, color: StreamColor, cut: _Cut | None = None) -> Iterator[object]:
    """Decoded video frames (BGR, with pts) and copied packets, in file order; with a cut, only those inside
    it (copied packets whole: those that start inside), rebased to start at 0."""
    step = 1 / ((video.average_rate or Fraction(24)) * video.time_base)
    index = 0
    past = set()  # streams that reached the end of the cut
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
            for frame in packet.decode():
                pts = frame.pts if frame.pts is not None else round(index * step)
                index += 1
                if cut is not None:
                    where = cut.position(pts, video.time_base)
                    if where > 0:
                        past.add(video.index)
                        break
                    if where < 0:
                        continue
                    pts -= cut.offset(video.time_base)
                yield _Frame(color.to_bgr(frame), pts, video.time_base)
        if cut is not None and len(past) == 1 + len(copied):
            return
