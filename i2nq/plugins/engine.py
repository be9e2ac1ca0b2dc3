"""TensorRT engines for i2nq ONNX exports: build them (plugin loaded, strongly typed, one optimization
profile, timing cache), cache them under a key of everything that makes an engine valid, and load them.

Every engine has a sidecar `<engine>.json` (EngineRecord) with the model metadata and what built it, so a
.engine file can be served without its ONNX, and an engine from another TensorRT or GPU is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from i2nq.errors import I2NQError
from i2nq.files import atomic_output, check_destination
from i2nq.plugins import PLUGIN_VERSION
from i2nq.plugins.gpu import import_tensorrt, register_plugin, tensorrt_major, use_device
from i2nq.plugins.library import cache_dir, find_plugin
from i2nq.runtime.backends.base import ModelMeta

#: Dynamic-profile ranges used when no tile / batch is given: (min, opt, max).
DYNAMIC_SIDE = (1, 256, 512)
DYNAMIC_BATCH = (1, 4, 4)
WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class OnnxModel:
    """What the engine build needs to know about an i2nq ONNX export."""

    path: Path
    sha256: str
    meta: ModelMeta
    input_name: str
    dtype: str  # "float16" (tensorrt flavor) or "float32"
    custom_ops: bool  # has ai.i2nq nodes (which the plugin runs)


@dataclass(frozen=True)
class EngineRecord:
    """The sidecar of an engine: cache key fields, the engine's hash and the model metadata."""

    onnx_sha256: str
    plugin_version: str | None  # None: built without the plugin (custom nodes ran as ONNX functions)
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max input shape
    dtype: str
    tensorrt: str
    gpu: str
    meta: ModelMeta
    engine_sha256: str = ""

    def key(self) -> str:
        """Cache key: a hash of every field that makes an engine valid (not the engine's own hash)."""
        fields = dataclasses.asdict(dataclasses.replace(self, engine_sha256=""))
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def save(self, engine: Path, overwrite: bool = True) -> None:
        with atomic_output(sidecar_path(engine), overwrite) as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True))

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
    custom = any(node.domain == "ai.i2nq" for node in model.graph.node)
    return OnnxModel(path, file_sha256(path), meta, graph_input.name, dtype, custom)


def profile_shapes(channels: int, tile: tuple[int, int] | None,
                   batch: int | None) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) NCHW input shapes: static where tile / batch are given, else the DYNAMIC_* ranges."""
    if tile is not None and (len(tile) != 2 or min(tile) < 1):
        raise I2NQError(f"tile must be two positive sides (H W), not {tile}")
    if batch is not None and batch < 1:
        raise I2NQError(f"batch must be positive, not {batch}")
    n = (batch,) * 3 if batch else DYNAMIC_BATCH
    h = (tile[0],) * 3 if tile else DYNAMIC_SIDE
    w = (tile[1],) * 3 if tile else DYNAMIC_SIDE
    return tuple((n[i], channels, h[i], w[i]) for i in range(3))  # type: ignore[return-value]


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


def build_engine(onnx_path: Path, output: Path | None = None, tile: tuple[int, int] | None = None,
                 batch: int | None = None, plugin: Path | None = None, device: int = 0,
                 overwrite: bool = False) -> Path:
    """Build a TensorRT engine for an i2nq ONNX export and return its path.

    With `output`, the engine is written there (with its sidecar; an existing one is replaced only with
    `overwrite`); without, it goes to the engine cache,
    where a valid entry is reused and a stale one rebuilt. `plugin`: the plugin library (default:
    $I2NQ_PLUGIN or the one `i2nq build-plugin` made; without one, the custom nodes run as their ONNX
    function bodies).
    """
    model = inspect_onnx(onnx_path)
    if output is not None:  # before the build, which takes minutes
        check_destination(output, onnx_path, overwrite)
        check_destination(sidecar_path(Path(output)), onnx_path, overwrite)
    trt = import_tensorrt()
    gpu = use_device(device)
    plugin_path = find_plugin(plugin)
    if plugin_path is not None:
        register_plugin(trt, plugin_path)
    elif model.custom_ops:
        warnings.warn("no i2nq TensorRT plugin found: the ai.i2nq nodes run as their ONNX function bodies "
                      "(slower); build the plugin with i2nq build-plugin", stacklevel=2)
    record = EngineRecord(model.sha256, PLUGIN_VERSION if plugin_path else None,
                          profile_shapes(model.meta.in_channels, tile, batch), model.dtype, trt.__version__, gpu,
                          model.meta)
    target = Path(output) if output else cached_engine_path(record, model.path.stem)
    if output is None and is_valid(target, record):
        return target
    serialized = _serialize(trt, model, record)
    target.parent.mkdir(parents=True, exist_ok=True)
    replace = output is None or overwrite  # the cache's entries are replaced when stale
    with atomic_output(target, replace) as tmp:
        tmp.write_bytes(serialized)
        record = dataclasses.replace(record, engine_sha256=file_sha256(tmp))
    record.save(target, replace)
    return target


def _serialize(trt: ModuleType, model: OnnxModel, record: EngineRecord) -> bytes:
    """Parse the ONNX into a strongly typed network and build the serialized engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if tensorrt_major(trt) >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model.path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)] or ["unknown error"]
        hint = "" if record.plugin_version else " (no i2nq plugin loaded: build it with i2nq build-plugin)"
        raise I2NQError(f"TensorRT cannot parse {model.path.name}: {errors[0]}{hint}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    profile.set_shape(model.input_name, *record.profile)
    config.add_optimization_profile(profile)
    cache_file = cache_dir() / "engines" / f"timing-{_slug(record.tensorrt, record.gpu)}.cache"
    timing = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise I2NQError(f"TensorRT could not build an engine for {model.path.name} with input profile "
                        f"{record.profile}; see the TensorRT messages above")
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _slug(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", p) for p in parts)


def load_engine(trt: ModuleType, path: Path, device: int = 0, plugin: Path | None = None):
    """Deserialize `path` on `device`; I2NQError when it was built by another TensorRT or for another GPU,
    or needs the plugin library and none is found. Returns (ICudaEngine, EngineRecord)."""
    record = EngineRecord.load(path)
    gpu = use_device(device)
    if record.tensorrt != trt.__version__ or record.gpu != gpu:
        raise I2NQError(f"{path.name} was built by TensorRT {record.tensorrt} for {record.gpu}; this is TensorRT "
                        f"{trt.__version__} on {gpu}: rebuild it with i2nq build-engine")
    if record.plugin_version is not None:
        plugin_path = find_plugin(plugin)
        if plugin_path is None:
            raise I2NQError(f"{path.name} needs the i2nq TensorRT plugin: build it with i2nq build-plugin "
                            f"or pass its path (--plugin or $I2NQ_PLUGIN)")
        register_plugin(trt, plugin_path)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise I2NQError(f"TensorRT cannot load {path.name} (corrupt, or built elsewhere): rebuild it with "
                        f"i2nq build-engine")
    return engine, record
