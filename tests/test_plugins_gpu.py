"""The CUDA kernels through the torch extension against the torch reference (i2nq.plugins.selfcheck).

GPU tests are marked `gpu` and skipped without CUDA; the checker itself is exercised on the CPU, with the
reference standing in for the kernels and with planted faults it must catch."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from i2nq.plugins import selfcheck  # noqa: E402
from i2nq.plugins.selfcheck import (ReferenceOps, check_lut_dequant, check_nuquant, lut_cases,  # noqa: E402
                                    nuquant_cases)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_checker_passes_the_reference_on_cpu() -> None:
    cases = itertools.islice(nuquant_cases(n=301), 0, None, 5)
    assert [f for c in cases if (f := check_nuquant(c, ReferenceOps, "cpu"))] == []
    assert [f for c in itertools.islice(lut_cases(), 0, None, 7) if (f := check_lut_dequant(c, ReferenceOps, "cpu"))] \
        == []


class _UpperOnTies(ReferenceOps):
    """Takes the upper level on a tie: the kind of off-by-one the checks exist for."""

    @staticmethod
    def nuquant(x, levels, out=None):
        t = selfcheck.thresholds(levels)
        y = levels[torch.bucketize(x, t, right=True).masked_fill_(torch.isnan(x), 0)]
        return out.copy_(y)


class _SkipsLast(ReferenceOps):
    @staticmethod
    def lut_dequant(codes, levels, bits, shape, axis=0, out=None):
        w = ReferenceOps.lut_dequant(codes, levels, bits, shape, axis)
        out.reshape(-1)[:-1].copy_(w.reshape(-1)[:-1])
        return out


def test_checker_catches_planted_faults() -> None:
    tie_case = next(c for c in nuquant_cases(n=301) if c.k == 9)
    assert "differ" in check_nuquant(tie_case, _UpperOnTies, "cpu")
    assert "differ" in check_lut_dequant(next(lut_cases()), _SkipsLast, "cpu")


@pytest.mark.gpu
@cuda
def test_kernels_match_reference_bit_for_bit() -> None:
    from i2nq.plugins import torch_ops

    assert torch_ops.available(), "the torch extension did not build (see the warning)"
    assert selfcheck.run_all(torch_ops) == []


@pytest.mark.gpu
@cuda
def test_kernels_reject_bad_arguments() -> None:
    from i2nq.plugins import torch_ops

    x = torch.randn(10, device="cuda")
    with pytest.raises(RuntimeError, match="1 to 256"):
        torch_ops.nuquant(x, torch.zeros(257, device="cuda"))
    with pytest.raises(RuntimeError, match="dtype"):
        torch_ops.nuquant(x, torch.zeros(4, device="cuda", dtype=torch.float16))
    codes = torch.zeros(3, dtype=torch.uint8, device="cuda")
    with pytest.raises(RuntimeError, match="lut_dequant"):
        torch_ops.lut_dequant(codes, torch.zeros(16, device="cuda"), 4, (100,))  # 3 bytes cannot hold 100 codes
