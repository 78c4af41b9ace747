"""`check_model`: passes on sound models, catches acausal, batch-mixing and misaligned ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_probes_models import Windowed, linear_fitted, ln_fitted, meta_for, osr_fitted, tiny_cnn
from torch import nn

from retinakit.models.fitted import FittedModel
from retinakit.probes.check import check_model, format_check


@pytest.mark.parametrize("make", [lambda: tiny_cnn(history=10), lambda: ln_fitted(history=12, frame_shape=(6, 6)), lambda: linear_fitted(frame_shape=()), lambda: osr_fitted(history=20)],
                         ids=["cnn", "ln", "linear-fullfield", "osr-toy"])
def test_sound_models_pass(make) -> None:  # noqa: ANN001
    res = check_model(make())
    failed = [n for n, c in res["checks"].items() if not c["passed"]]
    assert res["passed"], failed
    assert "all checks passed" in format_check(res)


def test_impulse_lag_of_a_delay_line_is_reported() -> None:
    res = check_model(linear_fitted(history=12, frame_shape=(4, 4), n_cells=2, lag=5, rf=np.ones((2, 4, 4))))
    assert res["checks"]["impulse_window"]["peak_lag_frames"] == [5, 5]


class BatchMix(Windowed):
    """Subtracts the batch mean: every window leaks into every other (like batch-norm left in training mode)."""

    def __init__(self, history: int) -> None:
        super().__init__()
        self.history = history
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.reshape(x.shape[0], -1).mean(1, keepdim=True)
        return nn.functional.softplus(s - s.mean()) + 0 * self.dummy


class ShiftedFitted(FittedModel):
    """predict() evaluated ``shift`` bins late (+1) or early (-1): the off-by-one trap."""

    shift = 1

    def predict(self, stimulus: np.ndarray, **kw: object) -> np.ndarray:
        out = super().predict(stimulus, **kw)
        moved = np.full_like(out, np.nan)
        if self.shift > 0:
            moved[self.shift :] = out[: -self.shift]
        else:
            moved[: self.shift] = out[-self.shift :]
        return moved


class Constant(Windowed):
    def __init__(self) -> None:
        super().__init__()
        self.history = 5
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1), 0.1) + 0 * self.dummy


def test_a_model_that_ignores_its_input_fails() -> None:
    res = check_model(FittedModel(Constant().eval(), meta_for(5, (), 1, "toy")))
    assert not res["checks"]["stimulus_dependence"]["passed"] and not res["passed"]


def test_batch_mixing_model_fails_causality_and_batch_independence() -> None:
    res = check_model(FittedModel(BatchMix(8).eval(), meta_for(8, (), 1, "toy")))
    assert not res["passed"]
    assert not res["checks"]["causality"]["passed"] and not res["checks"]["batch_independence"]["passed"]
    assert "FAIL  causality" in format_check(res)


def test_one_bin_late_prediction_fails_alignment() -> None:
    f = linear_fitted(history=10, frame_shape=(), n_cells=1)
    late = ShiftedFitted(f.model, f.meta)
    res = check_model(late)
    assert not res["checks"]["window_alignment"]["passed"]
    assert not res["checks"]["nan_before_history"]["passed"]  # bin H has no prediction


def test_one_bin_early_prediction_fails_causality() -> None:
    f = linear_fitted(history=10, frame_shape=(), n_cells=1, lag=1)
    early = ShiftedFitted(f.model, f.meta)
    early.shift = -1
    res = check_model(early)
    assert not res["checks"]["causality"]["passed"]
    assert not res["checks"]["window_alignment"]["passed"]
