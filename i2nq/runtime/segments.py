"""Video cut into segments at keyframes, each upscaled and encoded on its own, joined by remuxing (no re-encoding).

This is the part of scale-out (i2nq.runtime.distributed) that needs no Ray: planning, the work of one segment,
the segment files of a resumable job, and the join. It reuses the single-process video pipeline
(i2nq.runtime.video) for everything a frame goes through, so a segment's frames are the single-process frames:

- plan: the video stream's packets are scanned (demuxed, not decoded) for keyframes; segments start at keyframes,
  a few seconds apart, at least one per worker. A segment is a range of presentation timestamps [first, end) of
  the source's video stream; within a part (start/duration) it is also cut to the part, as the single-process path
  cuts it;
- one segment: decoded from the keyframe at its start (continuing past its end until the decoder hands out a frame
  at or after the end: B-frames and open GOPs), upscaled by the tiler, converted to YUV and encoded by the same
  functions as in the single-process path, into an encoder opened for the same container format with the same
  settings. The encoder starts fresh, so every segment starts with a keyframe. Its packets are kept as they come
  out of the encoder (data, pts, dts, flags) in a segment file, with the encoder's stream header (extradata);
- join: the output is set up exactly as the single-process path sets it up (the same encoder stream, colour tags,
  rotation, the same audio/subtitle streams), then the segments' packets are muxed in order, and the audio and
  subtitle packets are copied once from the source (or re-encoded where the container needs it, as there). The
  stream header must be the same in every segment and in the output's own (unused) encoder, which is checked.

Timestamps stay the source's (or rebased as a part is), so they are continuous across segments; decoding
timestamps (dts) are kept too, and only raised where a segment's first ones would not follow the previous
segment's last (variable frame rate), which changes no frame and no presentation time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from i2nq.errors import I2NQError
from i2nq.files import atomic_output
from i2nq.runtime.rescale import output_size, resize
from i2nq.runtime.video import (COPIED_STREAMS, Span, StreamColor, VideoOptions, _Cut, _reason, _run, _Writer,
                                open_sink)
from i2nq.runtime.video import _Packets as _VideoPackets

#: Seconds of video per segment by default (segments start at keyframes, so they are at least a GOP long).
SEGMENT_SECONDS = 6.0
SEGMENT_MAGIC = b"I2NQSEG1"
JOB_FORMAT = 1


def clock(seconds: float) -> str:
    """HH:MM:SS.mmm"""
    ms = max(0, round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


@dataclass(frozen=True)
class Segment:
    """Frames of the video stream whose pts is in [first, end) (stream time base; None: unbounded), decoded from
    the keyframe at `seek` (None: from where a part starts, or the file's start). `frames`: how many the scan saw;
    begin/finish: where it is in seconds from the start of the output, to name it."""

    index: int
    first: int | None
    end: int | None
    seek: int | None
    frames: int
    begin: float
    finish: float

    @property
    def span(self) -> str:
        return f"{clock(self.begin)}-{clock(self.finish)}"


@dataclass(frozen=True)
class VideoPlan:
    """The segments of one video and what its frames are: size, count."""

    width: int
    height: int
    frames: int
    segments: tuple[Segment, ...]

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height, "frames": self.frames,
                "segments": [asdict(s) for s in self.segments]}

    @classmethod
    def from_json(cls, data: dict) -> VideoPlan:
        return cls(data["width"], data["height"], data["frames"], tuple(Segment(**s) for s in data["segments"]))


def open_video(src: Path) -> av.container.InputContainer:
    try:
        return av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise I2NQError(f"cannot read video {src}: {_reason(exc)}") from None


def _video_stream(source: av.container.InputContainer, src: Path, max_pixels: int | None) -> av.video.stream.VideoStream:
    """The video stream, with the single-process path's checks."""
    if not source.streams.video:
        raise I2NQError(f"{src} has no video stream")
    video = source.streams.video[0]
    cc = video.codec_context
    if max_pixels and cc.width * cc.height > max_pixels:
        raise I2NQError(f"{src} has {cc.width}x{cc.height} frames = {cc.width * cc.height / 1e6:.0f} megapixels, "
                        f"over the limit of {max_pixels / 1e6:g} megapixels; pass --max-pixels (max_pixels=) to raise it")
    return video


def plan_video(src: Path, parts: int, seconds: float = SEGMENT_SECONDS, span: Span = Span(),
               max_pixels: int | None = None) -> VideoPlan:
    """Segments of `src` (of its `span`): cut at keyframes about `seconds` apart, and into at least `parts` segments
    where the keyframes allow it. Reads the video packets' timestamps once; decodes nothing. A video whose packets
    carry no timestamps is one segment."""
    if not seconds > 0:
        raise I2NQError(f"segment length must be > 0 seconds, not {seconds}")
    with open_video(src) as source:
        video = _video_stream(source, src, max_pixels)
        cut = None if span.whole else _Cut(span, source, src)
        tb = video.time_base
        rate = video.average_rate or video.guessed_rate
        times, keys, timeless = [], set(), False
        stats = _VideoPackets()
        try:
            for packet in source.demux(video):
                stats.add(packet)
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    timeless = True
                    continue
                if cut is None or cut.position(packet.pts, tb) == 0:
                    times.append(packet.pts)
                if packet.is_keyframe:
                    keys.add(packet.pts)
        except av.error.FFmpegError as exc:
            raise I2NQError(f"cannot read video {src}: {_reason(exc)}") from None
        if cut is None and stats.truncated(video):  # as the single-process path finds at its end
            end = float(stats.end * video.time_base) if stats.end is not None else 0.0
            raise I2NQError(f"{src.name} is truncated or corrupt: its header promises {video.frames} frames "
                            f"({float(video.duration * video.time_base):.2f} s), its data ends at {end:.2f} s")
        width, height = video.codec_context.width, video.codec_context.height
        origin = cut.start if cut is not None else (source.start_time or 0) / av.time_base
    if not times:
        if timeless:
            return VideoPlan(width, height, 0, (Segment(0, None, None, None, 0, 0.0, 0.0),))
        raise I2NQError(f"no video frames to upscale in {src.name}" + (f" from {span.start:g} s" if cut else ""))
    times.sort()
    first, last = times[0], times[-1]
    length = float((last - first) * tb)
    count = max(parts, math.ceil(length / seconds - 1e-9), 1)
    inner = sorted(k for k in keys if first < k <= last) if not timeless else []
    cuts: list[int] = []  # the keyframe nearest each of count - 1 evenly spaced times, each after the one before
    for j in range(1, count):
        target = first + Fraction(j, count) * (last - first + (1 / (rate * tb) if rate else 0))
        later = [k for k in inner if not cuts or k > cuts[-1]]
        if later:
            best = min(later, key=lambda k: abs(k - target))
            if best not in cuts:
                cuts.append(best)
    end = float(last * tb) - origin + (float(1 / rate) if rate else 0.0)
    if cut is not None and cut.seconds < math.inf:
        end = min(end, cut.seconds)
    seek_first = cut.offset(tb) if cut is not None and span.start > 0 else None  # as the single-process path seeks
    bounds = [None, *cuts, None]
    segments = []
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        count = sum(1 for t in times if (lo is None or t >= lo) and (hi is None or t < hi))
        begin = max(0.0, float(lo * tb) - origin) if lo is not None else 0.0
        finish = float(hi * tb) - origin if hi is not None else end
        segments.append(Segment(i, lo, hi, seek_first if lo is None else lo, count, begin, finish))
    return VideoPlan(width, height, len(times), tuple(segments))


class _SegmentCut:
    """What _demux needs of a cut (video.py's _Cut): frames inside one segment [first, end), exact in the stream's
    time base, and inside the job's part (a _Cut, or None for the whole video), rebased as the part rebases them."""

    def __init__(self, part: _Cut | None, segment: Segment) -> None:
        self.part, self.segment = part, segment
        self.origin = part.origin if part is not None else 0.0
        self.start = self.origin + segment.begin  # named in the error for a segment without frames
        self.end = part.end if part is not None else math.inf  # the part's end clips the last frame's duration

    def position(self, ts: int, time_base: Fraction) -> int:
        seg = self.segment
        if seg.first is not None and ts < seg.first:
            return -1
        if seg.end is not None and ts >= seg.end:
            return 1
        return self.part.position(ts, time_base) if self.part is not None else 0

    def offset(self, time_base: Fraction) -> int:
        return self.part.offset(time_base) if self.part is not None else 0


class _Packets:
    """The sink of a segment's _Writer: an output container that is never started (it gives the encoder the
    output's container format and flags), whose mux keeps the encoder's packets instead of writing them. AVI's
    empty index entries (no data) are left to the join, which knows where the whole output starts and ends."""

    def __init__(self, shell: av.container.OutputContainer) -> None:
        self.shell = shell
        self.rows: list[list] = []
        self.data: list[bytes] = []

    def __getattr__(self, name: str):
        return getattr(self.shell, name)

    def mux(self, packets: av.Packet | Iterable[av.Packet]) -> None:
        for p in [packets] if isinstance(packets, av.Packet) else packets:
            if p.size == 0:
                continue
            self.rows.append([p.pts, p.dts, p.duration, int(p.is_keyframe) | int(p.is_disposable) << 1, p.size])
            self.data.append(bytes(p))


class _Lookahead:
    """The source as _run reads it for one segment: past the segment's end, packets are only decoded to place its
    last frames (the timeline's window, B-frames); one that fails to decode there ends the reading (a damaged
    packet belongs to the next segment, which reports it), the frames read so far are finished as at the end."""

    def __init__(self, source: av.container.InputContainer, end: int | None) -> None:
        self.source, self.end, self.over = source, end, False

    def __getattr__(self, name: str):
        return getattr(self.source, name)

    def demux(self, *streams) -> Iterator:
        for packet in self.source.demux(*streams):
            if self.over:
                return
            ts = packet.pts if packet.pts is not None else packet.dts
            past = self.end is not None and packet.stream.type == "video" and ts is not None and ts >= self.end
            yield _PastPacket(packet, self) if past else packet


class _PastPacket:
    def __init__(self, packet: av.Packet, reader: _Lookahead) -> None:
        self.packet, self.reader = packet, reader

    def __getattr__(self, name: str):
        return getattr(self.packet, name)

    def decode(self) -> list:
        try:
            return self.packet.decode()
        except av.error.FFmpegError:
            self.reader.over = True
            return []


class _SegmentWriter(_Writer):
    """_Writer that also notes the first frame's timestamp (encoder time base)."""

    first: int | None = None

    def frame(self, item) -> None:
        super().frame(item)
        if self.first is None:
            self.first = self.last


def frame_size(height: int, width: int, scale: int, outscale: float | None = None) -> tuple[int, int]:
    """(height, width) of the output frames, as the single-process path sizes them."""
    return output_size(height, width, outscale) if outscale is not None else (height * scale, width * scale)


def encode_segment(src: Path, segment: Segment, tiler, options: VideoOptions, suffix: str, span: Span = Span(),
                   threads: int | None = None, bar=None, outscale: float | None = None) -> bytes:
    """Decode, upscale and encode one segment of `src` with the single-process path's functions; returns its
    segment file (see pack_segment). `suffix`: the output's, whose container format decides the encoder's flags
    (global headers). threads: codec threads (None: FFmpeg's default). bar: gets update(1) per frame encoded.
    outscale: the output's size over the input's (None: the model's scale), as Upscaler's."""
    with open_video(src) as source:
        video = _video_stream(source, src, None)
        video.thread_type = "AUTO"
        if threads:
            video.codec_context.thread_count = threads
        cc = video.codec_context
        size = frame_size(cc.height, cc.width, tiler.scale, outscale)
        if hasattr(tiler, "check_frame") and tiler.tile is None:  # memory for whole frames, as in one process
            tiler.check_frame(cc.height, cc.width)
        part = None if span.whole else _Cut(span, source, src)
        if segment.seek is not None:
            source.seek(segment.seek, stream=video, backward=True)
        with tempfile.TemporaryDirectory(prefix="i2nq-segment-") as folder:
            try:
                # never started, so never written: it only gives the encoder the output's container flags
                shell = av.open(os.path.join(folder, f"segment{suffix}"), "w")
            except (av.error.FFmpegError, ValueError) as exc:
                raise I2NQError(f"cannot write video {suffix}: {_reason(exc)}") from None
            with shell:
                color = StreamColor.of(video)
                packets = _Packets(shell)
                # no display matrix: it is the output container's (the join's), not the encoder's
                writer = _SegmentWriter(packets, video, [], color, size, options, None, src, Path(f"segment{suffix}"))
                encoder = writer.encoder
                if threads:
                    encoder.codec_context.thread_count = threads
                frames_per_call = max(1, tiler.batch // tiler.tiles_per_frame(cc.height, cc.width))

                def upscale(frames: list) -> list:
                    out = tiler.run(frames)
                    return out if outscale is None else [resize(f, size, tiler.scale, outscale) for f in out]

                counter = _Counter(bar)
                try:
                    outcome = _run(_Lookahead(source, segment.end), video, [], writer, color, upscale,
                                   frames_per_call, counter, _SegmentCut(part, segment), None)
                except (av.error.FFmpegError, ValueError) as exc:
                    raise I2NQError(f"cannot encode video: {_reason(exc)}") from None
                except I2NQError as exc:
                    raise _segment_error(exc, src) from None
                if outcome.failure is not None:  # the part done is of no use: the segment is redone or fails
                    raise _segment_error(outcome.failure, src)
                tb = encoder.codec_context.time_base
                header = {"index": segment.index, "codec": encoder.codec_context.name,
                          "time_base": [tb.numerator, tb.denominator],
                          "extradata": base64.b64encode(encoder.codec_context.extradata or b"").decode(),
                          "frames": writer.frames, "first": writer.first, "last": writer.last, "end": writer.end,
                          "packets": packets.rows}
    return pack_segment(header, packets.data)


def _segment_error(exc: I2NQError, src: Path) -> I2NQError:
    """A segment's failure in one line; a decoding failure names the source (its frame count would be the
    segment's, not the video's)."""
    reason = getattr(exc, "decode_reason", None)
    return I2NQError(f"cannot decode {src}: {reason}") if reason is not None else I2NQError(str(exc))


class _Counter:
    """The progress bar _run drives: counts frames, passes them on."""

    def __init__(self, bar) -> None:
        self.bar, self.n = bar, 0

    def __enter__(self) -> _Counter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None and hasattr(self.bar, "close"):
            self.bar.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)


def pack_segment(header: dict, data: list[bytes]) -> bytes:
    """A segment file: magic, header length (8 bytes, little-endian), JSON header, then the packets' data."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([SEGMENT_MAGIC, struct.pack("<Q", len(head)), head, *data])


@dataclass
class SegmentFile:
    header: dict
    payload: memoryview

    @property
    def time_base(self) -> Fraction:
        return Fraction(*self.header["time_base"])

    @property
    def extradata(self) -> bytes:
        return base64.b64decode(self.header["extradata"])

    def packets(self) -> Iterator[tuple[int | None, int | None, int | None, int, memoryview]]:
        offset = 0
        for pts, dts, duration, flags, size in self.header["packets"]:
            yield pts, dts, duration, flags, self.payload[offset:offset + size]
            offset += size


def unpack_segment(data: bytes, name: str = "segment") -> SegmentFile:
    view = memoryview(data)
    try:
        if bytes(view[:8]) != SEGMENT_MAGIC:
            raise ValueError("not a segment file")
        (size,) = struct.unpack("<Q", view[8:16])
        header = json.loads(bytes(view[16:16 + size]))
        payload = view[16 + size:]
        if sum(p[4] for p in header["packets"]) != len(payload):
            raise ValueError("its packets do not add up")
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        raise I2NQError(f"{name} is damaged ({exc}); delete it and rerun") from None
    return SegmentFile(header, payload)


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the job folder: finished segments with checksums, for a rerun to resume ---------------------------------------


def file_digest(path: Path, whole: bool = True) -> str:
    """sha256 of a file; whole=False: of its size, its first and its last MiB (for large sources)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if whole:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            size = os.fstat(f.fileno()).st_size
            h.update(str(size).encode())
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
    return h.hexdigest()


def job_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class VideoJob:
    """The job folder of one video output: `{output name}.i2nq-job-{key}` beside it. `job.json` holds the plan;
    each finished segment is `NNNNNN.seg` with `NNNNNN.json` (its sha256, frames), both written atomically, the
    record after the data. A rerun with the same key (same source, model and options) finds the folder and keeps
    every segment whose file matches its record; another key is another folder, so jobs never mix."""

    def __init__(self, dst: Path, key: str) -> None:
        self.dst, self.key = dst, key
        self.folder = dst.with_name(f"{dst.name}.i2nq-job-{key[:16]}")

    def others(self) -> list[Path]:
        """Job folders of the same output for another source, model or options."""
        prefix = f"{self.dst.name}.i2nq-job-"
        try:
            return sorted(p for p in self.dst.parent.iterdir()
                          if p.name.startswith(prefix) and p != self.folder and p.is_dir())
        except OSError:
            return []

    def load_plan(self) -> VideoPlan | None:
        try:
            data = json.loads((self.folder / "job.json").read_text())
        except (OSError, ValueError):
            return None
        if data.get("key") != self.key or data.get("format") != JOB_FORMAT:
            return None
        try:
            return VideoPlan.from_json(data["plan"])
        except (KeyError, TypeError):
            return None

    def start(self, plan: VideoPlan, identity: dict) -> None:
        try:
            self.folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise I2NQError(f"cannot create the job folder {self.folder}: {exc.strerror or exc}") from None
        _write_atomic(self.folder / "job.json", json.dumps(
            {"format": JOB_FORMAT, "key": self.key, "identity": identity, "plan": plan.to_json()}, indent=1).encode())

    def _paths(self, index: int) -> tuple[Path, Path]:
        return self.folder / f"{index:06d}.seg", self.folder / f"{index:06d}.json"

    def finished(self, plan: VideoPlan) -> dict[int, dict]:
        """Records of the segments whose files are complete and match their checksum."""
        done = {}
        for seg in plan.segments:
            data_path, record_path = self._paths(seg.index)
            try:
                record = json.loads(record_path.read_text())
                if record.get("sha256") == file_digest(data_path):
                    done[seg.index] = record
            except (OSError, ValueError):
                continue
        return done

    def save(self, index: int, data: bytes, digest: str) -> dict:
        """Store a finished segment; its record last, so a record always has its complete file."""
        if sha256(data) != digest:
            raise I2NQError(f"segment {index} of {self.dst.name} was damaged on its way from the worker")
        header = unpack_segment(data).header
        record = {"index": index, "sha256": digest, "bytes": len(data), "frames": header["frames"]}
        data_path, record_path = self._paths(index)
        _write_atomic(data_path, data)
        _write_atomic(record_path, json.dumps(record).encode())
        return record

    def read(self, index: int, record: dict) -> SegmentFile:
        data_path, _ = self._paths(index)
        try:
            data = data_path.read_bytes()
        except OSError as exc:
            raise I2NQError(f"cannot read {data_path}: {exc.strerror or exc}") from None
        if sha256(data) != record["sha256"]:
            raise I2NQError(f"{data_path} does not match its checksum (changed after it was written); delete it "
                            "and rerun to redo that segment")
        return unpack_segment(data, str(data_path))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_bytes(data)


# --- join -----------------------------------------------------------------------------------------------------------


def join_segments(src: Path, dst: Path, segments: Callable[[], Iterator[SegmentFile]], scale: int | float,
                  options: VideoOptions, span: Span = Span(), expected: int | None = None) -> int:
    """Write `dst` from the segments (in order) and the source's audio and subtitles; returns the frame count.
    scale: the output's size over the input's: the model's scale (an int), or an outscale (a float).

    The output is set up by the single-process path's _Writer; its encoder is opened (that is how the container
    gets the stream header) but given no frame."""
    with open_video(src) as source:
        video = _video_stream(source, src, None)
        copied = [s for s in source.streams if s.type in COPIED_STREAMS]
        cut = None if span.whole else _Cut(span, source, src)
        cc = video.codec_context
        size = frame_size(cc.height, cc.width, scale) if isinstance(scale, int) else \
            output_size(cc.height, cc.width, scale)
        matrix = _display_matrix(src, cut)
        if cut is not None and span.start > 0:  # copied packets are read from where the single-process path reads
            source.seek(cut.offset(video.time_base), stream=video, backward=True)
        with atomic_output(dst) as tmp:
            sink = open_sink(tmp, dst)
            try:
                with sink:
                    writer = _Writer(sink, video, copied, StreamColor.of(video), size, options, matrix, src, dst)
                    writer.encoder.codec_context.thread_count = 1  # it encodes nothing
                    sink.start_encoding()
                    header = writer.encoder.codec_context.extradata or b""
                    frames = _mux_all(writer, header, segments(), _copied(source, copied, cut), dst)
                    writer.finish()  # transcoders flushed; AVI: the last frame's duration, as in one process
            except (av.error.FFmpegError, ValueError) as exc:
                raise I2NQError(f"cannot write video {dst}: {_reason(exc)}") from None
            if expected is not None and frames < expected:
                raise I2NQError(f"{src.name} is truncated or corrupt: decoded {frames} of {expected} frames")
    return frames


def _display_matrix(src: Path, cut: _Cut | None) -> list[int] | None:
    """The display matrix (rotation/flip) of the first frame the single-process path decodes, which it gives the
    output stream."""
    with open_video(src) as probe:
        video = probe.streams.video[0]
        if cut is not None and cut.start > cut.origin:
            probe.seek(cut.offset(video.time_base), stream=video, backward=True)
        try:
            frame = next(probe.decode(video), None)
        except av.error.FFmpegError:
            return None
    side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX) if frame is not None else None
    return np.frombuffer(bytes(side), "<i4").tolist() if side is not None else None


