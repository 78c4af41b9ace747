"""The CNN-vs-LN table: medians and per-type gaps on a planted example; response types from planted STAs."""

from __future__ import annotations

import numpy as np
import pytest

from retinakit.evaluation.compare import format_compare_table, response_types, summarize_comparison


def _row(cell: int, ln: float | None, cnn: float | None, reliable: bool, kind: str, truth: str) -> dict:
    return {"cell": cell, "ln_r": None if ln is None else 0.9 * ln, "cnn_r": None if cnn is None else 0.9 * cnn, "ceiling": 0.9,
            "ln_r_norm": ln, "cnn_r_norm": cnn, "cnn_minus_ln_r_norm": None if ln is None or cnn is None else cnn - ln,
            "ln_feve": None, "cnn_feve": None, "reliable": reliable, "type": kind, "true_type": truth}


def test_medians_and_gaps_per_type_on_a_planted_example() -> None:
    rows = [
        _row(1, 0.80, 0.90, True, "ON", "ON"),        # gap +0.10
        _row(2, 0.70, 0.75, True, "ON", "ON"),        # gap +0.05
        _row(3, 0.90, 0.70, True, "ON", "ON"),        # gap -0.20
        _row(4, 0.85, 0.80, True, "OFF", "OFF"),      # gap -0.05
        _row(5, 0.20, 0.85, True, "no STA", "ON-OFF"),  # gap +0.65
        _row(6, 0.10, 0.95, False, "no STA", "ON-OFF"),  # unreliable: counted, never averaged
        _row(7, 0.60, 0.80, True, "OFF", "ON"),       # misread type: gap +0.20, true ON
    ]
    s = summarize_comparison(rows)
    assert s["n_cells"] == 7 and s["n_reliable"] == 6
    assert s["median_ln_r_norm"] == pytest.approx(np.median([0.8, 0.7, 0.9, 0.85, 0.2, 0.6]))
    assert s["median_cnn_r_norm"] == pytest.approx(np.median([0.9, 0.75, 0.7, 0.8, 0.85, 0.8]))
    assert s["median_cnn_minus_ln_r_norm"] == pytest.approx(np.median([0.1, 0.05, -0.2, -0.05, 0.65, 0.2]))
    assert s["mean_cnn_minus_ln_r_norm"] == pytest.approx(np.mean([0.1, 0.05, -0.2, -0.05, 0.65, 0.2]))
    assert s["n_cnn_better"] == 4
    by = s["by_type"]
    assert list(by) == ["ON", "OFF", "no STA"]
    assert by["ON"]["n_cells"] == 3 and by["ON"]["median_cnn_minus_ln_r_norm"] == pytest.approx(0.05)
    assert by["OFF"]["n_reliable"] == 2 and by["OFF"]["median_cnn_minus_ln_r_norm"] == pytest.approx(np.median([-0.05, 0.2]))
    assert by["no STA"]["n_cells"] == 2 and by["no STA"]["n_reliable"] == 1
    assert by["no STA"]["median_cnn_minus_ln_r_norm"] == pytest.approx(0.65)
    assert by["no STA"]["median_ln_r_norm"] == pytest.approx(0.2)
    truth = s["by_true_type"]
    assert list(truth) == ["ON", "OFF", "ON-OFF"]
    assert truth["ON"]["median_cnn_minus_ln_r_norm"] == pytest.approx(np.median([0.1, 0.05, -0.2, 0.2]))
    assert truth["ON-OFF"]["mean_cnn_minus_ln_r_norm"] == pytest.approx(0.65)

    text = format_compare_table({"cells": rows, "summary": s})
    assert "median over reliable cells: LN r/ceiling 0.750, CNN r/ceiling 0.800, difference 0.075" in text
    assert "no usable STA (ON-OFF-like) 0.650" in text and "by true type" in text
    assert "ON 0.050 (LN 0.800, CNN 0.750; 3/3 reliable)" in text


def test_summary_without_types_keeps_the_old_keys() -> None:
    rows = [{k: v for k, v in _row(1, 0.5, 0.6, True, "ON", "ON").items() if k not in ("type", "true_type")}]
    s = summarize_comparison(rows)
    assert "by_type" not in s and "by_true_type" not in s
    assert s["mean_cnn_minus_ln_r_norm"] == pytest.approx(0.1) and s["median_cnn_r_norm"] == pytest.approx(0.6)


def test_response_types_from_planted_receptive_fields() -> None:
    rng = np.random.default_rng(0)
    T, lag = 20000, 3
    stim = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(T, 8, 8))
    x = np.zeros((T, 3))
    for k, (r, c) in enumerate([(2, 3), (5, 5), (4, 1)]):
        x[lag:, k] = stim[:-lag, r, c]
    rates = np.stack([
        0.1 * np.exp(1.2 * x[:, 0]),           # ON
        0.1 * np.exp(-1.2 * x[:, 1]),          # OFF
        0.1 * np.exp(1.2 * np.abs(x[:, 2])),   # ON-OFF: fires for either sign, STA ~ 0
        np.full(T, 0.2),                       # ignores the stimulus
    ], axis=1)
    counts = rng.poisson(rates).astype(np.float32)
    res = response_types(stim, counts, history=6)
    assert list(res["type"]) == ["ON", "OFF", "no STA", "no STA"]
    assert res["sta_z"][0] > 20 and res["sta_z"][1] > 20
    assert abs(res["sta_z"][2]) < 5 and abs(res["sta_z"][3]) < 5
    silent = response_types(stim, np.zeros((T, 1), dtype=np.float32), history=6)
    assert list(silent["type"]) == ["no STA"] and np.isnan(silent["sta_z"][0])
