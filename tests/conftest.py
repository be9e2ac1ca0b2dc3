"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def make_sr_onnx(path: Path, scale: int = 2, convs: int = 3, channels: int = 8, dtype: str = "float32",
                 metadata: bool = True, custom_op: bool = False, seed: int = 0, nearest: bool = False,
                 receptive_field: int | None = None) -> Path:
    """A tiny i2nq-style SR model from standard ONNX ops: a 3x3 Conv+ReLU stack, DepthToSpace, plus a
    nearest-upsampled skip. Its receptive-field radius is `convs`; it zero-pads at the image border like
    a real model. `custom_op` routes the features through an ai.i2nq node backed by a model-local function.
    `nearest`: all-zero convolutions, so the model is exactly a nearest-neighbour upscale. `receptive_field`:
    the radius the metadata claims (default `convs`), e.g. a real model's, for tests of tile and profile sizes.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    elem = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    nodes, inits = [], []
    x = "input"
    if dtype == "float16":
        nodes.append(helper.make_node("Cast", ["input"], ["input32"], to=TensorProto.FLOAT))
        x = "input32"
    feat, c_in = x, 3
    for i in range(convs):
        c_out = 3 * scale * scale if i == convs - 1 else channels
        w = (rng.standard_normal((c_out, c_in, 3, 3)) * (0.3 / np.sqrt(c_in * 9))).astype(np.float32)
        b = (rng.standard_normal(c_out) * 0.05).astype(np.float32)
        if nearest:
            w[:], b[:] = 0, 0
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [feat, f"w{i}", f"b{i}"], [f"conv{i}"], pads=[1, 1, 1, 1]))
        feat = f"conv{i}"
        if i < convs - 1:
            nodes.append(helper.make_node("Relu", [feat], [f"relu{i}"]))
            feat = f"relu{i}"
            if custom_op and i == 0:
                nodes.append(helper.make_node("NUQuant", [feat], ["quant0"], domain="ai.i2nq"))
                feat = "quant0"
        c_in = c_out
    inits.append(numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales"))
    nodes += [
        helper.make_node("DepthToSpace", [feat], ["detail"], blocksize=scale, mode="CRD"),
        helper.make_node("Resize", [x, "", "scales"], ["base"], mode="nearest"),
        helper.make_node("Add", ["base", "detail"], ["out32" if dtype == "float16" else "output"]),
    ]
    if dtype == "float16":
        nodes.append(helper.make_node("Cast", ["out32"], ["output"], to=TensorProto.FLOAT16))
    graph = helper.make_graph(
        nodes, "tiny_sr",
        [helper.make_tensor_value_info("input", elem, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", elem, ["N", 3, "H2", "W2"])],
        inits)
    opsets = [helper.make_opsetid("", 17)]
    functions = []
    if custom_op:
        opsets.append(helper.make_opsetid("ai.i2nq", 1))
        body = [helper.make_node("Floor", ["X"], ["F"]), helper.make_node("Sub", ["X", "F"], ["R"]),
                helper.make_node("Add", ["F", "R"], ["Y"])]  # an identity written with standard ops
        functions.append(helper.make_function("ai.i2nq", "NUQuant", ["X"], ["Y"], body,
                                              [helper.make_opsetid("", 17)]))
    model = helper.make_model(graph, opset_imports=opsets, functions=functions, ir_version=10)
    if metadata:
        meta = {"i2nq.version": "0.1.0", "i2nq.arch": "tiny", "i2nq.scale": str(scale), "i2nq.bits": "fp32",
                "i2nq.input_layout": "NCHW;RGB;float[0,1]",
                "i2nq.receptive_field": str(convs if receptive_field is None else receptive_field),
                "i2nq.flavor": "tensorrt" if dtype == "float16" else "portable", "i2nq.dtype": dtype}
        onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: tiny_model(scale=2, convs=3, ...) -> path of a cached tiny i2nq ONNX SR model."""
    folder = tmp_path_factory.mktemp("models")
    cache: dict[tuple, Path] = {}

    def build(**kwargs) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            name = "_".join(f"{k}{v}" for k, v in key) or "default"
            cache[key] = make_sr_onnx(folder / f"tiny_{name}.onnx", **kwargs)
        return cache[key]

    return build


def make_clip(path: Path, frames: int = 12, size: tuple[int, int] = (40, 30), fps: int = 12,
              audio: bool = True, keyint: int = 250, bframes: int = 0) -> Path:
    """A small H.264 mp4 of moving gradients (a keyframe every `keyint` frames, `bframes` B-frames in a row at
    most), with a 440 Hz AAC tone track when `audio`."""
    import av

    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "ultrafast", "g": str(keyint), "bf": str(bframes)})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream("aac", rate=48000, layout="mono") if audio else None
        for i in range(frames):
            image = np.stack([(xx * 6 + i * 9) % 256, (yy * 8 + i * 5) % 256, (xx + yy) * 3 % 256], -1)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            samples = 48000 * frames // fps
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)[None]
            chunk = 1024
            for start in range(0, samples, chunk):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + chunk]),
                                                   format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame 40x30 H.264 mp4 with an AAC audio track."""
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


EMU_SANITIZERS = {"asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
                  "tsan": ["-fsanitize=thread"]}


@pytest.fixture(scope="session")
def emu_flags() -> Callable[[str, Path], list[str]]:
    """Factory: emu_flags(sanitizer, csrc) -> the g++ flags that build the CUDA sources in `csrc` as C++ for the
    CPU with tests/emu/cuda_emu.h (grid capped at 3 blocks, so grid-stride loops take several turns) under
    `sanitizer` ("asan" or "tsan"). Skips without g++ or the CUDA toolkit headers."""
    import shutil

    from i2nq.plugins.library import find_cuda_include

    cuda_include = find_cuda_include()
    if shutil.which("g++") is None or cuda_include is None:
        pytest.skip("g++ and the CUDA toolkit headers (cuda_fp16.h) are needed to build the kernels for the CPU")

    def flags(sanitizer: str, csrc: Path) -> list[str]:
        return ["-std=c++17", "-O1", "-g", *EMU_SANITIZERS[sanitizer], "-DI2NQ_MAX_BLOCKS=3", "-I", str(csrc),
                "-isystem", str(cuda_include), "-include", str(Path(__file__).with_name("emu") / "cuda_emu.h")]

    return flags


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Stand-in tensorrt and CuPy modules (tests/trt_standin.py) on one fake GPU, a private i2nq cache, no plugin
    library named, and a process that has registered no plugin library yet."""
    import sys

    from trt_standin import fake_cupy, fake_tensorrt

    from i2nq.plugins import gpu

    fake = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    monkeypatch.setenv("I2NQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("I2NQ_PLUGIN", raising=False)
    monkeypatch.setattr(gpu, "_REGISTERED", [])
    return fake
