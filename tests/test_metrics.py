"""Scoring against repeats: a hand-computed example, a perfect model, unreliable cells, alignment of NaN bins."""

from __future__ import annotations

import numpy as np
import pytest

from retinakit.errors import DataError
from retinakit.evaluation.metrics import per_cell_rows, score


def test_hand_computed_example() -> None:
    # two repeats of four bins, one cell; prediction in counts per bin
    rep = np.array([[0, 1, 2, 1], [1, 1, 3, 1]], dtype=float)[:, :, None]
    pred = np.array([1, 2, 3, 2], dtype=float)[:, None]
    s = score(pred, rep, min_reliability=0.3, min_signal_z=0.0)
    # mean = [0.5, 1, 2.5, 1]; centred pred [-1, 0, 1, 0], centred mean [-.75, -.25, 1.25, -.25]
    # r = 2 / sqrt(2 * 2.25)
    r = 2 / np.sqrt(4.5)
    # split halves of 2 repeats: r_half = corr(rep0, rep1) = 2 / sqrt(2 * 3); Spearman-Brown x2
    r_half = 2 / np.sqrt(6)
    rel = 2 * r_half / (1 + r_half)
    # FEVE: var(mean) = 0.5625; noise = mean(var_ddof1 over repeats) / 2 = 0.25 / 2; MSE = 0.625
    feve = 1 - (0.625 - 0.125) / (0.5625 - 0.125)
    # CC_norm: SP = (var(sum) - sum var) / (n (n-1)) = (2.25 - 1.25) / 2 = 0.5; cov = 0.5; var(pred) = 0.5
    assert s["r"][0] == pytest.approx(r, abs=1e-12)
    assert s["reliability"][0] == pytest.approx(rel, abs=1e-12)
    assert s["ceiling"][0] == pytest.approx(np.sqrt(rel), abs=1e-12)
    assert s["r_norm"][0] == pytest.approx(r / np.sqrt(rel), abs=1e-12)
    assert s["feve"][0] == pytest.approx(feve, abs=1e-12)
    assert feve == pytest.approx(-1 / 7)
    assert s["cc_norm"][0] == pytest.approx(1.0, abs=1e-12)
    assert bool(s["reliable"][0])
    assert s["summary"]["mean_r"] == pytest.approx(r)
    # with the default floor, 4 bins cannot show explainable variance (3 null s.e. = 3 * sqrt(4 / 4))
    d = score(pred, rep, min_reliability=0.3)
    assert np.isnan(d["feve"][0]) and np.isnan(d["cc_norm"][0])
    assert d["r"][0] == pytest.approx(r) and d["reliability"][0] == pytest.approx(rel)


def test_perfect_model_reaches_the_ceiling() -> None:
    rng = np.random.default_rng(1)
    T, n, R = 4000, 4, 10
    rate = 0.05 + 0.4 * rng.gamma(1.0, 1.0, size=(T, n))
    reps = rng.poisson(np.broadcast_to(rate, (R, T, n))).astype(float)
    s = score(rate, reps)
    # the true rate is the best possible prediction: r/ceiling and CC_norm near 1, FEVE near 1
    assert np.all(np.abs(s["r_norm"] - 1) < 0.05)
    assert np.all(np.abs(s["cc_norm"] - 1) < 0.05)
    assert np.all(np.abs(s["feve"] - 1) < 0.08)
    # a scaled prediction keeps r but loses FEVE (it penalises the wrong scale)
    s2 = score(2 * rate, reps)
    assert np.allclose(s2["r"], s["r"])
    assert np.all(s2["feve"] < 0.5)


def test_unreliable_cells_are_flagged_not_averaged() -> None:
    rng = np.random.default_rng(2)
    T, R = 2000, 6
    good = 0.05 + 0.5 * (rng.random(T) > 0.8)
    reps = np.stack([rng.poisson(np.broadcast_to(good, (R, T))), rng.poisson(np.full((R, T), 0.2))], axis=-1).astype(float)
    pred = np.stack([good, rng.random(T)], axis=-1)
    s = score(pred, reps)
    assert list(s["reliable"]) == [True, False]
    assert s["summary"]["n_reliable"] == 1
    assert s["summary"]["mean_r"] == pytest.approx(s["r"][0])
    rows = per_cell_rows({**s, "cell_ids": [7, 9]})
    assert rows[1]["cell"] == 9 and rows[1]["reliable"] is False


def test_nan_bins_are_dropped_everywhere() -> None:
    rng = np.random.default_rng(3)
    T, R = 600, 4
    rate = 0.1 + rng.random((T, 2))
    reps = rng.poisson(np.broadcast_to(rate, (R, T, 2))).astype(float)
    pred = rate.copy()
    pred[:40] = np.nan  # no history yet
    s = score(pred, reps)
    s_ref = score(rate[40:], reps[:, 40:])
    for key in ("r", "ceiling", "feve", "cc_norm"):
        assert np.allclose(s[key], s_ref[key], equal_nan=True)
    assert s["n_bins"] == T - 40


def test_shape_mismatch_is_a_data_error() -> None:
    with pytest.raises(DataError, match="do not match"):
        score(np.zeros((10, 2)), np.zeros((3, 10, 3)))


def test_feve_and_cc_norm_are_nan_without_explainable_variance() -> None:
    rng = np.random.default_rng(5)
    T, R = 3000, 9
    t = np.arange(T)
    signal = 0.1 + 1.0 * np.sin(2 * np.pi * t / 150) ** 2
    flat = np.full(T, 0.3)  # no explainable variance: Poisson noise around a constant
    tiny = 0.3 + 1e-3 * np.sin(2 * np.pi * t / 150)  # some, but ~0 relative to the noise
    rates = np.stack([signal, flat, tiny], axis=-1)
    reps = rng.poisson(np.broadcast_to(rates, (R, T, 3))).astype(float)
    pred = rates + 0.01 * rng.random((T, 3))
    s = score(pred, reps)
    assert np.isfinite(s["feve"][0]) and s["feve"][0] > 0.8 and np.isfinite(s["cc_norm"][0])
    assert np.isnan(s["feve"][1]) and np.isnan(s["cc_norm"][1])
    assert np.isnan(s["feve"][2]) and np.isnan(s["cc_norm"][2])
    # the explainable variance of the flat and tiny cells is not exactly 0: NaN comes from the floor
    var_mean = reps.mean(0).var(0)
    explainable = var_mean - reps.var(0, ddof=1).mean(0) / R
    assert np.all(explainable[1:] != 0)
    assert not bool(s["reliable"][1]) and not bool(s["reliable"][2])
    assert s["summary"]["n_reliable"] == 1 and s["summary"]["mean_feve"] == pytest.approx(s["feve"][0])
