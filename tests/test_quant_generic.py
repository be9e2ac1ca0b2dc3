"""One generic path for any architecture: quantize_ by a rule over the module graph, checkpoints, ONNX export traced
by torch's exporter, and the measured receptive field (small random spandrel networks stand in for real ones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from i2nq.export.verify import sample_inputs, verify_onnx
from i2nq.models import load, save
from i2nq.models.receptive import measure_receptive_field
from i2nq.models.spandrel_models import wrap_module
from i2nq.quant import (I2NQConfig, UniformConfig, calibrate_, quantize_, quantized_sites, site_record)
from i2nq.quant.api import conv_run_order

NETS = {  # small versions of the three architectures users bring
    "Compact": dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, upscale=2, act_type="prelu"),
    "CompactReLU": dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, upscale=2, act_type="relu"),
    "SPAN": dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
    "ESRGAN": dict(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2),
}


def net(kind: str, seed: int = 0):
    from i2nq.models.spandrel_models import architecture_class

    arch = "Compact" if kind.startswith("Compact") else kind
    torch.manual_seed(seed)
    module = architecture_class(arch)(**NETS[kind])
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(0.5)
    return wrap_module(arch, NETS[kind], module.state_dict(), kind)


def calibrated(kind: str, config=None):
    model = quantize_(net(kind), config or I2NQConfig(bits=4))
    calibrate_(model, [torch.from_numpy(x) for x in sample_inputs(((24, 24), (20, 28)))])
    return model.eval()


@pytest.mark.parametrize("kind", list(NETS))
def test_default_rule_keeps_head_and_tail_float(kind):
    model = net(kind)
    order = conv_run_order(model)
    quantize_(model, I2NQConfig(bits=4))
    sites = [name for name, _ in quantized_sites(model)]
    assert sorted(sites) == sorted(order[1:-1]) and len(sites) >= 3
    assert isinstance(model.get_submodule(order[0]), nn.Conv2d)  # head
    assert isinstance(model.get_submodule(order[-1]), nn.Conv2d)  # tail


def test_filter_fn_chooses_sites():
    model = quantize_(net("Compact"), I2NQConfig(bits=3), filter_fn=lambda conv, name: name == "net.body.4")
    assert [n for n, _ in quantized_sites(model)] == ["net.body.4"]


def test_nonnegative_sites_pin_an_exact_zero_level():
    relu, prelu = calibrated("CompactReLU"), calibrated("Compact")
    assert all(r["zero_level"] for r in site_record(relu).values())  # every quantized conv reads a ReLU output
    assert not any(r["zero_level"] for r in site_record(prelu).values())
    for _, m in quantized_sites(relu):
        assert float(m.act_quant.codebook.levels()[0]) == 0.0 and not m.act_quant.codebook.first.requires_grad


@pytest.mark.parametrize("config", [I2NQConfig(bits=2), UniformConfig(bits=3)])
@pytest.mark.parametrize("kind", ["Compact", "SPAN", "ESRGAN"])
def test_quantized_checkpoint_round_trip(kind, config, tmp_path):
    model = calibrated(kind, config)
    path = save(model, tmp_path / "q.safetensors")
    again = load(path)
    assert again.arch == model.arch and site_record(again) == site_record(model)
    x = torch.from_numpy(sample_inputs(((15, 17),))[0])
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


@pytest.fixture(scope="module")
def exported():
    """Each architecture quantized at W4A4 and exported (portable) once for the module's tests."""
    from i2nq.export import to_onnx

    models = {kind: calibrated(kind) for kind in ("Compact", "CompactReLU", "SPAN", "ESRGAN")}
    return {kind: (m, to_onnx(m)) for kind, m in models.items()}


@pytest.mark.parametrize("kind", ["Compact", "CompactReLU", "SPAN", "ESRGAN"])
def test_generic_export_equals_torch_in_onnxruntime(exported, kind):
    model, proto = exported[kind]
    report = verify_onnx(proto, model, runtimes=("onnxruntime",))
    for row in report.rows:
        assert row.psnr > 100 and row.max_abs < 1e-5, row.line()
        assert row.codes_identical >= 0.9999 and row.body_exact, row.line()
    sites = [n for n in proto.graph.node if n.op_type == "NUQuant"]
    assert len(sites) == len(list(quantized_sites(model)))
    assert {n.output[0] for n in sites} == {f"{name}.act_q" for name, _ in quantized_sites(model)}


def test_relus_before_zero_pinned_sites_are_dropped(exported):
    _, proto = exported["CompactReLU"]
    quantizers = {n.input[0] for n in proto.graph.node if n.op_type == "NUQuant"}
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    assert relus and not any(r.output[0] in quantizers for r in relus)  # kept only where a float conv reads it


