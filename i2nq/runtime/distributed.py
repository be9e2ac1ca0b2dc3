"""Scale-out on Ray: long videos and large folders across workers and machines, resumable and fault-tolerant.

`DistributedUpscaler` (CLI: `i2nq upscale ... --workers N` or `--ray ADDRESS`) starts a local Ray cluster for the
job or joins a running one, and starts one worker actor per CPU share or per GPU; each loads the model once and
keeps it for every task it is given. A video is cut at keyframes into segments (i2nq.runtime.segments), a folder
into its images and videos' segments; tasks go to idle workers largest first (by pixels), and the driver (this
process) writes each finished segment into a job folder beside the output, then joins them by remuxing.

Faults: a worker process that dies (SIGKILL, out of memory, a lost node) is restarted by Ray, which runs its task
again (max_restarts / max_task_retries). A task that fails for a reason in its data (a corrupt packet) is tried
once more, on any worker; a second failure ends the job with one line that names the time range, after the other
tasks are done, and every finished segment stays in the job folder for a rerun, which redoes only what is missing.

Ray is imported only here, and only when a DistributedUpscaler is made: `pip install 'i2nq[ray]'`.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from i2nq.errors import I2NQError
from i2nq.files import atomic_output, check_destination, check_source
from i2nq.runtime.backends.tensorrt import TensorRTOptions
from i2nq.runtime import progress as progress_bars
from i2nq.runtime.image_io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, image_size, is_image
from i2nq.runtime.outputs import folder_output, single_output
from i2nq.runtime.rescale import check_outscale
from i2nq.runtime.segments import (SEGMENT_SECONDS, Segment, VideoJob, VideoPlan, encode_segment, file_digest, job_key,
                                   plan_video, sha256)
from i2nq.runtime.video import VIDEO_SUFFIXES, Span, VideoOptions, is_video

RAY_MISSING = "--workers and --ray need Ray, which is not installed: pip install 'i2nq[ray]'"
RESTARTS = 3  # times Ray restarts a worker process that died, running its task again
DATA_TRIES = 2  # times a task is run before an error in its data ends it


def import_ray():
    """The ray module, or I2NQError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise I2NQError(RAY_MISSING) from None
    return ray


# --- what runs on a worker -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker opens its model: the Upscaler arguments, codec threads, and optionally a factory that returns
    a Backend instead (a stand-in model for tests and benchmarks; pickled by Ray)."""

    model: str
    backend: str = "auto"
    device: str | int | None = None
    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    tensorrt: TensorRTOptions | None = None
    threads: int | None = None
    backend_factory: Callable[[], object] | None = None
    outscale: float | None = None
    max_memory: int | str | None = "auto"
    fp16: bool = False


@dataclass(frozen=True)
class VideoTask:
    key: str
    src: str
    segment: Segment
    options: VideoOptions
    suffix: str
    span: Span
    weight: int  # pixels

    @property
    def frames(self) -> int:
        return self.segment.frames


@dataclass(frozen=True)
class ImageTask:
    key: str
    src: str
    name: str
    weight: int
    frames: int = 1
    quality: int | None = None


class _Reporter:
    """The bar a segment's frames go to: passes the count to the progress actor every quarter second."""

    def __init__(self, progress, key: str) -> None:
        self.progress, self.key, self.n, self.sent = progress, key, 0, 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.progress is not None and now - self.sent >= 0.25:
            self.sent = now
            self.progress.report.remote(self.key, self.n)


