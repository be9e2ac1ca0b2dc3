"""The TensorRT plugin library libi2nq_trt.so: build it with CMake, find it, check its version."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

from i2nq.errors import I2NQError
from i2nq.plugins import PLUGIN_VERSION, PLUGINS

LIBRARY_NAME = "libi2nq_trt.so"


def cache_dir() -> Path:
    """Root of i2nq's caches (plugin library, engines): $I2NQ_CACHE_DIR or ~/.cache/i2nq."""
    return Path(os.environ.get("I2NQ_CACHE_DIR") or Path.home() / ".cache" / "i2nq")


def default_plugin_path() -> Path:
    """Where `i2nq build-plugin` puts the library unless told otherwise."""
    return cache_dir() / "plugins" / LIBRARY_NAME


def find_tensorrt_root(tensorrt_root: str | Path | None) -> Path:
    """The TensorRT SDK folder (the one with include/NvInfer.h): the argument if given, else $TensorRT_ROOT
    or a system install."""
    candidates = [tensorrt_root] if tensorrt_root else [os.environ.get("TensorRT_ROOT"), "/usr", "/opt/tensorrt"]
    for root in (Path(c) for c in candidates if c):
        if any((root / sub / "NvInferRuntime.h").is_file()
               for sub in ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu")):
            return root
    if tensorrt_root:
        raise I2NQError(f"no TensorRT headers under {tensorrt_root} (expected include/NvInferRuntime.h); "
                        f"pass the TensorRT SDK folder with --tensorrt-root")
    raise I2NQError("TensorRT headers not found: pass the TensorRT SDK folder with --tensorrt-root "
                    "(or set TensorRT_ROOT); download the SDK from developer.nvidia.com/tensorrt")


def find_nvcc() -> str | None:
    """The CUDA compiler: on PATH, or in the toolkit's default location."""
    return shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc") if os.access(p, os.X_OK)), None)


def find_cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (with cuda_fp16.h): $CUDA_HOME, $CUDA_PATH, beside nvcc, or /usr/local/cuda."""
    nvcc = find_nvcc()
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                  Path(nvcc).resolve().parents[1] if nvcc else None, "/usr/local/cuda"]
    return next((Path(c) / "include" for c in candidates if c and (Path(c) / "include" / "cuda_fp16.h").is_file()),
                None)


def build_plugin(tensorrt_root: str | Path | None = None, output: Path | None = None,
                 build_dir: Path | None = None, cuda_archs: str | None = None, jobs: int | None = None,
                 overwrite: bool = False) -> Path:
    """Configure and build libi2nq_trt.so with CMake and copy it to `output` (default: the plugin cache, whose
    library is replaced; an existing `output` is replaced only with `overwrite`).

    `cuda_archs` is a CMake CUDA_ARCHITECTURES list such as "90" or "80;86;90" (default: the common ones).
    """
    from i2nq.files import atomic_output, check_destination

    if output is not None:  # before the build, which takes minutes
        check_destination(output, overwrite=overwrite)
    replace = output is None or overwrite
    cmake = shutil.which("cmake")
    if cmake is None:
        raise I2NQError("cmake not found: install CMake >= 3.18 (e.g. pip install cmake)")
    root = find_tensorrt_root(tensorrt_root)
    output = Path(output) if output else default_plugin_path()
    build_dir = Path(build_dir) if build_dir else cache_dir() / "build" / "plugins"
    configure = [cmake, "-S", str(PLUGINS), "-B", str(build_dir), f"-DTensorRT_ROOT={root}",
                 "-DCMAKE_BUILD_TYPE=Release"]
    nvcc = find_nvcc()
    if nvcc:
        configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    if cuda_archs:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_archs}")
    build = [cmake, "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 1)]
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "i2nq-build.log"
    for step in (configure, build):
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0:
            log.write_text(result.stdout + result.stderr)
            lines = [ln for ln in (result.stderr + result.stdout).splitlines() if "rror" in ln] or ["(no message)"]
            raise I2NQError(f"building the TensorRT plugin failed: {lines[0].strip()} (log: {log})")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output, replace) as tmp:
        shutil.copyfile(build_dir / LIBRARY_NAME, tmp)
    return output


def find_plugin(path: str | Path | None = None) -> Path | None:
    """The plugin library to load: `path`, else $I2NQ_PLUGIN, else the build-plugin default if it exists.

    An explicitly named library that does not exist is an error; with nothing named and nothing built, None.
    """
    named = path or os.environ.get("I2NQ_PLUGIN")
    if named:
        if not Path(named).is_file():
            raise I2NQError(f"TensorRT plugin library not found: {named}; build it with "
                            f"`i2nq build-plugin --tensorrt-root <TensorRT SDK>`")
        return Path(named)
    default = default_plugin_path()
    return default if default.is_file() else None


def plugin_version(path: Path) -> str:
    """The op-contract version a plugin library implements (its i2nqPluginVersion()); I2NQError if unreadable."""
    try:
        lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
    except OSError as exc:
        raise I2NQError(f"cannot load TensorRT plugin library {path}: {exc}; rebuild it with i2nq build-plugin") \
            from None
    try:
        probe = lib.i2nqPluginVersion
    except AttributeError:
        raise I2NQError(f"{path} is not an i2nq plugin library (no i2nqPluginVersion); build one with "
                        f"i2nq build-plugin") from None
    probe.restype = ctypes.c_char_p
    return probe().decode()


def check_plugin(path: Path) -> Path:
    """`path` if it implements this i2nq's op version, else I2NQError saying to rebuild it."""
    found = plugin_version(path)
    if found != PLUGIN_VERSION:
        raise I2NQError(f"plugin library {path} implements ai.i2nq version {found}, this i2nq needs "
                        f"{PLUGIN_VERSION}; rebuild it with i2nq build-plugin")
    return path
