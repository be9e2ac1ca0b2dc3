"""ONNX export: checker, ONNX Runtime == torch, exact function bodies, a torch-free consumer, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from i2nq.cli import main
from i2nq.export import to_onnx
from i2nq.export.ops import (DOMAIN, GRID_MAX_BUCKETS, ML_DOMAIN, ML_OPSET, NUQUANT_BODIES, body_attributes,
                             custom_node, grid_comparisons, lut_dequant_function, nuquant_function)
from i2nq.export.verify import reference_evaluator, sample_inputs
from i2nq.models import build, save
from i2nq.quant import I2NQConfig, calibrate_, nuquant_ref, pack_codes, quantize_, quantized_sites

ort = pytest.importorskip("onnxruntime")
EXACT_BODIES = ("grid", "tree", "select", "bsearch", "count")
FLOAT32_BODIES = ("grid", "tree")  # they read the codebook from node attributes; fp16 graphs get select


def tiny(bits: int | None, scale: int = 2, arch: str = "edsr-small", seed: int = 0, **overrides):
    """A small calibrated model with perturbed (non-trivial) weights and codebooks."""
    torch.manual_seed(seed)
    model = build(arch, scale, **{"n_blocks": 2, "n_feats": 8, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if bits:
        quantize_(model, I2NQConfig(bits=bits))
        calibrate_(model, [torch.rand(2, 3, 20, 20)])
        with torch.no_grad():
            for _, m in quantized_sites(model):
                cb = m.act_quant.codebook
                levels = cb.levels()
                cb.set_levels(levels + torch.rand_like(levels) * 0.1 * (levels[1:] - levels[:-1]).min())
    return model.eval()


def session(proto: onnx.ModelProto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return np.inf if mse == 0 else 10 * np.log10(1 / mse)


@pytest.fixture(scope="module")
def models() -> dict[int | None, torch.nn.Module]:
    return {bits: tiny(bits) for bits in (None, 2, 3, 4)}


_EXPORTS: dict[tuple, onnx.ModelProto] = {}


def exported(model: torch.nn.Module, flavor: str = "portable", opset: int | None = None) -> onnx.ModelProto:
    """to_onnx, once per model object, flavor and opset in this module (a trace takes seconds)."""
    key = (id(model), flavor, opset)
    if key not in _EXPORTS:
        _EXPORTS[key] = to_onnx(model, flavor=flavor, **({"opset": opset} if opset else {}))
    return _EXPORTS[key]


# --- graph, metadata, checker -------------------------------------------------------------------------------

def test_checker_metadata_and_io(models) -> None:
    proto = exported(models[4])
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    info = models[4].info
    assert meta == {"i2nq.version": "0.1.0", "i2nq.arch": "edsr-small", "i2nq.scale": "2", "i2nq.bits": "w4a4",
                    "i2nq.input_layout": "NCHW;RGB;float[0,1]", "i2nq.receptive_field": str(info.receptive_field),
                    "i2nq.flavor": "portable", "i2nq.dtype": "float32"}
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "output")
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (inp, out)]
    assert dims == [["N", 3, "H", "W"], ["N", 3, "Hs", "Ws"]]
    custom = [n for n in proto.graph.node if n.domain == DOMAIN]
    assert sorted({n.op_type for n in custom}) == ["LUTDequant", "NUQuant"]
    sites = [name for name, _ in quantized_sites(models[4])]
    assert len(sites) == 2 * 2 + 2  # 2 blocks x 2 convs, the body's last conv, the upsampler's conv (not head, tail)
    assert sorted(n.output[0] for n in custom) == sorted([f"{s}.act_q" for s in sites] + [f"{s}.weight" for s in sites])
    for n in custom:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["plugin_namespace"] == b"i2nq" and attrs["plugin_version"] == b"1"
    assert {f.name for f in proto.functions} == {"NUQuant", "LUTDequant"}


def test_float_model_has_no_custom_nodes(models) -> None:
    proto = exported(models[None])
    onnx.checker.check_model(proto, full_check=True)
    assert not proto.functions and all(n.domain == "" for n in proto.graph.node)
    assert {p.key: p.value for p in proto.metadata_props}["i2nq.bits"] == "fp32"


def test_w4_file_is_much_smaller_than_float() -> None:
    float_model = build("edsr-small", 4)
    quant = quantize_(build("edsr-small", 4), I2NQConfig(bits=4), init_weights=False)
    sizes = [len(to_onnx(m).SerializeToString()) for m in (float_model, quant)]
    assert sizes[1] < 0.6 * sizes[0], sizes


# --- ONNX Runtime == torch ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [None, 2, 3, 4])
def test_onnxruntime_equals_torch(models, bits) -> None:
    model = models[bits]
    run = session(exported(model))
    rng = np.random.default_rng(1)
    inputs = sample_inputs(((13, 21), (8, 8))) + [rng.random((2, 3, 9, 14), dtype=np.float32)]
    for x in inputs:
        got = run.run(None, {"input": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == (x.shape[0], 3, 2 * x.shape[2], 2 * x.shape[3])
        assert psnr(got, want) > 100 and np.abs(got - want).max() < 1e-5


def test_relu_absorbed_by_a_nonnegative_quantizer_is_dropped(models) -> None:
    """A ReLU before a NUQuant whose levels are all >= 0 changes nothing, so the export drops it (and
    fold_relus_ drops it from a torch model): exactly the same output, torch vs torch and ORT vs torch."""
    import copy

    from i2nq.models.edsr import ResBlock, fold_relus_

    model = copy.deepcopy(models[3])
    blocks = [b for b in model.body if isinstance(b, ResBlock)]
    assert all(b.conv2.absorbs_relu() and not b.conv1.absorbs_relu() for b in blocks)  # zero-pinned vs signed
    with torch.no_grad():  # one block whose post-ReLU codebook dips below 0 keeps its ReLU
        cb = blocks[1].conv2.act_quant.codebook
        cb.zero_level = False
        cb.set_levels(cb.levels() - 0.5 * cb.levels()[1])
    assert not blocks[1].conv2.absorbs_relu()
    proto = to_onnx(model)
    producer = {n.output[0]: n for n in proto.graph.node}
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    assert len(relus) == 1 and [n.output[0] for n in proto.graph.node if relus[0].output[0] in n.input] == \
        ["body.1.conv2.act_q"]
    assert producer[next(n for n in proto.graph.node if n.output[0] == "body.0.conv2.act_q").input[0]].op_type == "Conv"
    x = np.random.default_rng(5).random((2, 3, 12, 15), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x))
        folded = fold_relus_(copy.deepcopy(model))
        assert isinstance(folded.body[0].act, torch.nn.Identity) and isinstance(folded.body[1].act, torch.nn.ReLU)
        assert torch.equal(folded(torch.from_numpy(x)), want)
    assert np.abs(session(proto).run(None, {"input": x})[0] - want.numpy()).max() < 1e-5


@pytest.mark.parametrize("scale, archs", [(3, ("edsr-small", "edsr", "srresnet")), (4, ("edsr-baseline", "srresnet"))])
def test_other_scales_and_the_no_skip_archs(scale, archs) -> None:
    """x3 and x4, EDSR without the bicubic skip, the paper's EDSR (residuals scaled by 0.1), SRResNet's LeakyReLU
    and bilinear skip; quantized, and one float."""
    for arch in archs:
        model = tiny(None if arch == "edsr-baseline" else 3, scale=scale, arch=arch, n_blocks=1)
        x = sample_inputs(((7, 10),))[0]
        got = session(to_onnx(model)).run(None, {"input": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_cubic_resize_matches_torch_bicubic_including_borders(scale) -> None:
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic", cubic_coeff_a=-0.75,
                            coordinate_transformation_mode="half_pixel", exclude_outside=0)
    graph = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "s")])
    run = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    x = np.random.default_rng(scale).random((1, 3, 6, 9), dtype=np.float32)
    x[..., 0, :] = 1.0  # a bright border row: replicate vs zero padding would differ
    want = F.interpolate(torch.from_numpy(x), scale_factor=scale, mode="bicubic", align_corners=False).numpy()
    assert np.abs(run.run(None, {"x": x})[0] - want).max() < 2e-6


@pytest.mark.parametrize("opset", [17, 23])
def test_opset_range_runs(models, opset) -> None:
    proto = exported(models[3], opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    x = sample_inputs(((6, 7),))[0]
    with torch.no_grad():
        want = models[3](torch.from_numpy(x)).numpy()
    assert np.abs(session(proto).run(None, {"input": x})[0] - want).max() < 1e-5


# --- the function bodies alone --------------------------------------------------------------------------------

def _nuquant_model(body: str, k: int, dtype: type, levels: np.ndarray | None = None) -> onnx.ModelProto:
    """One NUQuant node with the given body; the grid and tree bodies also need the levels (node attributes)."""
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    comparisons = grid_comparisons([levels]) if body == "grid" else 1
    attrs = body_attributes(body, levels, comparisons) if body in FLOAT32_BODIES else {}
    graph = helper.make_graph([custom_node("NUQuant", ["x", "levels"], ["y"], "q", **attrs)], "g",
                              [helper.make_tensor_value_info("x", elem, ["a", "b"]),
                               helper.make_tensor_value_info("levels", elem, [k])],
                              [helper.make_tensor_value_info("y", elem, ["a", "b"])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1),
                                                    helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
                              functions=[nuquant_function(k, 17, body, comparisons)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _adversarial(levels: np.ndarray, seed: int) -> np.ndarray:
    """Exact levels and thresholds, their float neighbours, beyond the ends, +-inf, NaN, signed zeros."""
    dt = levels.dtype.type
    t = ((levels[:-1] + levels[1:]) * dt(0.5)).astype(dt)
    up, down = (lambda v: np.nextafter(v, dt(np.inf))), (lambda v: np.nextafter(v, dt(-np.inf)))
    big = np.finfo(dt).max
    special = np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, big, -big, levels[0] - 1, levels[-1] + 1], dt)
    noise = (np.random.default_rng(seed).standard_normal(500) * float(levels[-1] - levels[0])).astype(dt)
    return np.concatenate([levels, t, up(t), down(t), up(levels), down(levels), special, noise]).astype(dt)


def _codebooks(dtype: type) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    books = [np.sort(rng.standard_normal(k)).astype(dtype) for k in (4, 8, 16)]
    books.append(np.concatenate([[0.0], np.cumsum(rng.random(15) * 0.05)]).astype(dtype))  # post-ReLU, L0 == 0
    if dtype == np.float16:
        books.append(np.array([0, 1, 1 + 2**-10, 1 + 2**-9], np.float16))  # sum needs rounding in fp16
        books.append((np.arange(8) * 3 * 2.0**-24).astype(np.float16))  # subnormal: the halving rounds
    else:
        books.append(np.array([-1e-30, 1e-30, 3.0, 3.0000002], np.float32))  # wide range + adjacent floats
    return [b for b in books if len(np.unique(b)) == len(b)]


@pytest.mark.parametrize("body, dtype", [(b, d) for b in EXACT_BODIES for d in (np.float32, np.float16)
                                         if not (b in FLOAT32_BODIES and d == np.float16)])
def test_nuquant_bodies_equal_torch_on_adversarial_values(body, dtype) -> None:
    """Bit-identical to nuquant_ref (NaN -> L_0, ties -> lower level) in ONNX Runtime and the reference
    evaluator; fp16 in ONNX Runtime works too, since the body rounds its fp16 intermediates explicitly (the grid
    and tree bodies are float32 only: fp16 graphs get the select body)."""
    for i, levels in enumerate(_codebooks(dtype)):
        x = _adversarial(levels, i).reshape(1, -1)
        want = nuquant_ref(torch.from_numpy(x), torch.from_numpy(levels)).numpy()
        proto = _nuquant_model(body, len(levels), dtype, levels)
        for got in (session(proto).run(None, {"x": x, "levels": levels})[0],
                    reference_evaluator(proto).run(None, {"x": x, "levels": levels})[0]):
            np.testing.assert_array_equal(got.view(np.uint16 if dtype == np.float16 else np.uint32),
                                          want.view(np.uint16 if dtype == np.float16 else np.uint32))


def _grid_codebooks() -> list[np.ndarray]:
    """Codebooks that need 1, 2 and 3 comparisons per bucket, large offsets, a huge range, duplicate levels."""
    rng = np.random.default_rng(3)
    return [np.array(v, np.float32) for v in (
        np.sort(rng.standard_normal(16)) * 3 + 1e6,  # far from 0: float32 spacing 0.0625 near the thresholds
        [-1000.0, 0.0, 1e-3, 2e-3],  # two thresholds within 1e-6 of the range: M = 2
        [-1000.0, 0.0, 1e-3, 2e-3, 3e-3, 4e3, 5e3, 6e3],  # three: M = 3
        [0.0, 0.0, 0.0, 1.0],  # duplicate levels: two equal thresholds, M = 2
        [-3e38, -1.0, 1.0, 3e38],  # x - offset would overflow float32 next to the last threshold: no grid
        [0.0, 2.0**-140, 2.0**-139, 1.0],  # subnormal thresholds, M = 2
        CLOSE_LEVELS,  # four thresholds within 3e-5 of a range of 2.5: no grid of <= 4096 buckets with M <= 3
    )]


CLOSE_LEVELS = [0.0, 1.0, 1 + 1e-5, 1 + 2e-5, 1 + 3e-5, 1 + 4e-5, 2.0, 3.0]
GRID_COMPARISONS = (1, 2, 3, 2, None, 2, None)  # what each of _grid_codebooks() needs (None: the tree)


@pytest.mark.parametrize("i", range(len(GRID_COMPARISONS)))
def test_grid_body_is_exact_or_falls_back(i) -> None:
    """Every codebook either gets a grid that is bit-identical to nuquant_ref on adversarial values and a dense
    sweep (in both runtimes), or grid_comparisons says no and the export falls back to the tree."""
    levels = _grid_codebooks()[i]
    m = grid_comparisons([levels])
    assert m == GRID_COMPARISONS[i]
    if m is None:
        return
    assert len(body_attributes("grid", levels, m)["grid_codes"]) <= GRID_MAX_BUCKETS
    x = np.concatenate([_adversarial(levels, i), np.linspace(levels[0] - 1, levels[-1] + 1, 20001, dtype=np.float32)])
    x = x.reshape(1, -1)
    want = nuquant_ref(torch.from_numpy(x), torch.from_numpy(levels)).numpy()
    proto = _nuquant_model("grid", len(levels), np.float32, levels)
    for got in (session(proto).run(None, {"x": x, "levels": levels})[0],
                reference_evaluator(proto).run(None, {"x": x, "levels": levels})[0]):
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_grid_export_falls_back_to_tree_for_close_thresholds(models) -> None:
    """A site whose thresholds no small grid separates makes the whole model use the tree body, still exact."""
    import copy

    model = copy.deepcopy(models[3])
    site = next(quantized_sites(model))[1]
    site.act_quant.codebook.set_levels(torch.tensor(CLOSE_LEVELS))
    for m, body in ((models[3], "grid"), (model, "tree")):
        proto = to_onnx(m)
        assert f"{body} body" in proto.functions[0].doc_string, proto.functions[0].doc_string
        x = sample_inputs(((9, 10),))[0]
        with torch.no_grad():
            want = m(torch.from_numpy(x)).numpy()
        assert np.abs(session(proto).run(None, {"input": x})[0] - want).max() < 1e-5


def test_argmin_body_is_not_exact_on_ties() -> None:
    levels = np.array([0.0, 0.1, 0.2, 0.7], np.float32)
    x = _adversarial(levels, 0).reshape(1, -1)
    got = session(_nuquant_model("argmin", 4, np.float32)).run(None, {"x": x, "levels": levels})[0]
    want = nuquant_ref(torch.from_numpy(x), torch.from_numpy(levels)).numpy()
    assert not np.array_equal(got, want, equal_nan=True)


def test_lut_body_needs_separated_thresholds() -> None:
    proto = _nuquant_model("lut", 4, np.float32)
    for levels, exact in ((np.array([-1.0, 0.0, 0.5, 2.0], np.float32), True),
                          (np.array([-1000.0, 0.0, 1e-3, 2e-3], np.float32), False)):
        x = _adversarial(levels, 0).reshape(1, -1)
        got = session(proto).run(None, {"x": x, "levels": levels})[0]
        want = nuquant_ref(torch.from_numpy(x), torch.from_numpy(levels)).numpy()
        assert np.array_equal(got, want, equal_nan=True) == exact


def test_bodies_list_is_complete() -> None:
    assert set(NUQUANT_BODIES) == set(EXACT_BODIES) | {"argmin", "lut"}
    assert set(FLOAT32_BODIES) <= set(EXACT_BODIES)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_lut_dequant_body_reproduces_unpack_and_lookup(bits) -> None:
    rng = np.random.default_rng(bits)
    k = 2**bits
    cases = [((5, 3, 3, 3), 0, (5, k)), ((7, 2, 3), 0, (k,)), ((4, 6), 1, (6, k)), ((11,), 0, (11, k))]
    for shape, axis, lshape in cases:
        codes = rng.integers(0, k, shape).astype(np.uint8)
        levels = rng.standard_normal(lshape).astype(np.float32)
        chan = np.indices(shape)[axis] if len(lshape) == 2 else None
        want = levels[chan, codes] if chan is not None else levels[codes]
        node = custom_node("LUTDequant", ["codes", "levels"], ["w"], "d", bits=bits, shape=list(shape), axis=axis)
        graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT, list(shape))],
                                  [numpy_helper.from_array(pack_codes(codes, bits), "codes"),
                                   numpy_helper.from_array(levels, "levels")])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                                  functions=[lut_dequant_function(17)], ir_version=8)
        onnx.checker.check_model(proto, full_check=True)
        np.testing.assert_array_equal(session(proto).run(None, {})[0], want)
        np.testing.assert_array_equal(reference_evaluator(proto).run(None, {})[0], want)


# --- flavors --------------------------------------------------------------------------------------------------

TENSORRT_OPS = {"Add", "Cast", "CastLike", "Concat", "Constant", "Conv", "DepthToSpace", "Div", "Floor", "Gather",
                "Greater", "Identity", "MatMul", "Max", "Mul", "Range", "ReduceProd", "Relu", "Reshape", "Resize",
                "Shape", "Size", "Slice", "Sub", "Unsqueeze", "Where"}  # onnx-tensorrt's supported-operator list


def test_tensorrt_flavor_is_fp16_with_constant_weights_and_only_tensorrt_ops(models) -> None:
    proto = exported(models[4], "tensorrt")
    onnx.checker.check_model(proto, full_check=True)
    f16 = TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == f16 == proto.graph.output[0].type.tensor_type.elem_type
    assert {p.key: p.value for p in proto.metadata_props}["i2nq.dtype"] == "float16"
    scales = {n.input[2] for n in proto.graph.node if n.op_type == "Resize"}  # Resize scales stay float32
    floats = [t for t in proto.graph.initializer if t.data_type in (TensorProto.FLOAT, f16) and t.name not in scales]
    assert {t.data_type for t in floats} == {f16}
    assert {n.op_type for n in proto.graph.node if n.domain == DOMAIN} == {"NUQuant"}  # weights are constants
    ops = {n.op_type for n in proto.graph.node if n.domain == ""}
    ops |= {n.op_type for f in proto.functions for n in f.node}
    assert ops <= TENSORRT_OPS, ops - TENSORRT_OPS
    x = sample_inputs(((8, 9),))[0]
    got = reference_evaluator(proto).run(None, {"input": x.astype(np.float16)})[0]
    with torch.no_grad():
        want = models[4](torch.from_numpy(x)).numpy()
    # fp16 activations move some values across a 4-bit decision boundary and the flips cascade through the net:
    # on this tiny random model it measures 39-45 dB over seeds 0-3 (and differs by BLAS), so the bound is loose;
    # a wrong graph (weights, levels or layout) lands far below it.
    assert got.dtype == np.float16 and psnr(got, want) > 33


# --- files, CLI, a consumer without i2nq or torch ----------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save(tiny(3, n_blocks=1), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


NO_I2NQ = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class Block(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "i2nq"):
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, Block())
    import json
    import numpy as np
    import onnxruntime as ort
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    x = np.load(sys.argv[2])
    y = session.run(None, {"input": x})[0]
    np.save(sys.argv[3], y)
    print(json.dumps({"scale": meta["i2nq.scale"], "shape": list(y.shape)}))
""")