class Worker:
    """A Ray actor: one model loaded once, then any number of tasks. Errors in the data come back as values
    ("error", one line); the model's own failure to load is reported by ready()."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec, self.error, self.upscaler = spec, None, None
        if spec.threads:
            os.environ["OMP_NUM_THREADS"] = str(spec.threads)  # ONNX Runtime's threads (backends.onnxruntime)
            import cv2

            cv2.setNumThreads(spec.threads)
        try:
            self.upscaler = _open_upscaler(spec)
        except I2NQError as exc:
            self.error = str(exc)

    def ready(self) -> dict:
        up = self.upscaler
        return {"error": self.error, "pid": os.getpid(), "scale": up.scale if up else None,
                "backend": up.backend.name if up else None}

    def run(self, task, progress=None) -> tuple[str, object]:
        try:
            if isinstance(task, VideoTask):
                data = encode_segment(Path(task.src), task.segment, self.upscaler.tiler, task.options, task.suffix,
                                      task.span, self.spec.threads, _Reporter(progress, task.key),
                                      outscale=self.upscaler.outscale)
                return "ok", (data, sha256(data))
            return "ok", self._image(task)
        except I2NQError as exc:
            return "error", str(exc)
        except MemoryError:
            return "error", "not enough memory; lower --tile or --batch"

    def _image(self, task: ImageTask) -> bytes:
        with tempfile.TemporaryDirectory(prefix="i2nq-image-") as folder:
            out = Path(folder) / task.name
            try:
                self.upscaler.upscale_file(Path(task.src), out, overwrite=True, quality=task.quality, progress=False)
            except I2NQError as exc:
                raise I2NQError(str(exc).replace(str(out), task.name)) from None
            return out.read_bytes()


def _open_upscaler(spec: WorkerSpec):
    from i2nq.runtime.tiler import Tiler
    from i2nq.runtime.upscaler import Upscaler

    if spec.backend_factory is None:
        return Upscaler(spec.model, spec.backend, spec.device, spec.tile, spec.overlap, spec.batch, spec.max_pixels,
                        tensorrt=spec.tensorrt, outscale=spec.outscale, max_memory=spec.max_memory, fp16=spec.fp16,
                        progress=False)
    up = Upscaler.__new__(Upscaler)  # the same object on a stand-in backend
    up.backend = spec.backend_factory()
    up.tiler = Tiler(up.backend, tile=spec.tile, overlap=spec.overlap, batch=spec.batch, max_memory=spec.max_memory)
    up.max_pixels, up.outscale, up.progress = spec.max_pixels, check_outscale(spec.outscale), False
    return up


class Progress:
    """A Ray actor the workers tell how far their current task is (frames), and the driver asks."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def report(self, key: str, n: int) -> None:
        self.counts[key] = max(n, self.counts.get(key, 0))

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


# --- the driver ------------------------------------------------------------------------------------------------------


@dataclass
class _Video:
    """One video output in the making."""

    src: Path
    dst: Path
    plan: VideoPlan
    job: VideoJob
    options: VideoOptions
    span: Span
    done: dict[int, dict] = field(default_factory=dict)
    failed: tuple[Segment, str] | None = None  # the first segment that failed for good, and why

    @property
    def failure(self) -> str | None:
        """The one-line error for a failed segment (once every other task is done: it says what is kept)."""
        if self.failed is None:
            return None
        seg, message = self.failed
        return (f"segment {seg.index + 1} of {len(self.plan.segments)} of {self.src.name} ({seg.span}) failed "
                f"{DATA_TRIES} times: {message}; {_kept([self])}")

    def task(self, seg: Segment) -> VideoTask:
        return VideoTask(f"{self.dst}#{seg.index}", str(self.src), seg, self.options, self.dst.suffix, self.span,
                         seg.frames * self.plan.width * self.plan.height)

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.plan.segments)


