"""Resumable training state: data only (a planted pickle never runs), resumed only by the same run."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from i2nq.calib.data import PairSet
from i2nq.calib.state import state_path_for
from i2nq.calib.train import TrainConfig, fit
from i2nq.models import build


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant_pickle(path, marker) -> None:
    path.write_bytes(pickle.dumps({"model": _Payload(str(marker)), "step": 1}))


def data() -> PairSet:
    g = torch.Generator().manual_seed(1)
    return PairSet.from_images([torch.rand(3, 40, 48, generator=g) for _ in range(2)], 2)


def model(n_feats: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("edsr-small", 2, n_blocks=1, n_feats=n_feats)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 4, "batch": 2, "lr_patch": 8, "save_every": 2, "log_every": 100, **kw})


def test_state_path_default():
    assert state_path_for("runs/w4.safetensors").name == "w4.state.safetensors"


@pytest.mark.parametrize("name", ["w4.state.safetensors", "w4.state.pt"])
def test_a_planted_pickle_never_runs(tmp_path, name):
    marker = tmp_path / "pwned"
    state = tmp_path / name
    plant_pickle(state, marker)
    notes = []
    fit(model(), data(), cfg(steps=1), state_path=state, log=notes.append)
    assert not marker.exists()
    if name.endswith(".safetensors"):
        assert any("ignoring unreadable training state" in n for n in notes)


def test_resumed_weights_equal_an_uninterrupted_run(tmp_path):
    state = tmp_path / "s.state.safetensors"
    whole = fit(model(), data(), cfg(), log=lambda _: None)

    class Stop(Exception):
        pass

    def stop_at_3(line: str) -> None:
        raise Stop

    interrupted = model()
    with pytest.raises(Stop):  # the log call at step 3 stands in for Ctrl-C; the state of step 2 is on disk
        fit(interrupted, data(), cfg(log_every=3), state_path=state, log=stop_at_3)
    notes = []
    resumed = fit(model(), data(), cfg(log_every=3), state_path=state, log=notes.append)
    assert any("at step 2" in n for n in notes)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("change, expect", [
    (dict(lr=0.5), "lr 0.0005 then, 0.5 now"),
    (dict(seed=7), "seed 0 then, 7 now"),
    (dict(n_feats=4), "a different model"),
])
def test_a_state_of_another_run_starts_fresh_with_a_note(tmp_path, change, expect):
    state = tmp_path / "s.state.safetensors"
    fit(model(), data(), cfg(steps=2), state_path=state, log=lambda _: None)
    notes = []
    n_feats = change.pop("n_feats", 8)
    fit(model(n_feats), data(), cfg(steps=2, **change), state_path=state, log=notes.append)
    assert not any("resumed" in n for n in notes)
    assert any("from another run" in n and expect in n for n in notes), notes


def test_quantize_removes_its_state_when_done(tmp_path):
    from i2nq.calib.pipeline import quantize_model
    from i2nq.quant import I2NQConfig

    out = tmp_path / "w4.safetensors"
    quantize_model(model(), I2NQConfig(bits=4), out, cfg(steps=2), calib_batches=1, sets=(data(), None),
                   log=lambda _: None)
    assert out.is_file() and not state_path_for(out).exists()
