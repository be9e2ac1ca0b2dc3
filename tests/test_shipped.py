"""The shipped models: present, loadable by name, and the shipped ONNX equals a fresh export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from i2nq.assets import shipped_model
from onnx_equiv import assert_equivalent


QUANTIZED = {"default": 4, "default-x2": 2, "animevideov3-x4-w4a4": 4, "animevideov3-x2-w4a4": 2}  # I²NQ W4A4, scale
RECEPTIVE_FIELD = {"default": "21", "default-x2": "20",  # 20.125 and 19.75 input pixels
                   "animevideov3-x4-w4a4": "19", "animevideov3-x2-w4a4": "19"}  # measured (Compact: 18 convs)
# ONNX Runtime vs torch, dB. Compact is 16 plain 4-bit layers: a value that lands within rounding of a threshold
# takes the other code in one runtime's convolution arithmetic and the flip spreads through the later layers
# (measured 52.4 dB on this image; the EDSR blocks' residual paths damp it: >= 121 dB)
MIN_PSNR = {"animevideov3-x4-w4a4": 45, "animevideov3-x2-w4a4": 45}


def test_shipped_models_load_by_name():
    from i2nq.assets import model_names
    from i2nq.models import load

    assert model_names() == ["animevideov3-x2-w4a4", "animevideov3-x4-w4a4", "default", "default-fp32", "default-x2"]
    q, f, q2 = load("default"), load("default-fp32"), load("default-x2")
    assert q.info.bits == q2.info.bits == "w4a4" and q.quant_config["method"] == q2.quant_config["method"] == "i2nq"
    assert f.info.bits == "fp32" and (q.info.arch, q.info.scale) == (f.info.arch, f.info.scale) == ("edsr-small", 4)
    assert (q2.info.arch, q2.info.scale) == ("edsr-small", 2)


@pytest.mark.parametrize("name", QUANTIZED)
def test_shipped_onnx_equals_a_fresh_export_of_the_shipped_checkpoint(name):
    from i2nq.export.onnx_export import to_onnx
    from i2nq.models import load

    shipped = onnx.load(str(shipped_model(name, ".onnx")))
    fresh = to_onnx(load(name))
    meta = {p.key: p.value for p in shipped.metadata_props}
    assert meta["i2nq.bits"] == "w4a4" and meta["i2nq.scale"] == str(QUANTIZED[name])
    assert meta["i2nq.receptive_field"] == RECEPTIVE_FIELD[name]
    # the version stamp may move on; the graph, functions and metadata must be identical, and the numbers too
    # up to the last bits that exp/softplus round differently on other CPUs
    assert_equivalent(shipped, fresh)


def test_equivalence_check_catches_real_differences():
    """The comparison above must fail on a changed level, a changed code or a changed node."""
    from onnx import helper, numpy_helper

    from i2nq.export.ops import body_attributes

    shipped = onnx.load(str(shipped_model("default", ".onnx")))

    def changed(edit) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(shipped)
        edit(m)
        return m

    def bump(name: str, delta) -> callable:
        def edit(m):
            t = next(t for t in m.graph.initializer if t.name == name)
            a = numpy_helper.to_array(t).copy()
            a.reshape(-1)[: a.size // 50 + 1] += delta
            t.CopyFrom(numpy_helper.from_array(a, name))
        return edit

    levels = next(t.name for t in shipped.graph.initializer if t.name.endswith("act_levels"))
    codes = next(t.name for t in shipped.graph.initializer if t.name.endswith("weight_codes"))
    assert_equivalent(shipped, changed(lambda m: None))

    def one_ulp(m):  # what another CPU's softplus does: every level of every codebook one ulp up, and the
        for t in m.graph.initializer:  # NUQuant nodes' grid tables made from those levels, as its export would
            if t.name.endswith("levels"):
                a = numpy_helper.to_array(t)
                t.CopyFrom(numpy_helper.from_array(np.nextafter(a, np.float32(np.inf)), t.name))
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        for node in m.graph.node:
            if node.op_type == "NUQuant":
                kept = [a for a in node.attribute if not a.name.startswith("grid_")]
                del node.attribute[:]
                node.attribute.extend(kept + [helper.make_attribute(k, v) for k, v in
                                              body_attributes("grid", inits[node.input[1]], 1).items()])

    assert_equivalent(shipped, changed(one_ulp))
    for edit in (bump(levels, np.float32(1e-3)), bump(codes, np.uint8(1)),
                 lambda m: setattr(m.graph.node[3], "op_type", "Relu")):
        with pytest.raises(AssertionError):
            assert_equivalent(shipped, changed(edit))

    def stale_table(m):  # a grid table that does not belong to the node's levels
        node = next(n for n in m.graph.node if n.op_type == "NUQuant")
        codes = next(a for a in node.attribute if a.name == "grid_codes")
        codes.ints[len(codes.ints) // 2] += 1

    with pytest.raises(AssertionError, match="codebook tables"):
        assert_equivalent(shipped, changed(stale_table))


@pytest.mark.parametrize("name", QUANTIZED)
def test_shipped_onnx_matches_torch_on_a_real_image(name):
    import onnxruntime as ort
    import torch
    import cv2

    from i2nq.assets import sample
    from i2nq.models import load

    bgr = cv2.imread(str(sample("sample.png")))
    x = np.ascontiguousarray(bgr[::4, ::4, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255
    sess = ort.InferenceSession(str(shipped_model(name, ".onnx")), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0]
    model = load(name)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    mse = float(((y - ref) ** 2).mean())
    assert mse == 0 or 10 * np.log10(1 / mse) >= MIN_PSNR.get(name, 60)
    # the stricter check, independent of convolution arithmetic: every NUQuant node in ONNX Runtime gave the
    # tie rule's code for the values it received
    from i2nq.export.verify import verify_onnx

    report = verify_onnx(shipped_model(name, ".onnx"), model, inputs=[x[..., :24, :32]], runtimes=("onnxruntime",))
    assert report.ok, report.lines()


@pytest.mark.parametrize("name", QUANTIZED)
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_tiled_equals_whole_frame_with_the_shipped_model(backend, name):
    """Real custom-op model, overlap = receptive field: tiles must reproduce the whole frame."""
    from i2nq.runtime import Upscaler

    rng = np.random.default_rng(0)
    import cv2

    img = cv2.GaussianBlur(rng.integers(0, 256, (71, 97, 3), dtype=np.uint8), (3, 3), 0)
    whole = Upscaler(name, backend=backend, device="cpu", tile=0).upscale(img)
    tiled = Upscaler(name, backend=backend, device="cpu", tile=48, batch=3).upscale(img)
    assert whole.shape == (71 * QUANTIZED[name], 97 * QUANTIZED[name], 3)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3
