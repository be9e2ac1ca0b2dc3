"""The TensorRT plugin library libi2nq_trt.so: build it with CMake, find it, check its version."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
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

    `cuda_archs` is a CMake CUDA_ARCHITECTURES list such as "90" or "80;86;90" (default: this machine's GPU, else
    sm_80/86/89/90/100/120 where nvcc supports them: i2nq/plugins/cuda_arch.cmake).
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
    # Without a choice, clear one cached by an earlier build in the same folder, so that the default applies.
    configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_archs}" if cuda_archs else "-UCMAKE_CUDA_ARCHITECTURES")
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


@dataclass(frozen=True)
class PluginInfo:
    """What a plugin library says about itself (its exported probes)."""

    version: str  # the ai.i2nq op contract version it implements
    tensorrt: str | None  # TensorRT version of the headers it was built against (None: an older i2nq built it)
    cuda_archs: tuple[str, ...]  # CMake CUDA_ARCHITECTURES of its kernels, e.g. ("80-real", "90"); () if unknown


def _open_library(path: Path) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(str(path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
    except OSError as exc:
        raise I2NQError(f"cannot load TensorRT plugin library {path}: {exc}; rebuild it with i2nq build-plugin") \
            from None


def _probe_string(lib: ctypes.CDLL, name: str) -> str | None:
    try:
        probe = getattr(lib, name)
    except AttributeError:
        return None
    probe.restype = ctypes.c_char_p
    return probe().decode()


def plugin_info(path: Path) -> PluginInfo:
    """The probes of a plugin library; I2NQError if it cannot be loaded or is not an i2nq plugin library."""
    lib = _open_library(path)
    version = _probe_string(lib, "i2nqPluginVersion")
    if version is None:
        raise I2NQError(f"{path} is not an i2nq plugin library (no i2nqPluginVersion); build one with "
                        f"i2nq build-plugin")
    archs = _probe_string(lib, "i2nqCudaArchs") or ""
    return PluginInfo(version, _probe_string(lib, "i2nqTensorRTVersion"), tuple(a for a in archs.split(",") if a))


def plugin_version(path: Path) -> str:
    """The op-contract version a plugin library implements (its i2nqPluginVersion()); I2NQError if unreadable."""
    return plugin_info(path).version


def check_plugin(path: Path, tensorrt_version: str | None = None) -> Path:
    """`path` if it implements this i2nq's op version (and, given the TensorRT version of this process, was built
    against the headers of the same TensorRT major version), else I2NQError saying to rebuild it."""
    info = plugin_info(path)
    if info.version != PLUGIN_VERSION:
        raise I2NQError(f"plugin library {path} implements ai.i2nq version {info.version}, this i2nq needs "
                        f"{PLUGIN_VERSION}; rebuild it with i2nq build-plugin")
    if tensorrt_version is not None:
        major = tensorrt_version.split(".")[0]
        if info.tensorrt is None:
            raise I2NQError(f"plugin library {path} does not say which TensorRT it was built for (an older i2nq "
                            f"built it); rebuild it with i2nq build-plugin --tensorrt-root <TensorRT {major} SDK>")
        if info.tensorrt.split(".")[0] != major:
            raise I2NQError(f"plugin library {path} was built against TensorRT {info.tensorrt} headers; this is "
                            f"TensorRT {tensorrt_version}: rebuild it with i2nq build-plugin --tensorrt-root "
                            f"<TensorRT {major} SDK>")
    return path


#: CUDA errors meaning "no kernel image for this GPU" (cudaErrorNoKernelImageForDevice, cudaErrorInvalidDeviceFunction).
NO_KERNEL_IMAGE = (209, 98)


def plugin_device_status(path: Path, device: int) -> int:
    """The library's i2nqCheckDevice(device): 0 when its kernels can run on CUDA device `device`, else the CUDA
    error (209: no kernel image for that GPU); -1 for a library without the probe."""
    lib = _open_library(path)
    try:
        probe = lib.i2nqCheckDevice
    except AttributeError:
        return -1
    probe.restype, probe.argtypes = ctypes.c_int, [ctypes.c_int]
    return int(probe(device))
