"""Self-tests of the simulated lab export (:mod:`helpers.lab_exports`): its counts are what binning
its spikes finds, and its splits have the expected sizes."""

from __future__ import annotations

import numpy as np
from helpers.lab_exports import simulate_export

from retinakit.spikes import bin_spikes


def test_simulated_counts_are_what_binning_finds() -> None:
    exp = simulate_export(frame_shape=(3, 4), jitter_samples=20, seed=1)
    counts = bin_spikes(exp.spike_s, exp.onset_s)
    np.testing.assert_array_equal(counts, exp.counts)
    assert exp.counts.sum() > 100
    seg = exp.stimulus[exp.repeat_starts[0] : exp.repeat_starts[0] + exp.repeat_frames]
    for i in exp.repeat_starts[1:]:
        np.testing.assert_array_equal(exp.stimulus[i : i + exp.repeat_frames], seg)


def test_expected_split_sizes() -> None:
    exp = simulate_export(train_block_frames=10, repeat_frames=5, n_repeats=4)
    want = exp.expected()
    assert want["train_counts"].shape == (50, 4)
    assert want["repeats"].shape == (4, 5, 4)
