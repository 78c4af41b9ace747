"""The probe analyses on synthetic traces with known answers (no model involved)."""

from __future__ import annotations

import numpy as np
import pytest

from retinakit.probes.analysis import first_crossing, fit_exponential, harmonic_amplitudes, linear_fit, omission_response, parabolic_peak
from retinakit.probes.paired_flash import recovery
from retinakit.probes.step import analyse_steps, classify
from retinakit.probes.stimuli import bar_coverage, flash_train, grating, reversing_grating, square_wave_coverage

DT = 0.01


def synthetic_osr_trace(period: int, n_flashes: int, delay: int | None, base: float = 2.0, flash_amp: float = 8.0, flash_lag: int = 3,
                        burst_amp: float = 20.0, T: int = 400, start: int = 45) -> tuple[np.ndarray, list[int]]:
    """Baseline ``base`` Hz, ``flash_amp`` Hz bumps ``flash_lag`` bins after each flash onset, and a
    ``burst_amp`` burst ``delay`` bins after the expected (omitted) flash."""
    tr = np.full(T, base)
    onsets = [start + k * period for k in range(n_flashes)]
    for o in onsets:
        tr[o + flash_lag] += flash_amp
        tr[o + flash_lag + 1] += flash_amp / 2
    if delay is not None:
        tr[onsets[-1] + period + delay] += burst_amp
        tr[onsets[-1] + period + delay + 1] += burst_amp / 3
    return tr, onsets


@pytest.mark.parametrize("period,delay", [(5, 4), (8, 6), (12, 2), (16, 9)])
def test_omission_burst_and_latencies_recovered_exactly(period: int, delay: int) -> None:
    tr, onsets = synthetic_osr_trace(period, 8, delay)
    r = omission_response(tr, onsets, period, (30, 46), window=30, frame_dt=DT)
    assert r["burst"] and r["driven"]
    assert r["baseline_hz"] == pytest.approx(2.0)
    assert r["flash_peak_hz"] == pytest.approx(10.0)
    assert r["omission_peak_hz"] == pytest.approx(22.0)
    assert r["peak_bin"] == onsets[-1] + period + delay
    assert r["latency_from_last_s"] == pytest.approx((period + delay) * DT)
    assert r["latency_from_expected_s"] == pytest.approx(delay * DT)
    assert r["ratio"] == pytest.approx(20.0 / 8.0)


def test_no_burst_when_the_train_just_stops() -> None:
    tr, onsets = synthetic_osr_trace(7, 8, None)
    r = omission_response(tr, onsets, 7, (30, 46), window=30, frame_dt=DT)
    assert not r["burst"]
    assert r["omission_peak_hz"] == pytest.approx(2.0)


def test_burst_criterion_margin_and_floor() -> None:
    # omission peak 1.15x the flash rise: below the default 20 % margin, above a 10 % one
    tr, onsets = synthetic_osr_trace(6, 8, 5, burst_amp=8.0 * 1.15)
    assert not omission_response(tr, onsets, 6, (30, 46), 30, DT)["burst"]
    assert omission_response(tr, onsets, 6, (30, 46), 30, DT, criterion=0.1)["burst"]
    # flashes that barely drive the cell (0.5 Hz): whatever follows is no OSR
    tr, onsets = synthetic_osr_trace(6, 8, 5, flash_amp=0.5)
    r = omission_response(tr, onsets, 6, (30, 46), 30, DT)
    assert not r["driven"] and not r["burst"]


def test_latency_vs_period_fit_on_synthetic_bursts() -> None:
    periods = [5, 6, 8, 10, 13, 16]
    lat = []
    for P in periods:
        tr, onsets = synthetic_osr_trace(P, 8, 4)
        lat.append(omission_response(tr, onsets, P, (30, 46), 40, DT)["latency_from_last_s"])
    f = linear_fit([P * DT for P in periods], lat)
    assert f["slope"] == pytest.approx(1.0) and f["intercept"] == pytest.approx(0.04) and f["r"] == pytest.approx(1.0)


def test_linear_fit_known_line_and_degenerate_cases() -> None:
    f = linear_fit([1, 2, 3, 4], [3.5, 5.5, 7.5, 9.5])
    assert (f["slope"], f["intercept"], f["r"], f["n"]) == (pytest.approx(2.0), pytest.approx(1.5), pytest.approx(1.0), 4)
    assert linear_fit([1, 2], [1, 2])["slope"] is None
    const = linear_fit([1, 2, 3], [5, 5, 5])
    assert const["slope"] == pytest.approx(0.0) and const["r"] is None
    assert linear_fit([2, 2, 2], [1, 2, 3])["slope"] is None


