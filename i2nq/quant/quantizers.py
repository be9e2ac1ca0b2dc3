"""Quantizers as small modules: per-site activation quantizers and the FSWA weight quantizer."""

from __future__ import annotations

import copy

import torch
from torch import nn

from i2nq.quant.codebook import Codebook
from i2nq.quant.functional import codes, nuquant, nuquant_ref

OBSERVE_PER_CALL = 2**15
OBSERVE_MAX = 2**19


class ActQuantizer(nn.Module):
    """One activation site with its own codebook (inter-nonuniform: no site shares levels).

    While `observing`, it passes values through unchanged and keeps a random subsample for
    calibration; `finish_calibration` fits the codebook to it.
    """

    def __init__(self, codebook: Codebook) -> None:
        super().__init__()
        self.codebook = codebook
        self.observing = False
        self.generator: torch.Generator | None = None  # draws the subsample while observing (calibrate_ sets it)
        self._samples: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            flat = x.detach().reshape(-1)
            if flat.numel() > OBSERVE_PER_CALL:
                pick = torch.randint(0, flat.numel(), (OBSERVE_PER_CALL,), generator=self.generator)
                flat = flat[pick.to(flat.device)]
            if sum(s.numel() for s in self._samples) < OBSERVE_MAX:
                self._samples.append(flat.float().cpu())
            return x
        levels = self.codebook.levels()
        if x.is_cuda and not torch.is_grad_enabled():
            from i2nq.plugins import torch_ops

            if torch_ops.available():
                return torch_ops.nuquant(x, levels.to(x.dtype))
        return nuquant(x, levels)

    def finish_calibration(self) -> torch.Tensor:
        """Fit the codebook to the collected samples; a site whose inputs were all >= 0 (post-ReLU and other
        non-negative features) keeps an exact zero level."""
        if not self._samples:
            raise RuntimeError("activation quantizer saw no data during calibration")
        samples = torch.cat(self._samples)
        finite = samples[torch.isfinite(samples)]
        if finite.numel() and float(finite.min()) >= 0:
            self.codebook.pin_zero()
        self.codebook.fit(samples)
        self._samples, self.observing = [], False
        return samples


class WeightQuantizer(nn.Module):
    """FSWA weight quantizer: W_hat = s_c * Q(W / s_c) with a per-layer normalized codebook Q and a
    flexible, learnable per-output-channel scale s_c.

    With `fswa`, s_c starts from an MSE search over candidate scales, alternated with refitting the
    codebook, and is learned in QAT; without it, s_c is fixed at the channel's max |W|.
    """

    def __init__(self, codebook: Codebook, out_channels: int, fswa: bool = True) -> None:
        super().__init__()
        self.codebook, self.fswa = codebook, fswa
        self.log_scale = nn.Parameter(torch.zeros(out_channels), requires_grad=fswa)

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self.scale().view(-1, *([1] * (w.dim() - 1)))
        return nuquant(w / s, self.codebook.levels()) * s

    def export(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes uint8 shaped like w, per-channel levels [C, K] with the scale folded in)."""
        with torch.no_grad():
            s = self.scale()
            levels = self.codebook.levels()
            c = codes(w / s.view(-1, *([1] * (w.dim() - 1))), levels)
            return c.to(torch.uint8), s[:, None] * levels[None, :]

    @torch.no_grad()
    def fit(self, w: torch.Tensor, rounds: int = 3) -> None:
        """Initialize scales and codebook from the float weights: max-abs scales, then (FSWA) `rounds` of a
        per-channel scale search alternated with refitting the codebook, keeping the state with the least weight
        MSE (so FSWA never starts worse than max-abs scales)."""
        flat = w.detach().reshape(w.shape[0], -1).float()
        maxabs = flat.abs().amax(1).clamp(min=1e-8)
        self.log_scale.copy_(maxabs.log())
        self.codebook.fit(flat / maxabs[:, None])
        if not self.fswa:
            return
        best = (self.weight_mse(w), copy.deepcopy(self.state_dict()))
        for _ in range(rounds):
            for step in (lambda: self.log_scale.copy_(self._search_scales(flat, maxabs).log()),
                         lambda: self.codebook.fit(flat / self.scale()[:, None])):
                step()
                mse = self.weight_mse(w)
                if mse < best[0]:
                    best = (mse, copy.deepcopy(self.state_dict()))
        self.load_state_dict(best[1])

    def _search_scales(self, flat: torch.Tensor, maxabs: torch.Tensor) -> torch.Tensor:
        """Per channel, the candidate scale (a fraction of max |W|) with the least quantization MSE."""
        levels = self.codebook.levels().detach()
        best_err = torch.full_like(maxabs, float("inf"))
        best = maxabs.clone()
        # the codebook's outer level is not 1 in general: search scales around max|W| / max|L|
        norm = float(levels.abs().max())
        for frac in torch.linspace(0.3, 1.3, 41).tolist():
            s = maxabs * frac / norm
            q = nuquant_ref(flat / s[:, None], levels) * s[:, None]
            err = ((q - flat) ** 2).sum(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, s, best)
        return best

    def weight_mse(self, w: torch.Tensor) -> float:
        with torch.no_grad():
            return float(((self(w) - w) ** 2).mean())


def code_entropy(c: torch.Tensor, k: int) -> float:
    """Entropy in bits of the code histogram: level usage ('diversity'); log2(k) is the maximum."""
    p = torch.bincount(c.reshape(-1).long(), minlength=k).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())


__all__ = ["ActQuantizer", "WeightQuantizer", "code_entropy"]
