"""Split-half reliability for any number of repeats: a perfect model scores r/ceiling 1 (odd and even repeats)."""

from __future__ import annotations

import numpy as np
import pytest

from retinakit.evaluation.metrics import score
from retinakit.spikes import reliability_from_split_half, spearman_brown, split_half_reliability


def _perfect_model(n_repeats: int, seed: int, T: int = 4000, n: int = 200) -> tuple[dict, np.ndarray]:
    """Scores of the true rate against Poisson repeats of it (200 cells x 40 s at 10 ms bins, ~30 Hz)."""
    rng = np.random.default_rng([n_repeats, seed])
    rate = 0.3 * rng.gamma(1.0, 1.0, size=(T, n))
    reps = rng.poisson(np.broadcast_to(rate, (n_repeats, T, n))).astype(np.float32)
    return score(rate, reps), reps


@pytest.mark.parametrize("n_repeats", [3, 5, 9, 2, 10])
def test_perfect_model_reaches_the_ceiling_for_odd_and_even_repeats(n_repeats: int) -> None:
    s, _ = _perfect_model(n_repeats, seed=0)
    med = float(np.median(s["r_norm"]))
    assert med == pytest.approx(1.0, abs=0.01), f"{n_repeats} repeats: median r/ceiling {med:.4f}"
    assert float(np.median(s["cc_norm"])) == pytest.approx(1.0, abs=0.02)


def test_the_two_half_factor_overstates_odd_repeats() -> None:
    # the old correction (Spearman-Brown x2 for halves of 1 and 2 repeats) puts a perfect model above 1
    s, reps = _perfect_model(3, seed=1)
    r_half = split_half_reliability(reps)["r_half"]
    old = s["r"] / np.sqrt(spearman_brown(r_half, 2.0))
    assert np.median(old) > 1.01
    assert np.median(s["r_norm"]) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(("a", "b"), [(1, 2), (2, 3), (4, 5), (3, 3), (1, 1)])
def test_unequal_halves_are_solved_exactly(a: int, b: int) -> None:
    for snr in (0.05, 0.3, 1.0, 5.0):
        def rho(m: int) -> float:
            return m * snr / (m * snr + 1)
        r = np.sqrt(rho(a) * rho(b))
        assert reliability_from_split_half(r, a, b) == pytest.approx(rho(a + b), rel=1e-10)
    if a == b:  # Spearman-Brown exactly, negative r included
        r = np.linspace(-0.9, 0.99, 40)
        assert np.allclose(reliability_from_split_half(r, a, b), 2 * r / (1 + r))
    assert reliability_from_split_half(1.0, a, b) == 1.0
    assert reliability_from_split_half(0.0, a, b) == 0.0
    assert reliability_from_split_half(-0.2, a, b) < 0  # anticorrelated halves stay below 0 (unreliable)


def test_all_distinct_splits_make_it_independent_of_repeat_order() -> None:
    rng = np.random.default_rng(4)
    rate = rng.gamma(1.0, 0.3, size=(500, 3))
    for R in (3, 5, 7, 8):  # at most 50 distinct splits: every one is used
        reps = rng.poisson(np.broadcast_to(rate, (R, 500, 3))).astype(float)
        a = split_half_reliability(reps)
        b = split_half_reliability(reps[rng.permutation(R)], seed=123)
        assert np.allclose(a["reliability"], b["reliability"], rtol=1e-12, atol=1e-14)


def test_fewer_than_two_repeats_or_no_variance_is_nan() -> None:
    assert np.all(np.isnan(split_half_reliability(np.ones((1, 50, 2)))["ceiling"]))
    assert np.isnan(split_half_reliability(np.zeros((5, 50, 1)))["reliability"][0])


def test_inspect_and_fit_report_the_same_ceiling_and_rates() -> None:
    from conftest import make_recording

    from retinakit.evaluation.tables import format_cell_table
    from retinakit.summary import format_summary, summarize

    rec = make_recording(frame_shape=(6, 6), n_cells=3, train_bins=1000, test_bins=300, n_repeats=5)
    H = 12
    summary, _ = summarize(rec, sta_history=H, with_sta=False)
    pred = np.asarray(rec.test.true_rate, dtype=np.float64).copy()
    pred[:H] = np.nan  # what a model with history H predicts: nothing before bin H
    s = score(pred, rec.test.repeats)
    assert summary["ceiling_first_bin"] == H
    assert [c["ceiling"] for c in summary["cells"]] == pytest.approx(list(s["ceiling"]), abs=1e-12)
    assert [c["reliability"] for c in summary["cells"]] == pytest.approx(list(s["reliability"]), abs=1e-12)
    dt = float(rec.frame_dt)
    for k, c in enumerate(summary["cells"]):
        assert c["rate_hz_train"] == pytest.approx(rec.train.counts[:, k].mean() / dt)
        assert c["rate_hz_test"] == pytest.approx(rec.test.counts[:, k].mean() / dt)
    # both tables label the two rates the same way
    rows = [{"cell": c["id"], "r": 0.5, "ceiling": c["ceiling"], "r_norm": 0.5, "feve": None, "cc_norm": None,
             "rate_hz_train": c["rate_hz_train"], "rate_hz_test": c["rate_hz_test"], "reliable": True} for c in summary["cells"]]
    fit_table = format_cell_table({"cells": rows, "summary": {"n_reliable": 3, "n_cells": 3, "mean_r": 0.5, "mean_ceiling": 0.5,
                                                              "mean_r_norm": 0.5, "mean_feve": None}})
    for text in (format_summary(summary), fit_table):
        head = next(line for line in text.splitlines() if line.split()[:1] == ["cell"])
        assert "train Hz" in head and "test Hz" in head and "rate Hz" not in head