def test_cli_export_runs_in_a_process_without_i2nq_and_torch(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(checkpoint), "-o", str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and printed.count("PSNR") == 4 and "NOT exact" not in printed
    x = sample_inputs(((9, 12),))[0]
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([sys.executable, "-c", NO_I2NQ, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"scale": "2", "shape": [1, 3, 18, 24]}
    from i2nq.models import load

    with torch.no_grad():
        want = load(checkpoint)(torch.from_numpy(x)).numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - want).max() < 1e-5


def _bad(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("i2nq: error: ") and "\n" not in err, err
    return err


def test_bad_inputs_give_one_line_errors_and_no_partial_files(checkpoint, tmp_path, capsys) -> None:
    (tmp_path / "random.safetensors").write_bytes(np.random.default_rng(0).bytes(3000))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / "out.onnx")
    before = {p.name for p in tmp_path.iterdir()}
    assert "not found" in _bad(["export-onnx", str(tmp_path / "missing.safetensors"), "-o", out], capsys)
    assert "not a readable" in _bad(["export-onnx", str(tmp_path / "random.safetensors"), "-o", out], capsys)
    assert "not a model architecture" in _bad(["export-onnx", str(tmp_path / "plain.safetensors"), "-o", out], capsys)
    assert "unknown model" in _bad(["export-onnx", "no-such-model", "-o", out], capsys)
    _bad(["export-onnx", str(checkpoint), "-o", str(tmp_path / "file" / "m.onnx")], capsys)  # parent is a file
    _bad(["export-onnx", str(checkpoint), "-o", str(tmp_path / "missing" / "m.onnx")], capsys)
    _bad(["export-onnx", str(checkpoint), "-o", str(tmp_path / "m.txt")], capsys)
    for opset in ("14", "99"):
        assert "unsupported opset" in _bad(["export-onnx", str(checkpoint), "-o", out, "--opset", opset], capsys)
    assert {p.name for p in tmp_path.iterdir()} == before
    assert main(["export-onnx", str(checkpoint), "-o", out]) == 0
    assert "exists" in _bad(["export-onnx", str(checkpoint), "-o", out], capsys)
    assert main(["export-onnx", str(checkpoint), "-o", out, "--overwrite", "--flavor", "tensorrt"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == before | {"out.onnx"}


def test_failed_write_leaves_no_temp_file(checkpoint, tmp_path, monkeypatch) -> None:
    from i2nq.errors import I2NQError
    from i2nq.export import onnx_export

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_export.os, "replace", broken)
    monkeypatch.setattr(onnx_export.os, "link", lambda src, dst, **kw: broken(src, dst))  # a new file is linked
    with pytest.raises(I2NQError, match="(?i)no space left"):
        onnx_export.export_onnx(checkpoint, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