def test_harmonic_amplitudes_of_known_sinusoids() -> None:
    N = 40
    t = np.arange(N)
    y = 5 + 3 * np.cos(2 * np.pi * t / N + 0.3) + 1.5 * np.sin(2 * np.pi * 2 * t / N)
    f1, f2 = harmonic_amplitudes(y)
    assert f1 == pytest.approx(3.0) and f2 == pytest.approx(1.5)
    # a full-wave rectified reversal (frequency doubling) puts everything in even harmonics
    rect = np.abs(np.cos(2 * np.pi * t / N))
    a1, a2 = harmonic_amplitudes(rect)
    assert a1 == pytest.approx(0.0, abs=1e-12) and a2 > 0.4


def test_parabolic_peak_and_first_crossing() -> None:
    x = np.arange(10, dtype=float)
    y = -((x - 4.3) ** 2)
    assert parabolic_peak(y, int(np.argmax(y))) == pytest.approx(4.3)
    assert parabolic_peak(y, 0) == 0.0
    assert first_crossing([10, 20, 30], [0.2, 0.6, 1.0], 0.5) == pytest.approx(17.5)
    assert first_crossing([10, 20, 30], [0.7, 0.8, 1.0], 0.5) == 10.0
    assert first_crossing([10, 20], [0.1, 0.2], 0.5) is None


def test_fit_exponential_recovers_a_decay() -> None:
    t = np.arange(100) * DT
    y = 4.0 + 6.0 * np.exp(-t / 0.12)
    f = fit_exponential(t, y, (DT, 1.0))
    assert f["tau_s"] == pytest.approx(0.12, rel=1e-3)
    assert f["amp_hz"] == pytest.approx(6.0, rel=1e-3) and f["offset_hz"] == pytest.approx(4.0, rel=1e-3)
    assert fit_exponential(t, np.full(100, 3.0), (DT, 1.0))["tau_s"] is None


def test_step_analysis_of_a_synthetic_on_cell() -> None:
    D, lead = 50, 25
    ev = {"bright_on": lead, "bright_off": lead + D, "dark_on": lead + 2 * D, "dark_off": lead + 3 * D}
    tr = np.full(lead + 4 * D + 1, 3.0)
    tr[lead + 4] = 15.0  # transient at bright onset, 4 bins later
    tr[lead + 5 : lead + D + 1] = 5.0  # sustained part
    tr[lead + 3 * D + 6] = 9.0  # dark offset (an increment) is weaker and later
    r = analyse_steps(tr, ev, (10, lead + 1), D, DT, min_rise=1.0, pi_threshold=0.33)
    assert r["class"] == "ON" and r["polarity_index"] == pytest.approx(1.0)
    assert r["latency_s"] == pytest.approx(0.04)
    assert r["events"]["dark_off"]["latency_s"] == pytest.approx(0.06)
    assert r["sustained_index"] == pytest.approx(2.0 / 12.0)
    assert classify(5.0, 4.0, 1.0, 0.33)[0] == "ON-OFF"
    assert classify(0.5, 0.2, 1.0, 0.33)[0] == "none"
    assert classify(0.0, 6.0, 1.0, 0.33) == ("OFF", -1.0)


def test_paired_flash_recovery_subtracts_the_first_response() -> None:
    onset, T = 20, 200
    single = np.full(T, 1.0)
    single[onset + 3] = 11.0
    paired = {}
    for d, gain in [(5, 0.3), (10, 0.6), (30, 1.0)]:
        tr = single.copy()
        tr[onset + d + 3] += 10.0 * gain
        paired[d] = tr
    r = recovery(single, paired, onset, (10, onset + 1), window=20)
    assert r["r1_hz"] == pytest.approx(10.0)
    assert r["recovery"] == pytest.approx([0.3, 0.6, 1.0])


def test_stimuli_geometry() -> None:
    c, onsets, info = flash_train(history=10, period=6, flash=2, n_flashes=4, contrast=-0.5, post=12)
    assert onsets == [15, 21, 27, 33] and info["expected_frame"] == 39
    assert c.shape == (39 + 12 + 1,) and c[15] == c[16] == -0.5 and c[17] == 0 and c[39] == 0
    # square wave: pixel averages, phase shifts, and a whole period averages to zero
    row = square_wave_coverage(np.arange(9.0), 2.0, 0.0)
    assert row.tolist() == [1, 1, -1, -1, 1, 1, -1, -1]
    assert square_wave_coverage(np.arange(5.0), 2.0, 0.5).tolist() == [1, 0, -1, 0]
    g = grating((3, 8), 1.5, 0.75)
    assert g.shape == (3, 8) and abs(g[0, :6].sum()) < 1e-12 and np.all(g[0] == g[2])
    rg = reversing_grating((2, 4), 1.0, 0.0, period=6, n_cycles=2, contrast=0.8)
    assert rg.shape == (12, 2, 4) and rg[0, 0, 0] == pytest.approx(0.8) and rg[3, 0, 0] == pytest.approx(-0.8) and rg[6, 0, 0] == pytest.approx(0.8)
    cov = bar_coverage((2, 6), np.array([2.5, 2.75]), 1.0)
    assert cov[0, 0].tolist() == [0, 0, 1, 0, 0, 0]
    assert cov[1, 0].tolist() == pytest.approx([0, 0, 0.75, 0.25, 0, 0])
