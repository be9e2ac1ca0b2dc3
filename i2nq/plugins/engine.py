"""TensorRT engines for i2nq ONNX exports: build them (plugin loaded, strongly typed, one optimization
profile, timing cache), cache them under a key of everything that makes an engine valid, and load them.

Every engine has a sidecar `<engine>.json` (EngineRecord) with the model metadata and what built it, so a
.engine file can be served without its ONNX, and an engine from another TensorRT or GPU is refused.

Concurrency: a build holds an exclusive lock (fcntl.flock on a file in the cache's locks/ folder) from the cache
check to the rename of the finished engine, so processes building the same engine build it once; files are written under unique
temporary names and renamed into place (readers see the old file or the new one, never a part). The timing
cache is merged and replaced the same way under its own lock, and one that TensorRT cannot read is discarded
with a note.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from i2nq.errors import I2NQError
from i2nq.files import atomic_output, check_destination
from i2nq.plugins import PLUGIN_VERSION
from i2nq.plugins.gpu import (import_tensorrt, register_plugin, registered_plugin, tensorrt_major, trt_logger,
                              use_device)
from i2nq.plugins.library import cache_dir, find_plugin
from i2nq.runtime.backends.base import ModelMeta
from i2nq.runtime.backends.tensorrt import TensorRTOptions, with_static

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock (builds of the same engine may then run twice)
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class OnnxModel:
    """What the engine build needs to know about an i2nq ONNX export."""

    path: Path
    sha256: str
    meta: ModelMeta
    input_name: str
    dtype: str  # "float16" (tensorrt flavor) or "float32"
    custom_nodes: int  # ai.i2nq nodes in the main graph (which the plugin runs)

    @property
    def custom_ops(self) -> bool:
        return self.custom_nodes > 0


@dataclass(frozen=True)
class EngineRecord:
    """The sidecar of an engine: cache key fields, the engine's hash, the model metadata and what the build found.

    plugin_version: the plugin's op version when the engine's ai.i2nq nodes are plugin layers (checked after
    parsing: every one of them, `plugin_layers` == `custom_nodes`), None when they ran as their ONNX function
    bodies (no plugin library) or there are none.
    """

    onnx_sha256: str
    plugin_version: str | None
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max input shape
    dtype: str
    tensorrt: str
    gpu: str
    meta: ModelMeta
    engine_sha256: str = ""
    fp16_flag: bool = False  # weakly typed network with the FP16 builder flag (TensorRTOptions.fp16 on fp32)
    workspace_mib: int = 4096
    plugin_layers: int = 0  # found after parsing: IPluginV3 layers in the network
    custom_nodes: int = 0  # ai.i2nq nodes in the ONNX graph

    #: Fields that describe a built engine rather than select one: not part of the cache key.
    RESULTS = ("engine_sha256", "plugin_layers", "custom_nodes")

    def key(self) -> str:
        """Cache key: a hash of every field that makes an engine valid (not what the build found)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RESULTS}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def save(self, engine: Path, overwrite: bool = True) -> None:
        write_atomic(sidecar_path(engine), json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True).encode(),
                     overwrite)

    @staticmethod
    def load(engine: Path) -> EngineRecord:
        """The sidecar of `engine`; I2NQError when it is missing or unreadable."""
        path = sidecar_path(engine)
        try:
            data = json.loads(path.read_text())
            data["meta"] = ModelMeta(**data["meta"])
            data["profile"] = tuple(tuple(s) for s in data["profile"])
            return EngineRecord(**data)
        except FileNotFoundError:
            raise I2NQError(f"{engine} has no {path.name} beside it (model metadata); build engines with "
                            f"i2nq build-engine") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise I2NQError(f"{path} is not a valid i2nq engine record ({exc}); rebuild the engine with "
                            f"i2nq build-engine") from None


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write `data` to `path` through i2nq.files.atomic_output (a uniquely named, locked temp file, synced, then
    published; an existing file is replaced only with `overwrite`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_bytes(data)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for `path`: flock on a lock file in the cache's locks/ folder named after the
    absolute path (created if missing, never deleted: deleting lock files races)."""
    resolved = str(Path(path).resolve())
    lock = cache_dir() / "locks" / f"{Path(path).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:16]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def inspect_onnx(path: Path) -> OnnxModel:
    """Hash, i2nq metadata, input name and dtype of an ONNX export (I2NQError if it is not an i2nq export)."""
    import onnx

    from i2nq.runtime.backends.onnxruntime import read_meta

    path = Path(path)
    if not path.is_file():
        raise I2NQError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for files that are not ONNX
        raise I2NQError(f"cannot read ONNX model {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") \
            from None
    meta = read_meta({p.key: p.value for p in model.metadata_props}, path)
    graph_input = model.graph.input[0]
    elem = graph_input.type.tensor_type.elem_type
    dtype = "float16" if elem == onnx.TensorProto.FLOAT16 else "float32"
    custom = sum(node.domain == "ai.i2nq" for node in model.graph.node)
    return OnnxModel(path, file_sha256(path), meta, graph_input.name, dtype, custom)


def cached_engine_path(record: EngineRecord, stem: str) -> Path:
    """Cache location: the name says what the engine is for, the key suffix what built it."""
    shape = "x".join(map(str, record.profile[2])) if record.profile[0] == record.profile[2] else "dynamic"
    trt = re.sub(r"[^0-9.]", "", record.tensorrt)
    return cache_dir() / "engines" / f"{stem}-{shape}-trt{trt}-{record.key()[:16]}.engine"


def is_valid(engine: Path, record: EngineRecord) -> bool:
    """Whether `engine` exists with a sidecar matching `record` and its bytes are the ones recorded."""
    try:
        saved = EngineRecord.load(engine)
    except I2NQError:
        return False
    return (engine.is_file() and saved.key() == record.key()
            and saved.engine_sha256 == file_sha256(engine))


def _fp16_flag(trt: ModuleType, model: OnnxModel, options: TensorRTOptions) -> bool:
    """Whether to build weakly typed with the FP16 flag; I2NQError where TensorRTOptions.fp16 cannot be met."""
    if options.fp16 is False and model.dtype == "float16":
        raise I2NQError(f"{model.path.name} is the fp16 (tensorrt-flavor) export and fp16 is off: export the "
                        f"portable flavor for an fp32 engine (i2nq export-onnx --flavor portable)")
    if not options.fp16 or model.dtype == "float16":
        return False
    if tensorrt_major(trt) >= 11:
        raise I2NQError(f"{model.path.name} is an fp32 export and TensorRT {trt.__version__} builds strongly typed "
                        f"networks only: export the fp16 graph (i2nq export-onnx --flavor tensorrt) for fp16")
    return True


def build_engine(onnx_path: Path, output: Path | None = None, tile: tuple[int, int] | None = None,
                 batch: int | None = None, plugin: Path | None = None, device: int = 0,
                 options: TensorRTOptions | None = None, overwrite: bool = False) -> Path:
    """Build a TensorRT engine for an i2nq ONNX export and return its path.

    With `output`, the engine is written there (with its sidecar; an existing one is replaced only with
    `overwrite`); without, it goes to the engine cache, where a valid entry is reused and a stale one rebuilt.
    `options` (TensorRTOptions) set the profile, precision, workspace, timing cache and log level; `tile` /
    `batch` are the short form of a static engine. `plugin`: the plugin library (default: the one this process
    loaded, $I2NQ_PLUGIN or the one `i2nq build-plugin` made; without one, the custom nodes run as their ONNX
    function bodies).
    """
    options = with_static(options, tile, batch)
    model = inspect_onnx(onnx_path)
    if output is not None:  # before the build, which takes minutes
        check_destination(output, onnx_path, overwrite)
        check_destination(sidecar_path(Path(output)), onnx_path, overwrite)
    trt = import_tensorrt()
    logger = trt_logger(trt, options.verbose)
    gpu = use_device(device)
    plugin_path = _plugin_path(plugin) if model.custom_ops else None
    if plugin_path is not None:
        register_plugin(trt, plugin_path, device)
    elif model.custom_ops:
        warnings.warn("no i2nq TensorRT plugin found: the ai.i2nq nodes run as their ONNX function bodies "
                      "(slower); build the plugin with i2nq build-plugin", stacklevel=2)
    record = EngineRecord(model.sha256, PLUGIN_VERSION if plugin_path else None,
                          options.profile(model.meta.in_channels, model.meta.receptive_field), model.dtype,
                          trt.__version__, gpu, model.meta, fp16_flag=_fp16_flag(trt, model, options),
                          workspace_mib=int(options.workspace_mib), custom_nodes=model.custom_nodes)
    target = Path(output) if output else cached_engine_path(record, model.path.stem)
    replace = output is None or overwrite  # the cache's entries are replaced when stale
    with file_lock(target):  # one build per engine at a time; a waiting process then finds it built
        if output is None and is_valid(target, record):
            return target
        serialized, plugin_layers = _serialize(trt, logger, model, record, options)
        write_atomic(target, serialized, replace)
        record = dataclasses.replace(record, engine_sha256=hashlib.sha256(serialized).hexdigest(),
                                     plugin_layers=plugin_layers)
        record.save(target, replace)
    return target


def _plugin_path(plugin: Path | None) -> Path | None:
    """The plugin library to use: the one named (argument, else $I2NQ_PLUGIN), else the one this process already
    loaded, else the one i2nq build-plugin made (None when there is none)."""
    named = plugin or os.environ.get("I2NQ_PLUGIN")
    return find_plugin(named) if named else registered_plugin() or find_plugin(None)


def _serialize(trt: ModuleType, logger, model: OnnxModel, record: EngineRecord,
               options: TensorRTOptions) -> tuple[bytes, int]:
    """Parse the ONNX into a (strongly typed) network, check which ai.i2nq nodes became plugin layers, and build
    the serialized engine. Returns (engine bytes, plugin layers)."""
    builder = trt.Builder(logger)
    strong = tensorrt_major(trt) < 11 and not record.fp16_flag  # TensorRT 11 is always strongly typed
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model.path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)] or ["unknown error"]
        hint = "" if record.plugin_version else " (no i2nq plugin loaded: build it with i2nq build-plugin)"
        raise I2NQError(f"TensorRT cannot parse {model.path.name}: {errors[0]}{hint}")
    plugin_layers = sum(network.get_layer(i).type == trt.LayerType.PLUGIN_V3 for i in range(network.num_layers))
    expected = model.custom_nodes if record.plugin_version else 0
    if plugin_layers != expected:
        if expected:
            raise I2NQError(f"TensorRT {trt.__version__}'s ONNX parser made {plugin_layers} of the {expected} ai.i2nq "
                            f"nodes of {model.path.name} plugin layers (the rest would run as their function bodies): "
                            f"use TensorRT >= 10.7 and an i2nq plugin library built for it (i2nq build-plugin)")
        raise I2NQError(f"{model.path.name} parsed into {plugin_layers} plugin layers although no i2nq plugin "
                        f"library is loaded; name the library with --plugin or $I2NQ_PLUGIN")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if record.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(model.input_name, *record.profile)
    config.add_optimization_profile(profile)
    cache_file = Path(options.timing_cache) if options.timing_cache else \
        cache_dir() / "engines" / f"timing-{_slug(record.tensorrt, record.gpu)}.cache"
    _attach_timing_cache(config, cache_file)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise I2NQError(f"TensorRT could not build an engine for {model.path.name} with input profile "
                        f"{record.profile}; see the TensorRT messages above (--verbose shows more)")
    _save_timing_cache(config, cache_file)
    return bytes(serialized), plugin_layers


def _read_timing_cache(config, path: Path):
    """The timing cache in `path` as an ITimingCache; None (file removed, with a note) when TensorRT cannot read
    it or its recorded hash does not match; None without a note when there is no file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    digest = path.with_name(path.name + ".sha256")
    cache = None
    if data and (not digest.is_file() or digest.read_text().strip() == hashlib.sha256(data).hexdigest()):
        try:
            cache = config.create_timing_cache(data)
        except Exception:  # the bindings may raise on a blob they cannot deserialize
            cache = None
    if cache is None:
        warnings.warn(f"timing cache {path} is unreadable (corrupt, or from another TensorRT): discarded; this "
                      f"build times its layers afresh", stacklevel=4)
        path.unlink(missing_ok=True)
        digest.unlink(missing_ok=True)
    return cache


def _attach_timing_cache(config, path: Path) -> None:
    with file_lock(path):
        cache = _read_timing_cache(config, path)
    if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=True):
        warnings.warn(f"timing cache {path} does not fit this build: discarded", stacklevel=3)
        cache = None
    if cache is None:
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=True)


