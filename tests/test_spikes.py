"""Spike utilities with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from retinakit.spikes import bin_spikes, smooth_rates, spearman_brown, spike_triggered_average, split_half_reliability


def test_bin_spikes_edges():
    frames = np.array([0.0, 0.01, 0.02, 0.03])
    spikes = [np.array([0.0, 0.0099, 0.01, 0.035, 0.0399, 0.04, -0.001]), np.array([])]
    counts = bin_spikes(spikes, frames)
    # [0, .01) has 2; [.01, .02) has 1; [.03, .04) has 2; 0.04 and -0.001 fall outside
    assert counts[:, 0].tolist() == [2, 1, 0, 2]
    assert counts[:, 1].tolist() == [0, 0, 0, 0]


def test_smooth_rates_units_are_hz():
    counts = np.zeros((1000, 1), dtype=np.float32)
    counts[::10] = 1  # one spike every 100 ms = 10 Hz
    rate = smooth_rates(counts, 0.01, 0.010)
    assert rate[100:900].mean() == pytest.approx(10.0, rel=1e-3)
    single = np.zeros((201, 1))
    single[100] = 1
    r = smooth_rates(single, 0.01, 0.010)
    assert r.sum() * 0.01 == pytest.approx(1.0, rel=1e-6)  # one spike integrates to one
    assert int(np.argmax(r[:, 0])) == 100


def test_sta_recovers_planted_filter():
    rng = np.random.default_rng(0)
    T = 20000
    stim = rng.choice([-1.0, 1.0], size=(T, 6, 6))
    drive = np.zeros(T)
    drive[4:] = -stim[:-4, 2, 5]  # OFF cell, 4 frames before the bin
    counts = rng.poisson(0.2 * np.exp(drive))[:, None]
    sta = spike_triggered_average(stim, counts, history=8)
    assert sta.shape == (1, 8, 6, 6)
    j, r, c = np.unravel_index(np.argmax(np.abs(sta[0])), sta[0].shape)
    assert (8 - j, r, c) == (4, 2, 5)  # position j is lag 8 - j
    assert sta[0, j, r, c] < 0


def test_spearman_brown_and_split_half():
    assert spearman_brown(0.5, 2.0) == pytest.approx(2 / 3)
    rng = np.random.default_rng(3)
    T, R = 4000, 10
    truth = rng.gamma(2.0, 0.5, size=(T, 1))
    reps = rng.poisson(np.broadcast_to(truth, (R, T, 1))).astype(float)
    rel = split_half_reliability(reps)
    # expected reliability of the R-repeat mean: var(truth) / (var(truth) + mean(truth)/R)
    expected = truth.var() / (truth.var() + truth.mean() / R)
    assert rel["reliability"][0] == pytest.approx(expected, abs=0.03)
    assert rel["ceiling"][0] == pytest.approx(np.sqrt(expected), abs=0.02)
    flat = split_half_reliability(np.zeros((4, 50, 1)))
    assert np.isnan(flat["reliability"][0])
