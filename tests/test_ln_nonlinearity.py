"""The LN's monotone nonlinearity: recovers a planted static nonlinearity, keeps rising past the
training range, torch and numpy agree, it is monotone in every fitted cell (single filter and the
two-filter ``stc``), and old runs with the flat binned nonlinearity still load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinakit.fitting.config import FitConfig
from retinakit.fitting.train import prepare_data
from retinakit.models import model_from_spec
from retinakit.models.ln import LN, fit_ln_revcorr
from retinakit.models.ln_nonlinearity import apply_monotone, fit_additive_monotone, fit_monotone_nonlinearity
from retinakit.models.stc import fit_ln_stc
from retinakit.simulate.record import SimulationSpec, simulate

from test_ln import HISTORY, filter_corr, planted_recording


def test_monotone_fit_is_isotonic_with_a_rising_tail_and_a_floor() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal(20000)
    y = rng.poisson(0.05 * np.exp(1.2 * g)).astype(float)
    kx, ky, slope = fit_monotone_nonlinearity(g, y, 15)
    assert kx.shape == ky.shape == (15,)
    assert np.all(np.diff(kx) > 0) and np.all(np.diff(ky) >= 0) and ky[0] > 0
    assert slope > 0
    beyond = apply_monotone(np.array([kx[-1] + 1.0, kx[-1] + 2.0]), kx, ky, slope)
    assert ky[-1] < beyond[0] < beyond[1]  # keeps rising past the largest generator value seen
    assert apply_monotone(np.array([kx[0] - 5.0]), kx, ky, slope)[0] == pytest.approx(ky[0])  # floor below
    # a decreasing relation cannot be fitted as increasing: it comes out flat
    _, ky_dec, slope_dec = fit_monotone_nonlinearity(-g, y, 15)
    assert np.ptp(ky_dec) < 0.02 * np.ptp(ky) and slope_dec == 0.0


def test_torch_output_equals_numpy_everywhere() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal(5000)
    y = rng.poisson(0.2 * np.exp(g)).astype(float)
    kx, ky, slope = fit_monotone_nonlinearity(g, y, 10)
    m = LN(1, (), 1, n_knots=10)
    assert m.nonlinearity == "monotone"
    m.knots_x[0], m.knots_y[0], m.tail_slope[0] = torch.as_tensor(kx), torch.as_tensor(ky), slope
    probe = np.array([-10.0, -1.0, 0.0, 0.7, float(kx[-1]), 5.0, 10.0])
    out = m.output(torch.as_tensor(probe, dtype=torch.float32)[:, None]).detach().numpy()[:, 0]
    assert np.allclose(out, apply_monotone(probe, kx, ky, slope), rtol=1e-5)
    assert out[-1] > out[-2] > ky[-1]


def test_planted_static_nonlinearity_is_recovered_and_extrapolated() -> None:
    """Known filter, known monotone (exponential) nonlinearity, Poisson counts."""
    rec, filt = planted_recording(T=20000, seed=2)
    data = prepare_data(rec, FitConfig.from_dict({"model": "ln", "history": HISTORY}))
    model, details = fit_ln_revcorr(data, method="sta")
    assert filter_corr(model, filt) > 0.9
    ky = model.knots_y[0].numpy()
    assert np.all(np.diff(ky) >= 0) and float(model.tail_slope[0]) > 0
    # the fitted function against the true one over the training range: the generator is the
    # planted one up to scale and offset, so compare through the model on the planted filter
    F = model.filters()[0].detach()
    scale = float((F * torch.as_tensor(filt, dtype=torch.float32)).sum() / (torch.as_tensor(filt) ** 2).sum())
    z = data.z.numpy()
    n = z.shape[0]
    flat = z.reshape(n, -1) @ filt.reshape(HISTORY, -1).T
    g_true = np.zeros(n)
    for j in range(HISTORY):
        g_true[HISTORY:] += flat[j : j + n - HISTORY, j]
    sd = g_true[HISTORY:].std()
    grid = np.linspace(-1.5 * sd, 2.5 * sd, 9)
    pred = model.output(torch.as_tensor(scale * grid + float(model.bias[0].detach()), dtype=torch.float32)[:, None]).detach().numpy()[:, 0]
    truth = 0.1 * np.exp(0.9 * grid / sd)
    inside = grid <= np.quantile(g_true[HISTORY:], 0.99)
    assert np.corrcoef(pred[inside], truth[inside])[0, 1] > 0.97
    assert np.all(np.abs(pred[inside] - truth[inside]) < 0.35 * truth[inside] + 0.02)
    # past the largest generator value of training, the prediction keeps rising (no clipping at the top bin)
    top = float(model.knots_x[0, -1])
    strong = np.array([top + 0.5 * scale * sd, top + 1.5 * scale * sd])
    out = model.output(torch.as_tensor(strong, dtype=torch.float32)[:, None]).detach().numpy()[:, 0]
    assert ky[-1] < out[0] < out[1]


def test_additive_monotone_recovers_two_rectifiers() -> None:
    rng = np.random.default_rng(3)
    g = rng.standard_normal(40000)
    rate = 0.3 * np.maximum(g, 0) ** 2 + 0.1 * np.maximum(-g, 0) ** 2 + 0.02  # ON-OFF: a U of one generator
    y = rng.poisson(rate).astype(float)
    p1, p2 = fit_additive_monotone(g, -g, y, 20)
    grid = np.linspace(-2, 2, 21)
    fit = apply_monotone(grid, *p1) + apply_monotone(-grid, *p2)
    truth = 0.3 * np.maximum(grid, 0) ** 2 + 0.1 * np.maximum(-grid, 0) ** 2 + 0.02
    assert np.max(np.abs(fit - truth)) < 0.12
    assert np.all(np.diff(p1[1]) >= 0) and np.all(np.diff(p2[1]) >= 0) and p2[1].min() >= 0


def _assert_monotone(kx: torch.Tensor, ky: torch.Tensor, slope: torch.Tensor, where: str) -> None:
    assert torch.all(kx[:, 1:] > kx[:, :-1]), where
    assert torch.all(ky[:, 1:] >= ky[:, :-1]), where
    assert torch.all(ky >= 0) and torch.all(slope >= 0), where


@pytest.fixture(scope="module")
def mixed_recording():  # noqa: ANN201
    """Full-field flicker, 10 cells of every simulated type (two ON-OFF)."""
    sim = simulate(SimulationSpec(stimulus="fullfield", frame_rate=30.0, minutes=6.0, n_cells=10, seed=5, n_repeats=4, test_seconds=10.0), progress=False)
    polarities = [c["polarity"] for c in sim.retina.ground_truth()]
    assert "ON-OFF" in polarities and "ON" in polarities and "OFF" in polarities
    return sim.recording


@pytest.mark.parametrize("method", ["sta", "stc"])
def test_nonlinearity_is_monotone_in_every_fitted_cell(mixed_recording, method: str) -> None:  # noqa: ANN001
    data = prepare_data(mixed_recording, FitConfig.from_dict({"model": "ln", "history": 20}))
    model = fit_ln_stc(data, base="sta")[0] if method == "stc" else fit_ln_revcorr(data, method="sta")[0]
    _assert_monotone(model.knots_x, model.knots_y, model.tail_slope, "nonlinearity 1")
    g = torch.linspace(-50, 50, 2001)[:, None].repeat(1, model.n_cells)
    if method == "stc":
        _assert_monotone(model.knots_x2, model.knots_y2, model.tail_slope2, "nonlinearity 2")
        f1 = model._piecewise(g, model.knots_x, model.knots_y, model.tail_slope)
        f2 = model._piecewise(g, model.knots_x2, model.knots_y2, model.tail_slope2)
        for f in (f1, f2):
            assert torch.all(f[1:] >= f[:-1] - 1e-6)
    else:
        out = model.output(g)
        assert torch.all(out[1:] >= out[:-1] - 1e-6) and torch.all(out >= 0)


def test_an_old_binned_run_still_loads() -> None:
    """Runs written before the monotone nonlinearity: spec without n_filters, no tail_slope buffer."""
    old_spec = {"family": "ln", "history": 4, "frame_shape": [3, 3], "n_cells": 2, "rank": 1, "nonlinearity": "binned", "n_knots": 5, "geometry_note": "old"}
    torch.manual_seed(0)
    state = {"temporal": torch.randn(2, 4), "spatial": torch.randn(2, 3, 3), "bias": torch.zeros(2), "mask": torch.ones(2, 3, 3),
             "crop_box": torch.tensor([[0, 3, 0, 3]] * 2), "knots_x": torch.linspace(-1, 1, 5).repeat(2, 1), "knots_y": torch.rand(2, 5)}
    m = model_from_spec(old_spec)
    m.load_state_dict(state)
    out = m.output(torch.tensor([[100.0, -100.0]]))
    assert out[0, 0] == pytest.approx(float(state["knots_y"][0, -1])) and out[0, 1] == pytest.approx(float(state["knots_y"][1, 0]))