def test_tensorrt_flavor_has_constant_fp16_weights_and_only_nuquant(exported):
    from onnx import TensorProto, numpy_helper

    from i2nq.export import to_onnx

    model, _ = exported["SPAN"]
    proto = to_onnx(model, flavor="tensorrt")
    assert {n.op_type for n in proto.graph.node if n.domain == "ai.i2nq"} == {"NUQuant"}
    assert [f.name for f in proto.functions] == ["NUQuant"]
    inits = {t.name: t for t in proto.graph.initializer}
    for name, conv in quantized_sites(model):
        codes, levels = conv.weight_quant.export(conv.weight)
        want = levels.half()[torch.arange(codes.shape[0])[:, None], codes.reshape(codes.shape[0], -1).long()]
        conv_node = next(n for n in proto.graph.node if n.op_type == "Conv" and n.input[0] == f"{name}.act_q")
        weight = inits[conv_node.input[1]]
        assert weight.data_type == TensorProto.FLOAT16
        assert np.array_equal(numpy_helper.to_array(weight).reshape(want.shape), want.numpy())


# --- receptive field -----------------------------------------------------------------------------------------

class Stack(nn.Module):
    def __init__(self, convs: int, kernel: int = 3, dilation: int = 1, pool: bool = False) -> None:
        super().__init__()
        pad = dilation * (kernel // 2)
        self.convs = nn.Sequential(*[nn.Conv2d(3, 3, kernel, padding=pad, dilation=dilation) for _ in range(convs)])
        self.pool = pool

    def forward(self, x):
        y = self.convs(x)
        return y + y.mean((2, 3), keepdim=True) if self.pool else y


@pytest.mark.parametrize("convs, kernel, dilation, radius", [(1, 3, 1, 1), (4, 3, 1, 4), (2, 5, 1, 4), (3, 3, 2, 6)])
def test_receptive_field_is_measured(convs, kernel, dilation, radius):
    with torch.no_grad():
        model = Stack(convs, kernel, dilation)
        for c in model.convs:
            c.weight.zero_()  # zero weights still carry the dependence: NaN * 0 is NaN
    assert measure_receptive_field(model, scale=1) == radius


def test_global_pooling_is_unbounded():
    assert measure_receptive_field(Stack(1, pool=True), scale=1) is None


@pytest.mark.parametrize("arch, scale, radius", [("edsr-small", 4, 21), ("edsr-small", 2, 20), ("edsr-small", 3, 20),
                                                 ("srresnet", 4, 36)])
def test_receptive_field_of_our_archs(arch, scale, radius):
    """EDSR-small x4: 1 head + 17 body + 1 + 2 tail convs at their resolutions and 0.375 px from PixelShuffle =
    20.125 input px; rounded up."""
    from i2nq.models import build

    assert build(arch, scale).receptive_field == radius


@pytest.mark.parametrize("kind", ["Compact", "SPAN"])
def test_quantized_model_has_its_parents_receptive_field(kind):
    assert calibrated(kind).info.receptive_field == net(kind).info.receptive_field


def test_calibration_is_deterministic_whatever_the_global_rng():
    """Two calibrations of the same model on the same batches give the same codebooks, however the process's
    random state was used before (the subsample is drawn from calibrate_'s own seeded generator)."""
    batches = [torch.from_numpy(x) for x in sample_inputs(((96, 96), (80, 112)))]  # > OBSERVE_PER_CALL values a site
    levels = []
    for draw in (0, 5):
        model = quantize_(net("Compact"), I2NQConfig(bits=3))  # net() seeds the global RNG ...
        torch.rand(draw)  # ... which is then moved differently before each calibration
        calibrate_(model, batches)
        levels.append(torch.cat([m.act_quant.codebook.levels().detach() for _, m in quantized_sites(model)]))
    assert torch.equal(levels[0], levels[1])


def test_a_model_the_exporter_cannot_trace_is_a_one_line_error():
    from i2nq.errors import I2NQError
    from i2nq.export import to_onnx

    class DataDependent(nn.Module):
        scale, arch, quant_config, size_multiple = 1, "test", None, 1

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x) if float(x.mean()) > 0.5 else x  # control flow on data: not traceable

        @property
        def info(self):
            from i2nq.models.info import ModelInfo

            return ModelInfo("test", 1, "fp32", 1)

    with pytest.raises(I2NQError, match="cannot trace test") as err:
        to_onnx(DataDependent())
    assert "\n" not in str(err.value)
