"""Quantizer math: tie rule, STE, sorted codebooks, Lloyd-Max, packing, FSWA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from i2nq.quant import (NonuniformCodebook, UniformCodebook, WeightQuantizer, codes, lloyd_max, nuquant,
                        nuquant_ref, pack_codes, thresholds, unpack_codes)


def brute_force_codes(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Nearest level by float64 distance, ties to the lower level, NaN to level 0."""
    d = (x.double().clamp(-1e6, 1e6)[..., None] - levels.double()).abs()
    c = torch.argmin(d, dim=-1)  # argmin returns the first (lower) index on ties
    return c.masked_fill(torch.isnan(x), 0)


@pytest.mark.parametrize("k", [4, 8, 16, 256])
def test_codes_equal_brute_force_with_ties(k):
    g = torch.Generator().manual_seed(k)
    # dyadic levels make every midpoint exact in float32, so ties are real ties
    levels = torch.unique(torch.randint(-4096, 4096, (k * 3,), generator=g))[:k].float() / 1024
    assert levels.numel() == k
    t = thresholds(levels)
    x = torch.cat([torch.randn(5000, generator=g) * 3, levels, t, levels - 1e-3, t + 1e-6,
                   torch.tensor([levels[0] - 100, levels[-1] + 100, float("inf"), -float("inf"), float("nan")])])
    got = codes(x, levels)
    assert torch.equal(got, brute_force_codes(x, levels))
    assert torch.equal(codes(t, levels), torch.arange(k - 1))  # a value on a threshold takes the lower level
    assert torch.equal(nuquant_ref(x, levels), levels[got])


def test_codes_random_levels_fp16():
    g = torch.Generator().manual_seed(1)
    levels = torch.sort(torch.randn(16, generator=g)).values.half()
    x = torch.cat([torch.randn(4096, generator=g).half(), thresholds(levels), levels])
    c = codes(x, levels)
    t = thresholds(levels)  # computed in fp16, as the fp16 ONNX body and kernels do
    expect = (x[:, None] > t[None, :]).sum(1)
    assert torch.equal(c, expect)


def test_ste_gradients():
    levels = torch.tensor([-1.0, 0.0, 0.5, 2.0], requires_grad=True)
    x = torch.tensor([-3.0, -1.0, -0.4, 0.2, 0.3, 1.0, 2.0, 5.0], requires_grad=True)
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    y = nuquant(x, levels)
    assert torch.equal(y.detach(), torch.tensor([-1.0, -1.0, 0.0, 0.0, 0.5, 0.5, 2.0, 2.0]))
    y.backward(g)
    # dy/dx = 1 inside [L0, L_{K-1}] (ends included), 0 outside
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0]))
    # each level receives the summed gradient of the elements assigned to it
    assert torch.equal(levels.grad, torch.tensor([1.0 + 2.0, 3.0 + 4.0, 5.0 + 6.0, 7.0 + 8.0]))


@pytest.mark.parametrize("cb", [NonuniformCodebook(8), NonuniformCodebook(4, zero_level=True),
                                UniformCodebook(8), UniformCodebook(4, zero_level=True)])
def test_levels_stay_sorted_through_training(cb):
    opt = torch.optim.Adam(cb.parameters(), lr=0.2)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = torch.randn(512, generator=g) * 2
        target = torch.randn(512, generator=g) * 4  # adversarial: pushes levels every which way
        loss = ((nuquant(x, cb.levels()) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lv = cb.levels().detach()
        assert torch.all(lv[1:] > lv[:-1]), lv
        if cb.zero_level:
            assert lv[0].item() == 0.0


def test_lloyd_max_gaussian_and_zero_level():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(200_000, generator=g)
    lv = lloyd_max(s, 4)
    # the Lloyd-Max quantizer of N(0, 1) with 4 levels: +-0.4528, +-1.510
    assert torch.allclose(lv, torch.tensor([-1.510, -0.4528, 0.4528, 1.510]), atol=0.02)
    r = torch.relu(torch.randn(100_000, generator=g))
    lz = lloyd_max(r, 4, zero_level=True)
    assert lz[0].item() == 0.0 and torch.all(lz[1:] > lz[:-1])
    # with about half exact zeros, L0 = 0 reproduces them exactly
    assert torch.equal(nuquant_ref(torch.zeros(3), lz), torch.zeros(3))


def test_nonuniform_beats_uniform_mse_on_bell_shaped_data():
    torch.manual_seed(0)
    s = torch.distributions.Laplace(0.0, 1.0).sample((100_000,))
    nu, un = NonuniformCodebook(8), UniformCodebook(8)
    nu.fit(s)
    un.fit(s)
    mse = lambda cb: float(((nuquant_ref(s, cb.levels().detach()) - s) ** 2).mean())
    assert mse(nu) < mse(un)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 1001])
def test_packing_round_trip(bits, n):
    rng = np.random.default_rng(bits * 1000 + n)
    c = rng.integers(0, 2**bits, n).astype(np.uint8)
    packed = pack_codes(c, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-n * bits // 8)
    assert np.array_equal(unpack_codes(packed, bits, n), c)


def test_packing_layout_is_lsb_first():
    # 3-bit codes 1..7,0 in a little-endian bit stream, straddling bytes
    assert pack_codes(np.array([1, 2, 3, 4, 5, 6, 7, 0]), 3).tolist() == [209, 88, 31]
    assert pack_codes(np.array([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert pack_codes(np.array([0xA, 0x5]), 4).tolist() == [0x5A]


def test_packing_rejects_bad_input():
    with pytest.raises(ValueError):
        pack_codes(np.array([4]), 2)
    with pytest.raises(ValueError):
        pack_codes(np.array([1]), 5)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_fswa_lowers_weight_mse_against_maxabs_scale(bits):
    torch.manual_seed(bits)
    # conv weights: bell-shaped with a few outliers, channel scales differing 10x
    w = torch.distributions.StudentT(4.0).sample((32, 32, 3, 3)) * torch.logspace(-2, -1, 32)[:, None, None, None]
    k = 2**bits
    fswa, maxabs = WeightQuantizer(NonuniformCodebook(k), 32, fswa=True), WeightQuantizer(NonuniformCodebook(k), 32, fswa=False)
    fswa.fit(w)
    maxabs.fit(w)
    assert fswa.weight_mse(w) < 0.97 * maxabs.weight_mse(w)
    # export reproduces the quantized weight exactly: levels[c, code]
    c, lv = fswa.export(w)
    rebuilt = torch.gather(lv, 1, c.reshape(32, -1).long()).reshape(w.shape)
    assert torch.equal(rebuilt, fswa(w).detach())