def _copied(source, copied, cut: _Cut | None) -> Iterator[av.Packet]:
    """The audio and subtitle packets the single-process path copies (_demux): all of them, or with a part those
    that start inside it, rebased to it."""
    if not copied:
        return
    past = set()
    for packet in source.demux(*copied):
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None:
            continue
        stream = packet.stream
        if cut is not None:
            where = cut.position(ts, stream.time_base)
            if where > 0:
                past.add(stream.index)
                if len(past) == len(copied):
                    return
            if where:
                continue
            off = cut.offset(stream.time_base)
            packet.pts = None if packet.pts is None else packet.pts - off
            packet.dts = None if packet.dts is None else packet.dts - off
        yield packet


def _mux_all(writer: _Writer, header: bytes, segments: Iterator[SegmentFile], copied: Iterator[av.Packet],
             dst: Path) -> int:
    """Mux the segments' packets and the copied ones in time order; returns the video frames. The writer learns
    where the last frame ends (for AVI's closing index entry)."""
    sink, encoder = writer.sink, writer.encoder
    avi = sink.format.name == "avi"
    frames, last_dts, last_pts = 0, None, None
    pending = next(copied, None)

    def mux_copied_until(seconds: float | None) -> None:
        nonlocal pending
        while pending is not None:
            ts = pending.dts if pending.dts is not None else pending.pts
            if seconds is not None and ts * pending.time_base > seconds:
                return
            writer.packet(pending)
            pending = next(copied, None)

    for segment in segments:
        if segment.extradata != header:
            raise I2NQError(f"cannot join the segments of {dst.name} without re-encoding: the "
                            f"{segment.header['codec']} encoder wrote another stream header for segment "
                            f"{segment.header['index']}; run without workers")
        tb = segment.time_base
        if avi and writer.last is None and (segment.header.get("first") or 0) > 0:
            writer._empty_entry(0)  # AVI stores no start time (as _Writer.frame)
        first = True
        for pts, dts, duration, flags, data in segment.packets():
            if first and last_pts is not None and pts is not None and pts <= last_pts and flags & 1:
                raise I2NQError(f"segment {segment.header['index']} of {dst.name} overlaps the one before it")
            first = False
            if dts is not None and last_dts is not None and dts <= last_dts:
                dts = last_dts + 1  # a segment's first dts after a variable-rate stretch (see the module's notes)
            packet = av.Packet(bytes(data))
            packet.pts, packet.dts, packet.time_base = pts, dts, tb
            if duration:
                packet.duration = duration
            packet.is_keyframe = bool(flags & 1)
            packet.stream = encoder
            if dts is not None:
                mux_copied_until(float(dts * tb))
                last_dts = dts
            if pts is not None:
                last_pts = pts if last_pts is None else max(last_pts, pts)
            sink.mux(packet)
        frames += segment.header["frames"]
        if segment.header.get("last") is not None:
            writer.last, writer.end = segment.header["last"], segment.header["end"]
    writer.frames = frames
    mux_copied_until(None)
    return frames