class DistributedUpscaler:
    """Upscale videos, images and folders on the workers of a Ray cluster: `Upscaler`'s methods, at scale.

    The first arguments are `Upscaler`'s. workers: how many worker actors (default: one per GPU of the cluster
    when it has GPUs, else one per CPU share of `threads`). ray_address: a running cluster to join ("auto", or
    "host:6379" of `ray start --head`); without it a local cluster is started for this object and stopped by
    close(). A cluster this process already joined (ray.init) is used as it is. threads: CPU threads per worker
    (model, decoder, encoder; default: this machine's CPUs shared among the workers for a local cluster, else 1).
    segment_seconds: the length video is cut into (at keyframes). backend_factory: a picklable callable returning a
    Backend, used by each worker instead of opening `model` (stand-ins for tests and benchmarks). outscale,
    max_memory, fp16: as `Upscaler`'s, for every worker.

    Use it as a context manager, or call close(): it stops the workers (and a cluster it started).
    """

    def __init__(self, model: str | Path = "default", backend: str = "auto", device: str | int | None = None,
                 tile: int | None = None, overlap: int | None = None, batch: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, *, tensorrt: TensorRTOptions | None = None,
                 workers: int | None = None, ray_address: str | None = None, threads: int | None = None,
                 segment_seconds: float = SEGMENT_SECONDS, backend_factory: Callable[[], object] | None = None,
                 outscale: float | None = None, max_memory: int | str | None = "auto", fp16: bool = False) -> None:
        if workers is not None and workers < 1:
            raise I2NQError(f"--workers must be at least 1, not {workers}")
        if threads is not None and threads < 1:
            raise I2NQError(f"threads per worker must be at least 1, not {threads}")
        if not segment_seconds > 0:
            raise I2NQError(f"segment length must be > 0 seconds, not {segment_seconds}")
        if max_pixels is not None and max_pixels < 0:
            raise I2NQError(f"max_pixels must be >= 0 (0: no limit), not {max_pixels}")
        self.outscale = check_outscale(outscale)
        self.model_identity = _model_identity(model, backend_factory)  # a missing model fails before Ray starts
        self.max_pixels, self.segment_seconds = max_pixels, segment_seconds
        self.settings = {"backend": backend, "device": device, "tile": tile, "overlap": overlap, "batch": batch,
                         "tensorrt": repr(tensorrt), "outscale": self.outscale, "fp16": fp16}
        ray = self._ray = import_ray()
        self._started, self.actors, self._progress = False, [], None
        #: The last job's tasks, how many were tried again after an error (in their data, or a worker that died more
        #: often than Ray restarts it) and how many workers were lost for good.
        self.stats = {"tasks": 0, "tried_again": 0, "workers_lost": 0}
        try:
            self._connect(ray, workers, ray_address, threads)
            gpus = ray.cluster_resources().get("GPU", 0) if str(device).lower() != "cpu" else 0
            if workers is None:
                workers = int(gpus) if gpus >= 1 else max(1, int(ray.cluster_resources().get("CPU", 1)
                                                                 // (threads or 1)))
            if threads is None:
                threads = max(1, (os.cpu_count() or 1) // workers) if self._started else 1
            share = min(1.0, gpus / workers) if gpus else 0
            spec = WorkerSpec(str(model), backend, "cuda" if share else device, tile, overlap, batch, max_pixels,
                              tensorrt, threads, backend_factory, self.outscale, max_memory, fp16)
            actor = ray.remote(Worker).options(num_cpus=0 if share else threads, num_gpus=share,
                                               max_restarts=RESTARTS, max_task_retries=RESTARTS)
            self.actors = [actor.remote(spec) for _ in range(workers)]
            self._progress = ray.remote(Progress).options(num_cpus=0).remote()
            self.workers, self.threads = workers, threads
            infos = self._wait_ready()
        except BaseException:
            self.close()
            raise
        self.scale = infos[0]["scale"]
        self.backend_name = infos[0]["backend"]
        self.pids = [info["pid"] for info in infos]

    @property
    def output_scale(self) -> float:
        """The output's size over the input's: `outscale`, else the model's scale (names outputs)."""
        return self.outscale if self.outscale is not None else self.scale

    def _connect(self, ray, workers: int | None, address: str | None, threads: int | None) -> None:
        if ray.is_initialized():
            return
        quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
        try:
            if address:
                _check_reachable(address)  # Ray itself retries an unreachable address for good
                ray.init(address=address, **quiet)
            else:
                cpus = (workers or os.cpu_count() or 1) * (threads or max(1, (os.cpu_count() or 1) // (workers or 1)))
                ray.init(num_cpus=cpus, **quiet)
                self._started = True
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise I2NQError(f"cannot start or join {where}: {_first_line(exc)}") from None

    def _wait_ready(self) -> list[dict]:
        ray = self._ray
        refs = [a.ready.remote() for a in self.actors]
        start, told = time.monotonic(), False
        while True:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1.0)
            if len(ready) == len(refs):
                break
            if not told and time.monotonic() - start > 60:
                told = True
                warnings.warn(f"waiting for workers: {len(ready)} of {len(refs)} have started (does the cluster "
                              "have the CPUs or GPUs they ask for?)", stacklevel=3)
        try:
            infos = ray.get(refs)
        except ray.exceptions.RayError as exc:
            raise I2NQError(f"a worker could not start: {_first_line(exc)}") from None
        for info in infos:
            if info["error"]:
                raise I2NQError(info["error"])
        return infos

    def close(self) -> None:
        """Stop the workers, and the local cluster if this object started it."""
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        for actor in [*self.actors, *([self._progress] if self._progress is not None else [])]:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors, self._progress = [], None
        if self._started:
            self._started = False
            ray.shutdown()

    def __enter__(self) -> DistributedUpscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- jobs ---

    def upscale_video(self, src: str | Path, dst: str | Path | None = None, codec: str | None = None, crf: int = 18,
                      preset: str = "medium", overwrite: bool = False, progress: bool | None = True,
                      start: float = 0.0, duration: float | None = None, *, suffix: str | None = None,
                      format: str | None = None, skip_existing: bool = False,
                      on_skip: Callable[[Path], None] | None = None) -> Path:
        """`Upscaler.upscale_video` on the workers: the same output, resumable (see the module's notes).
        progress: one bar for the job (None: when stderr is a terminal)."""
        from i2nq.runtime.upscaler import output_job

        span = Span(start, duration)
        src, dst, skipped = output_job("video", src, dst, self.output_scale, overwrite, suffix, format,
                                       skip_existing, on_skip)
        if skipped:
            return dst
        video = self._video(src, dst, VideoOptions(codec=codec, crf=crf, preset=preset), span)
        self._schedule([video.task(s) for s in video.plan.segments if s.index not in video.done], {id(video): video},
                       [video], progress_bars.shown(progress), src.name)
        if video.failure:
            raise I2NQError(video.failure)
        self._join(video)
        return dst

    def upscale_file(self, src: str | Path, dst: str | Path | None = None, overwrite: bool = False, *,
                     suffix: str | None = None, format: str | None = None, quality: int | None = None,
                     skip_existing: bool = False, progress: bool | None = None,
                     on_skip: Callable[[Path], None] | None = None) -> Path:
        """One image on one worker (as `Upscaler.upscale_file`; no progress bar)."""
        from i2nq.runtime.upscaler import image_job

        src, dst, skipped = image_job(src, dst, self.output_scale, overwrite, suffix, format, quality, skip_existing,
                                      on_skip)
        if skipped:
            return dst
        failed = []
        self._schedule([self._image_task(src, dst, quality)], {}, [], False, src.name,
                       lambda task, message: failed.append(message))
        if failed:
            raise I2NQError(failed[0])
        return dst

    def upscale_folder(self, src: str | Path, dst: str | Path | None = None, overwrite: bool = False,
                       on_error: Callable[[Path, str], None] | None = None, progress: bool | None = True,
                       codec: str | None = None, crf: int = 18, preset: str = "medium", *, recursive: bool = False,
                       suffix: str | None = None, format: str | None = None, quality: int | None = None):
        """Every image and video in folder `src` into folder `dst` (None: `NAME_x4` beside it), same names unless
        `suffix` or `format` are given (images), as tasks spread over the workers by pixel count (largest first).
        As `Upscaler.upscale_folder`: a file that fails is reported through `on_error(path, message)` (default: a
        warning) and the others go on; outputs that exist are skipped unless `overwrite`; FolderError at the end
        names how many failed. Returns a FolderResult (the outputs written, with `.skipped` and `.failed`).
        recursive: not on workers (an I2NQError)."""
        from i2nq.runtime.upscaler import FolderError, FolderResult, _check_quality, _is_file, _warn

        src = check_source(src)
        if not src.is_dir():
            raise I2NQError(f"{src} is not a folder")
        if recursive:
            raise I2NQError(_no_recursive())
        _check_quality(quality)
        dst = folder_output(src, dst, self.output_scale)
        files = sorted(p for p in src.iterdir()
                       if (is_image(p) or is_video(p)) and not p.name.startswith(".") and not p.is_dir())
        if not files:
            raise I2NQError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or videos ({', '.join(VIDEO_SUFFIXES)}) "
                            f"in {src}")
        if dst.resolve() == src.resolve():
            raise I2NQError(f"output folder {dst} is the input folder; choose another")
        if dst.exists() and not dst.is_dir():
            raise I2NQError(f"output {dst} is a file; a folder of images needs an output folder")
        if not dst.is_dir():
            check_destination(dst)
            dst.mkdir()
        report = on_error or _warn
        written, skipped, failed = [], [], []
        options = VideoOptions(codec=codec, crf=crf, preset=preset)
        tasks, videos = [], {}

        def fail(path: Path, message: str) -> None:
            failed.append(path)
            report(path, message if path.name in message else f"{path}: {message}")

        for path in files:
            out = dst / (path.name if is_video(path) or (suffix is None and format is None) else
                         single_output(path, None, self.output_scale, suffix or "", format, "image").name)
            if not overwrite and _is_file(out):
                skipped.append(out)
                continue
            try:
                check_destination(out, path, overwrite)
                if is_video(path):
                    video = self._video(path, out, options, Span())
                    videos[id(video)] = video
                    tasks += [video.task(s) for s in video.plan.segments if s.index not in video.done]
                    if video.complete:
                        self._join(video)
                        written.append(out)
                else:
                    tasks.append(self._image_task(path, out, quality))
            except I2NQError as exc:
                fail(path, str(exc))

        def image_failed(task: ImageTask, message: str) -> None:
            fail(Path(task.src), message)

        def video_done(video: _Video) -> None:
            try:
                self._join(video)
                written.append(video.dst)
            except I2NQError as exc:
                fail(video.src, str(exc))

        def image_done(task: ImageTask) -> None:
            written.append(dst / task.name)

        self._schedule(tasks, videos, list(videos.values()), progress_bars.shown(progress), src.name, image_failed,
                       video_done, image_done)
        for video in videos.values():
            if video.failure:
                fail(video.src, video.failure)
        if failed:
            raise FolderError(written, skipped, failed, dst)
        result = FolderResult(written)
        result.skipped, result.folder = skipped, dst
        return result

    def upscale_path(self, src: str | Path, dst: str | Path | None = None, overwrite: bool = False,
                     on_error: Callable[[Path, str], None] | None = None, **options):
        """An image, a folder or a video (chosen by what `src` is) into `dst`, as `Upscaler.upscale_path` (the same
        options); a folder's videos are upscaled too, cut into segments."""
        from i2nq.errors import option
        from i2nq.runtime.upscaler import check_job

        kind = check_job(src, dst, overwrite)
        if kind != "video" and (options.get("start") or options.get("duration") is not None):
            raise I2NQError(f"{option('--start', 'start')} and {option('--duration', 'duration')} select a part of "
                            "a video; the input is not a video")
        if kind == "folder":  # a folder job always skips finished outputs (unless overwrite)
            keep = ("progress", "codec", "crf", "preset", "recursive", "suffix", "format", "quality")
            return self.upscale_folder(src, dst, overwrite, on_error, **{k: v for k, v in options.items() if k in keep})
        options.pop("recursive", None)
        if kind == "video":
            options.pop("quality", None)
            return self.upscale_video(src, dst, overwrite=overwrite, **options)
        options = {k: v for k, v in options.items() if k not in ("codec", "crf", "preset", "start", "duration")}
        return self.upscale_file(src, dst, overwrite, **options)

    # --- internals ---

    def _video(self, src: Path, dst: Path, options: VideoOptions, span: Span) -> _Video:
        """The job of one video: its folder, plan (a stored one when resuming) and finished segments."""
        identity = {"i2nq": _version(), "source": {"name": src.name, "digest": file_digest(src, whole=False)},
                    "model": self.model_identity, **self.settings, "codec": options.codec, "crf": options.crf,
                    "preset": options.preset, "start": span.start, "duration": span.duration,
                    "suffix": dst.suffix.lower(), "scale": self.scale}
        job = VideoJob(dst, job_key(identity))
        plan = job.load_plan()
        if plan is None:
            plan = plan_video(src, self.workers, self.segment_seconds, span, self.max_pixels)
            for other in job.others():
                warnings.warn(f"{other} is the job folder of an earlier run with another source, model or options; "
                              "it is left as it is (delete it if you do not need it)", stacklevel=3)
            job.start(plan, identity)
        video = _Video(src, dst, plan, job, options, span)
        video.done = job.finished(plan)
        if video.done:
            warnings.warn(f"resuming {job.folder.name}: {len(video.done)} of {len(plan.segments)} segments are "
                          "done already", stacklevel=3)
        return video

    def _image_task(self, src: Path, dst: Path, quality: int | None = None) -> ImageTask:
        try:
            width, height = image_size(src)
        except I2NQError:
            width = height = 1  # the worker reports why it cannot be read
        return ImageTask(str(dst), str(src), dst.name, width * height, quality=quality)

    def _join(self, video: _Video) -> None:
        from i2nq.runtime.segments import join_segments

        def segments():
            for seg in video.plan.segments:
                yield video.job.read(seg.index, video.done[seg.index])

        join_segments(video.src, video.dst, segments, self.output_scale, video.options, video.span)
        video.job.remove()

    def _schedule(self, tasks: list, videos: dict[int, _Video], shown: list[_Video], progress: bool, desc: str,
                  image_failed: Callable[[ImageTask, str], None] | None = None,
                  video_done: Callable[[_Video], None] | None = None,
                  image_done: Callable[[ImageTask], None] | None = None) -> None:
        """Run the tasks on the workers, largest first; keep each result as it comes; one bar for all."""
        from tqdm import tqdm

        ray = self._ray
        owner = {t.key: v for v in videos.values() for t in [v.task(s) for s in v.plan.segments]}
        queue = deque(sorted(tasks, key=lambda t: -t.weight))
        tries: dict[str, int] = {}
        idle = list(self.actors)
        running: dict = {}
        total = sum(t.frames for t in tasks) + sum(v.done[i]["frames"] for v in shown for i in v.done)
        done_frames = total - sum(t.frames for t in tasks)
        bar = tqdm(total=total, initial=done_frames, unit="frame", desc=desc, disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        polled = 0.0
        self.stats = {"tasks": len(tasks), "tried_again": 0, "workers_lost": 0}
        try:
            while queue or running:
                while queue and idle:
                    task = queue.popleft()
                    actor = idle.pop()
                    running[actor.run.remote(task, self._progress)] = (task, actor)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
                for ref in ready:
                    task, actor = running.pop(ref)
                    status, payload = self._outcome(ref, actor, idle)
                    video = owner.get(task.key)
                    if status == "ok":
                        if isinstance(task, VideoTask):
                            record = video.job.save(task.segment.index, *payload)
                            video.done[task.segment.index] = record
                            done_frames += task.frames
                            if video.complete and video_done is not None:
                                video_done(video)
                        else:
                            with atomic_output(task.key) as tmp:
                                tmp.write_bytes(payload)
                            done_frames += 1
                            if image_done is not None:
                                image_done(task)
                        continue
                    tries[task.key] = tries.get(task.key, 0) + 1
                    if tries[task.key] < DATA_TRIES:
                        queue.appendleft(task)
                        self.stats["tried_again"] += 1
                    elif isinstance(task, VideoTask):
                        total -= task.frames
                        bar.total = total
                        if video.failed is None:
                            video.failed = (task.segment, payload)
                    elif image_failed is not None:
                        total -= 1
                        image_failed(task, payload)
                    else:
                        raise I2NQError(payload)
                if not self.actors:
                    raise I2NQError(f"every worker died; {_kept(shown)}")
                if time.monotonic() - polled > 0.5 or not running:
                    polled = time.monotonic()
                    partial = 0
                    if running:
                        counts = ray.get(self._progress.snapshot.remote())
                        partial = sum(min(counts.get(t.key, 0), t.frames) for t, _ in running.values())
                    if done_frames + partial > bar.n:
                        bar.update(done_frames + partial - bar.n)
        except BaseException as exc:
            for ref in running:  # best effort: a worker busy with a model call finishes it (close() kills them)
                try:
                    ray.cancel(ref)
                except Exception:
                    pass
            if isinstance(exc, KeyboardInterrupt) and any(v.done for v in shown):
                warnings.warn(f"stopped; {_kept(shown)}", stacklevel=3)
            raise
        finally:
            bar.close()

    def _outcome(self, ref, actor, idle: list) -> tuple[str, object]:
        """What a finished task returned; a worker that is gone for good leaves the pool."""
        ray = self._ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # died more often than Ray restarts it
            if actor in self.actors:
                self.actors.remove(actor)
                self.stats["workers_lost"] += 1
            return "error", f"its worker died ({_first_line(exc)})"
        except ray.exceptions.RayTaskError as exc:  # a bug: say what it was, in one line
            idle.append(actor)
            cause = getattr(exc, "cause", None) or exc
            return "error", f"{type(cause).__name__}: {_first_line(cause)}"
        idle.append(actor)
        return result


def _no_recursive() -> str:
    from i2nq.errors import option

    return (f"{option('--recursive', 'recursive=True')} is not supported with {option('--workers or --ray', 'workers')}"
            "; upscale each subfolder, or run in one process")


def _kept(videos: list[_Video]) -> str:
    kept = [v for v in videos if v.done]
    if not kept:
        return "no segment was finished"
    where = ", ".join(str(v.job.folder) for v in kept)
    count = sum(len(v.done) for v in kept)
    return f"{count} finished segment(s) are kept in {where}: rerun the same command to do only the rest"


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """I2NQError unless something listens at a host:port address (Ray's own connect retries without end)."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise I2NQError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (start one there with "
                        "`ray start --head`, or check the address)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _version() -> str:
    from i2nq import __version__

    return __version__


def _model_identity(model: str | Path, factory: Callable | None) -> dict:
    """What makes a model the same model for a rerun: its files' contents (or the stand-in factory)."""
    if factory is not None:
        name = getattr(factory, "identity", None) or f"{getattr(factory, '__module__', '')}." \
                                                    f"{getattr(factory, '__qualname__', repr(factory))}"
        return {"factory": name if not hasattr(factory, "func") else repr(factory)}
    from i2nq.runtime.backends import resolve_model

    files = resolve_model(model)
    out = {}
    for kind in ("onnx", "checkpoint", "engine"):
        path = getattr(files, kind)
        if path is not None and Path(path).is_file():
            out[kind] = file_digest(Path(path))
        elif path is not None:
            out[kind] = str(path)
    return out


def upscale_on_ray(src: str | Path, dst: str | Path, model: str | Path = "default", backend: str = "auto",
                   device: str | int | None = None, tile: int | None = None, overlap: int | None = None,
                   batch: int | None = None, overwrite: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                   on_error: Callable[[Path, str], None] | None = None, tensorrt: TensorRTOptions | None = None, *,
                   workers: int | None = None, ray_address: str | None = None, outscale: float | None = None,
                   max_memory: int | str | None = "auto", fp16: bool = False, **options):
    """What `i2nq upscale ... --workers N / --ray ADDRESS` runs (i2nq.runtime.upscaler.upscale hands over).
    options: Upscaler.upscale_path's, and segment_seconds."""
    seconds = options.pop("segment_seconds", None) or SEGMENT_SECONDS
    if options.get("recursive"):  # before a cluster starts
        raise I2NQError(_no_recursive())
    with DistributedUpscaler(model, backend, device, tile, overlap, batch, max_pixels, tensorrt=tensorrt,
                             workers=workers, ray_address=ray_address, segment_seconds=seconds, outscale=outscale,
                             max_memory=max_memory, fp16=fp16) as farm:
        return farm.upscale_path(src, dst, overwrite, on_error, **options)