def _save_timing_cache(config, path: Path) -> None:
    """Merge what another build saved meanwhile into this build's cache, then replace the file (atomically)."""
    cache = config.get_timing_cache()
    with file_lock(path):
        on_disk = _read_timing_cache(config, path)
        if on_disk is not None:
            cache.combine(on_disk, True)
        data = bytes(cache.serialize())
        write_atomic(path, data)
        write_atomic(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())


def _slug(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", p) for p in parts)


def load_engine(trt: ModuleType, path: Path, device: int = 0, plugin: Path | None = None, verbose: bool = False):
    """Deserialize `path` on `device`; I2NQError when it was built by another TensorRT or for another GPU,
    or needs the plugin library and none is found. Returns (ICudaEngine, EngineRecord)."""
    record = EngineRecord.load(path)
    gpu = use_device(device)
    if record.tensorrt != trt.__version__ or record.gpu != gpu:
        raise I2NQError(f"{path.name} was built by TensorRT {record.tensorrt} for {record.gpu}; this is TensorRT "
                        f"{trt.__version__} on {gpu}: rebuild it with i2nq build-engine")
    if record.plugin_version is not None:
        plugin_path = _plugin_path(plugin)
        if plugin_path is None:
            raise I2NQError(f"{path.name} needs the i2nq TensorRT plugin: build it with i2nq build-plugin "
                            f"or pass its path (--plugin or $I2NQ_PLUGIN)")
        register_plugin(trt, plugin_path, device)
    engine = trt.Runtime(trt_logger(trt, verbose)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise I2NQError(f"TensorRT cannot load {path.name} (corrupt, or built elsewhere): rebuild it with "
                        f"i2nq build-engine")
    return engine, record
