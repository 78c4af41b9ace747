"""The simulated retina: stimuli, the model retina's properties, recordings, the sample, the CLI.

These check what the simulator is for (known receptive fields, ON/OFF pathways, nonlinear
subunits, realistic rates and reliability, determinism), not only that it runs.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from retinakit.errors import ConfigError, RetinakitError
from retinakit.simulate import Retina, SimulationSpec, export_spikes, simulate
from retinakit.simulate import stimuli as S
from retinakit.simulate.retina import bin_spike_bins, poisson_dead_time, temporal_filter
from retinakit.spikes import bin_spikes, pearson_columns, spike_triggered_average, split_half_reliability


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def ns_sim():
    """Natural scenes as in the bundled sample, with 2 instead of 10 training minutes."""
    return simulate(SimulationSpec(stimulus="naturalscene", minutes=2.0), progress=False)


@pytest.fixture(scope="module")
def wn_sim():
    """White noise, 20x20 checkers, 5 cells (one of each type), 3 minutes."""
    return simulate(SimulationSpec(stimulus="whitenoise", size=(20, 20), n_cells=5, minutes=3.0, test_seconds=5.0, n_repeats=4), progress=False)


# ----------------------------------------------------------------------------- stimuli
def test_white_noise_is_binary_int8_and_seeded():
    a = S.white_noise(500, (12, 10), np.random.default_rng(1))
    b = S.white_noise(500, (12, 10), np.random.default_rng(1))
    assert a.dtype == np.int8 and a.shape == (500, 12, 10)
    assert set(np.unique(a).tolist()) == {-1, 1}
    assert abs(a.mean()) < 0.02
    np.testing.assert_array_equal(a, b)
    # independent in time: neighbouring frames uncorrelated
    x = a.reshape(500, -1).astype(float)
    assert abs(np.mean(x[1:] * x[:-1])) < 0.03


def test_fullfield_flicker_kinds():
    g = S.fullfield_flicker(20000, np.random.default_rng(0), "gaussian", contrast=0.35)
    assert g.dtype == np.float16 and g.shape == (20000,)
    assert abs(float(g.astype(float).std()) - 0.35) < 0.01
    b = S.fullfield_flicker(100, np.random.default_rng(0), "binary")
    assert b.dtype == np.int8 and set(np.unique(b).tolist()) == {-1, 1}
    with pytest.raises(ConfigError):
        S.fullfield_flicker(10, np.random.default_rng(0), "pink")


def test_dead_leaves_have_a_natural_power_spectrum():
    rng = np.random.default_rng(0)
    n = 96
    power = 0.0
    for _ in range(12):
        im = S.dead_leaves((n, n), rng).astype(float)
        power = power + np.abs(np.fft.fft2(im - im.mean())) ** 2
    f = np.fft.fftfreq(n)
    fr = np.hypot(f[:, None], f[None, :])
    edges = np.logspace(np.log10(2.0 / n), np.log10(0.35), 10)
    fs, ps = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (fr >= lo) & (fr < hi)
        fs.append(np.sqrt(lo * hi))
        ps.append(power[m].mean())
    slope = np.polyfit(np.log(fs), np.log(ps), 1)[0]
    assert -2.5 < slope < -1.5  # ~1/f^2 power, i.e. ~1/f amplitude, like natural images


def test_natural_scenes_hold_images_with_small_jitter():
    hold = 50
    m = S.natural_scenes(4 * hold, (16, 16), np.random.default_rng(3), frame_rate=50.0, hold_s=1.0, jitter_max_px=3)
    assert m.dtype == np.uint8 and m.shape == (200, 16, 16)
    assert 40 < m.mean() < 215 and m.std() > 20
    diffs = np.abs(np.diff(m.astype(int), axis=0)).mean(axis=(1, 2))
    boundaries = np.array([hold - 1, 2 * hold - 1, 3 * hold - 1])
    within = np.delete(diffs, boundaries)
    assert np.all(diffs[boundaries] > 3 * np.median(within))  # a new image every second
    assert np.count_nonzero(within) > 10  # the image moves during a fixation
    # every frame of a fixation is a whole-pixel shift (<= 2 * 3 px) of its first frame
    first = m[0].astype(int)
    for t in range(1, hold):
        ok = False
        for dy in range(-6, 7):
            for dx in range(-6, 7):
                a = first[max(0, dy): 16 + min(0, dy), max(0, dx): 16 + min(0, dx)]
                b = m[t].astype(int)[max(0, -dy): 16 + min(0, -dy), max(0, -dx): 16 + min(0, -dx)]
                if np.array_equal(a, b):
                    ok = True
                    break
            if ok:
                break
        assert ok, f"frame {t} is not a shifted copy of the fixation's first frame"


def test_natural_scenes_without_flash_trains_are_unchanged_and_with_them_flash_at_a_6_to_20_hz_rhythm():
    plain = S.natural_scenes(1000, (16, 16), np.random.default_rng(5))
    np.testing.assert_array_equal(plain, S.natural_scenes(1000, (16, 16), np.random.default_rng(5), flash_trains=0.0))
    m = S.natural_scenes(40 * 100, (16, 16), np.random.default_rng(5), frame_rate=100.0, flash_trains=0.5)
    grey = np.all(m == 128, axis=(1, 2))
    trains = 0
    for i in range(40):
        fix = m[i * 100 : (i + 1) * 100]
        g = grey[i * 100 : (i + 1) * 100]
        if not g.any():  # a jittered fixation
            continue
        trains += 1
        on = np.flatnonzero(~g)
        onsets = on[np.r_[True, np.diff(on) > 1]]
        periods = np.diff(onsets)
        assert onsets[0] == 0 and len(onsets) >= 3
        assert np.all(periods == periods[0]) and 5 <= periods[0] <= 16  # 6.25-20 Hz at 100 Hz
        assert np.all(fix[on] == fix[0])  # one image, flashed unmoved
        assert onsets[-1] + periods[0] <= 70  # the train stops (omits its next flash) with >= 0.3 s left in the fixation
        assert all(2 <= np.count_nonzero(~g[o : o + periods[0]]) <= 3 for o in onsets)  # 20-30 ms flashes
    assert 10 <= trains <= 30  # about half of 40 fixations
    with pytest.raises(ConfigError, match="flash-trains"):
        SimulationSpec(flash_trains=1.5).validate()
    with pytest.raises(ConfigError, match="flash-trains"):
        SimulationSpec(stimulus="whitenoise", flash_trains=0.3).validate()
    assert "flash_trains" not in SimulationSpec().to_json() and SimulationSpec(flash_trains=0.3).to_json()["flash_trains"] == 0.3


def test_reversing_grating_reverses_contrast():
    g = S.reversing_grating(100, (8, 16), period_px=8, reversal_hz=2.0, frame_rate=100.0)
    assert g.shape == (100, 8, 16) and g.dtype == np.float32
    np.testing.assert_array_equal(g[0], -g[25])  # half a cycle later, the contrast is reversed
    np.testing.assert_array_equal(g[0, :, 0:4], g[0, :, 8:12])  # spatial period 8 px
    assert set(np.unique(g).tolist()) == {-1.0, 1.0}


def test_to_contrast():
    np.testing.assert_allclose(S.to_contrast(np.array([0, 255], dtype=np.uint8)), [-1.0, 1.0])
    np.testing.assert_array_equal(S.to_contrast(np.array([-1, 1], dtype=np.int8)), [-1.0, 1.0])


# ----------------------------------------------------------------------------- the model retina
def test_temporal_filters_are_causal_biphasic_and_short():
    for fr in (50.0, 100.0, 200.0):
        w = temporal_filter(0.06, 0.85, fr)
        assert w.size * (1.0 / fr) <= 0.3 + 1e-9  # within 300 ms
        assert w[np.argmax(np.abs(w))] > 0 and w.min() < -0.2 * w.max()  # biphasic
        assert abs(w.sum() - 0.15) < 0.03  # the area does not depend on the frame rate


def test_response_in_bin_t_depends_only_on_earlier_frames():
    r = Retina.build((16, 16), 5, seed=2)
    rng = np.random.default_rng(0)
    stim = S.white_noise(300, (16, 16), rng).astype(np.float32)
    t0 = 200
    changed = stim.copy()
    changed[t0] *= -1
    g0, g1 = r.generator(stim), r.generator(changed)
    d = np.abs(g1 - g0).max(axis=1)
    assert d[: t0 + 1].max() < 1e-5 * d.max()  # bins up to and including t0 do not see frame t0
    assert d[t0 + 1 :].max() > 0.01 * np.abs(g0).max()  # later bins do


def test_mosaic_centres_lie_well_inside_the_frame():
    r = Retina.build((32, 32), 10, seed=0)
    truth = r.ground_truth()
    assert [c["type"] for c in truth[:5]] == ["OFF transient", "ON transient", "OFF sustained", "ON sustained", "ON-OFF transient"]
    c = np.array([t["center_px"] for t in truth])
    assert np.all(c >= 7.9) and np.all(c <= 31 - 7.9)
    json.dumps(truth)  # JSON-able ground truth
    for name in {t["type"] for t in truth}:  # cells of one type tile space: no two on top of each other
        pts = c[[t["type"] == name for t in truth]]
        if len(pts) > 1:
            d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
            assert d[np.triu_indices(len(pts), 1)].min() > 3.0


def _step_response(r: Retina, contrast: float) -> np.ndarray:
    """Mean rate 20-200 ms after a full-frame step from grey, minus the rate before it."""
    T, t0 = 200, 100
    frames = np.zeros((T,) + r.frame_shape, dtype=np.float32)
    frames[t0:] = contrast
    rate = r.rate_hz(r.generator(frames))
    return rate[t0 + 2 : t0 + 20].mean(axis=0) - rate[t0 - 20 : t0].mean(axis=0)


def test_on_cells_respond_to_increments_and_off_cells_to_decrements():
    r = Retina.build((20, 20), 5, seed=1)
    r.calibrate(r.generator(S.natural_scenes(3000, (20, 20), np.random.default_rng(0))))
    up, down = _step_response(r, 0.5), _step_response(r, -0.5)
    for k, cell in enumerate(r.cells):
        if cell.polarity == "ON":
            assert up[k] > 5.0 and down[k] < 1.0, (cell.type.name, up[k], down[k])
        elif cell.polarity == "OFF":
            assert down[k] > 5.0 and up[k] < 1.0, (cell.type.name, up[k], down[k])
        else:  # ON-OFF: both
            assert up[k] > 5.0 and down[k] > 5.0, (cell.type.name, up[k], down[k])


def test_subunit_cells_show_frequency_doubling_and_linear_cells_do_not():
    """Contrast-reversing gratings (Hochstein & Shapley 1976): at the spatial phase where the
    fundamental (F1) vanishes, a cell with rectified subunits still responds at twice the
    reversal frequency (F2); a linear cell has a null phase where it barely responds at all."""
    shape = (24, 24)
    r = Retina.build(shape, 5, seed=3)
    r.calibrate(r.generator(S.white_noise(3000, shape, np.random.default_rng(5))))
    f, fr, period = 2.0, 100.0, 6
    t = np.arange(400) / fr
    z1, z2 = np.exp(-2j * np.pi * f * t), np.exp(-4j * np.pi * f * t)
    F1, F2 = [], []
    for phase in np.arange(0.0, 360.0, 11.25):
        g = S.reversing_grating(500, shape, period, phase, reversal_hz=f, frame_rate=fr)
        rate = r.rate_hz(r.generator(g))[100:]
        F1.append(2 * np.abs((rate * z1[:, None]).mean(axis=0)))
        F2.append(2 * np.abs((rate * z2[:, None]).mean(axis=0)))
    F1, F2 = np.array(F1), np.array(F2)
    for k, cell in enumerate(r.cells):
        null = int(np.argmin(F1[:, k]))
        doubling = F2[null, k] / F1[:, k].max()
        if cell.type.nonlinear:
            assert F2[null, k] > 2.0 * F1[null, k] and doubling > 0.3, (cell.type.name, F1[:, k], F2[:, k])
        else:
            assert doubling < 0.15, (cell.type.name, F1[:, k], F2[:, k])


def test_refractory_poisson_spikes_have_the_expected_count():
    rng = np.random.default_rng(0)
    T = 20000
    expected = np.zeros((T, 3))
    expected[:, 0] = 0.05  # 5 Hz at 10 ms bins
    expected[:, 1] = 0.5  # 50 Hz
    expected[:, 2] = 0.05 * (1 + np.sin(np.arange(T) / 30.0))  # modulated
    dead = 0.2  # 2 ms at 10 ms bins
    spikes = poisson_dead_time(expected, rng, dead)
    counts = bin_spike_bins(spikes, T)
    np.testing.assert_allclose(counts.sum(axis=0), expected.sum(axis=0), rtol=0.05)
    for s in spikes:
        assert np.all(np.diff(s) >= dead - 1e-9)  # refractory period
    fano = counts[:, 1].var() / counts[:, 1].mean()
    assert fano < 0.95  # refractoriness makes high-rate counts more regular than Poisson
    assert poisson_dead_time(np.zeros((10, 2)), rng, dead)[0].size == 0


# ----------------------------------------------------------------------------- recordings
def test_rates_and_reliability_are_realistic(ns_sim):
    rec = ns_sim.recording
    dt = rec.frame_dt
    assert rec.stimulus_kind == "naturalscene" and rec.train.stimulus.dtype == np.uint8
    rates = rec.train.counts.mean(axis=0) / dt
    assert np.all(rates > 2.0) and np.all(rates < 25.0), rates
    rel = split_half_reliability(rec.test.repeats)
    assert rec.test.n_repeats == 10
    assert np.all(rel["r_half"] > 0.45) and np.all(rel["r_half"] < 0.92), rel["r_half"]
    assert 0.5 <= np.median(rel["r_half"]) <= 0.9


def test_true_rate_is_the_expected_count(ns_sim):
    rec = ns_sim.recording
    tr, te = rec.train, rec.test
    # spike totals agree with the expected totals within Poisson error (refractoriness only lowers it)
    for observed, expected in ((tr.counts.sum(axis=0), tr.true_rate.sum(axis=0)), (te.repeats.sum(axis=(0, 1)), te.n_repeats * te.true_rate.sum(axis=0))):
        z = (observed - expected) / np.sqrt(expected)
        assert np.all(np.abs(z) < 4.0), z
    # the true rate is the best possible model: it reaches the ceiling of the repeat average
    rel = split_half_reliability(te.repeats)
    r_true = pearson_columns(te.true_rate, te.counts)
    assert np.all(r_true / rel["ceiling"] > 0.93)
    # training blocks are separated in time; frame times strictly increase
    assert np.all(np.diff(tr.time) > 0)
    assert rec.provenance["train_block_starts"] == [0]


def test_white_noise_stas_recover_the_planted_receptive_fields(wn_sim):
    rec = wn_sim.recording
    assert rec.train.stimulus.dtype == np.int8
    history = 15
    sta = spike_triggered_average(rec.train.stimulus, rec.train.counts, history)
    checked = 0
    for k, truth in enumerate(rec.provenance["cells"]):
        if truth["polarity"] == "ON-OFF":
            continue  # no consistent linear receptive field
        spatial = sta[k, history - 10 : history - 2].mean(axis=0)  # lags 3..10 frames
        peak = np.unravel_index(np.argmax(np.abs(spatial)), spatial.shape)
        dist = np.hypot(peak[0] - truth["center_px"][0], peak[1] - truth["center_px"][1])
        assert dist <= 1.5, (truth, peak)
        assert (spatial[peak] > 0) == (truth["polarity"] == "ON"), truth
        # the temporal profile at the centre peaks within 30-120 ms before the spike
        lag = history - int(np.argmax(np.abs(sta[k, :, peak[0], peak[1]])))
        assert 3 <= lag <= 12
        checked += 1
    assert checked == 4


def test_same_seed_gives_identical_files(tmp_path):
    spec = SimulationSpec(stimulus="whitenoise", size=(10, 10), n_cells=3, minutes=0.2, test_seconds=1.0, n_repeats=3, seed=7)
    from retinakit.simulate import simulate_to_file

    a = simulate_to_file(spec, tmp_path / "a.h5", spikes_path=tmp_path / "a.npz", progress=False)
    b = simulate_to_file(spec, tmp_path / "b.h5", spikes_path=tmp_path / "b.npz", progress=False)
    np.testing.assert_array_equal(a.recording.train.counts, b.recording.train.counts)
    np.testing.assert_array_equal(a.recording.test.repeats, b.recording.test.repeats)
    assert _sha(tmp_path / "a.h5") == _sha(tmp_path / "b.h5")
    npa, npb = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    for key in npa.files:
        np.testing.assert_array_equal(npa[key], npb[key])
    c = simulate(SimulationSpec(stimulus="whitenoise", size=(10, 10), n_cells=3, minutes=0.2, test_seconds=1.0, n_repeats=3, seed=8), progress=False)
    assert not np.array_equal(a.recording.train.stimulus, c.recording.train.stimulus)


def test_saved_recording_loads_with_ground_truth(tmp_path):
    from retinakit.io import load_recording
    from retinakit.simulate import simulate_to_file

    spec = SimulationSpec(stimulus="naturalscene", size=(12, 14), n_cells=3, minutes=0.5, test_seconds=2.0, n_repeats=3, block_minutes=0.2)
    sim = simulate_to_file(spec, tmp_path / "ns.h5", progress=False)
    rec = load_recording(tmp_path / "ns.h5")
    assert rec.frame_shape == (12, 14) and rec.stimulus_kind == "naturalscene"
    assert rec.train.stimulus.dtype == np.uint8
    np.testing.assert_array_equal(rec.train.stimulus, sim.recording.train.stimulus)
    np.testing.assert_allclose(rec.test.true_rate, sim.recording.test.true_rate)
    assert set(rec.train.rates) == {"firing_rate_5ms", "firing_rate_10ms", "firing_rate_20ms"}
    assert rec.provenance["train_block_starts"] == [0, 1200, 2400]  # 30 s in blocks of 12 s
    gaps = np.diff(rec.train.time)
    assert np.count_nonzero(gaps > 1.5 * rec.frame_dt) == 2
    cells = rec.provenance["cells"]
    assert [c["id"] for c in cells] == rec.cell_ids.tolist()
    assert {"type", "polarity", "center_px", "nonlinear", "rf_sigma_px"} <= set(cells[0])
    assert rec.provenance["simulator_version"] and rec.provenance["spec"]["seed"] == 0


def test_spike_export_bins_back_to_the_counts(tmp_path):
    spec = SimulationSpec(stimulus="fullfield", minutes=0.5, n_cells=3, test_seconds=3.0, n_repeats=4, block_minutes=0.25)
    sim = simulate(spec, progress=False)
    rec = sim.recording
    assert rec.train.stimulus.ndim == 1 and rec.train.stimulus.dtype == np.float16
    export_spikes(sim, tmp_path / "spikes.npz")
    z = np.load(tmp_path / "spikes.npz")
    ids = z["unit_ids"].tolist()
    assert ids == rec.cell_ids.tolist()
    per_unit = [z["spike_times"][z["spike_units"] == u] for u in ids]
    np.testing.assert_array_equal(bin_spikes(per_unit, z["frame_times"], float(z["frame_dt"])), rec.train.counts)
    for r in range(rec.test.n_repeats):
        np.testing.assert_array_equal(bin_spikes(per_unit, z["test_frame_times"][r], float(z["frame_dt"])), rec.test.repeats[r])
    np.testing.assert_array_equal(z["repeat_starts"], z["test_frame_times"][:, 0])
    assert np.all(z["repeat_starts"] > z["frame_times"][-1])  # repeats follow training on one clock
    for t in per_unit:
        assert np.all(np.diff(t) >= 0.002 - 1e-9)
    np.testing.assert_array_equal(z["stimulus"], rec.train.stimulus)
    assert json.loads(str(z["meta"]))["stimulus_kind"] == "fullfield"


def test_binary_fullfield_and_other_frame_rates():
    sim = simulate(SimulationSpec(stimulus="fullfield", flicker="binary", minutes=1.0, n_cells=4, frame_rate=50.0, test_seconds=10.0), progress=False)
    rec = sim.recording
    assert rec.train.stimulus.dtype == np.int8 and rec.frame_dt == pytest.approx(0.02)
    assert rec.train.n_bins == 3000
    rates = rec.train.counts.mean(axis=0) / rec.frame_dt
    assert np.all(rates > 2.0) and np.all(rates < 25.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stimulus": "movie"},
        {"size": (4, 4)},
        {"n_repeats": 1},
        {"minutes": -1.0},
        {"n_cells": 0},
        {"frame_rate": 0.0},
        {"flicker": "pink"},
    ],
)
def test_bad_specs_raise_config_errors(kwargs):
    with pytest.raises(ConfigError):
        SimulationSpec(**kwargs).validate()


# ----------------------------------------------------------------------------- the bundled sample
def test_sample_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    from retinakit import sample

    monkeypatch.setenv("RETINAKIT_CACHE", str(tmp_path / "cache"))
    small = {"stimulus": "naturalscene", "size": [12, 12], "n_cells": 2, "minutes": 0.2, "test_seconds": 1.0, "n_repeats": 3, "frame_rate": 100.0, "seed": 0}
    monkeypatch.setitem(sample.SAMPLE_SPECS, "naturalscene", small)
    p = sample.sample_path(progress=False)
    assert p.parent == tmp_path / "cache" and p.name.startswith("sample-naturalscene-sim")
    stamp = p.stat().st_mtime_ns
    assert sample.sample_path(progress=False) == p and p.stat().st_mtime_ns == stamp  # reused, not regenerated
    assert list(p.parent.iterdir()) == [p]  # no temporary files left behind
    monkeypatch.setitem(sample.SAMPLE_SPECS, "naturalscene", dict(small, seed=1))
    q = sample.sample_path(progress=False)
    assert q != p and q.exists()  # a changed spec makes a new file
    with pytest.raises(ConfigError):
        sample.sample_path("movie")


def test_cache_dir_precedence(tmp_path, monkeypatch):
    from retinakit.sample import cache_dir

    monkeypatch.setenv("RETINAKIT_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("RETINAKIT_CACHE")
    assert cache_dir() == tmp_path / "b" / "retinakit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "retinakit"


def test_the_real_sample_matches_its_spec(tmp_path, monkeypatch):
    from retinakit.io import load_recording
    from retinakit.sample import SAMPLE_SPECS, sample_path

    monkeypatch.setenv("RETINAKIT_CACHE", str(tmp_path))
    p = sample_path("naturalscene", progress=False)
    rec = load_recording(p)
    spec = SAMPLE_SPECS["naturalscene"]
    assert rec.stimulus_kind == "naturalscene" and rec.frame_rate == pytest.approx(spec["frame_rate"])
    assert rec.frame_shape == tuple(spec["size"]) and rec.n_cells == spec["n_cells"]
    assert rec.train.n_bins == int(spec["minutes"] * 60 * spec["frame_rate"])
    assert rec.test.n_bins == int(spec["test_seconds"] * spec["frame_rate"]) and rec.test.n_repeats == spec["n_repeats"]
    rates = rec.train.counts.mean(axis=0) / rec.frame_dt
    assert np.all(rates > 2.0) and np.all(rates < 25.0)
    r_half = split_half_reliability(rec.test.repeats)["r_half"]
    assert np.all(r_half > 0.45) and np.all(r_half < 0.92)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["naturalscene", "whitenoise"])
def test_the_real_samples_are_byte_identical_when_regenerated(tmp_path, monkeypatch, kind):
    from retinakit.sample import sample_path

    monkeypatch.setenv("RETINAKIT_CACHE", str(tmp_path))
    p = sample_path(kind, progress=False)
    first = _sha(p)
    p.unlink()
    assert _sha(sample_path(kind, progress=False)) == first


# ----------------------------------------------------------------------------- the command
def test_cli_simulate_writes_files_and_summary(tmp_path):
    from retinakit.cli import main

    out, spikes = tmp_path / "sim.h5", tmp_path / "sp.npz"
    args = ["simulate", "--stimulus", "whitenoise", "--minutes", "0.3", "--size", "12x16", "--cells", "3", "--repeats", "3",
            "--test-seconds", "2", "--seed", "4", "--out", str(out), "--export-spikes", str(spikes), "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert out.exists() and spikes.exists()
    assert "OFF transient" in res.output and "split-half r" in res.output
    res = CliRunner().invoke(main, args[:-5] + ["--out", str(tmp_path / "j.h5"), "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["frame_shape"] == [12, 16] and len(s["cells"]) == 3 and s["seed"] == 4
    assert all(c["mean_rate_hz"] > 0 for c in s["cells"])


@pytest.mark.parametrize("args", [["--size", "4"], ["--size", "ten"], ["--repeats", "1"], ["--minutes", "0"]])
def test_cli_simulate_bad_input_is_one_line_exit_2(tmp_path, args):
    from retinakit.cli import main

    res = CliRunner().invoke(main, ["simulate", "--out", str(tmp_path / "x.h5"), "--quiet"] + args)
    assert res.exit_code == 2
    assert res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.h5").exists()


def test_retina_errors_are_retinakit_errors():
    r = Retina.build((10, 10), 2, seed=0)
    with pytest.raises(RetinakitError):
        r.generator(np.zeros((10, 8, 8), dtype=np.float32))
    with pytest.raises(RetinakitError):
        r.rate_hz(np.zeros((10, 2)))


@pytest.mark.slow
def test_ten_minutes_of_50x50_natural_scenes(tmp_path):
    """The speed figure of the issue (10 min, 50x50 natural scenes, 10 cells); no timing assert."""
    sim = simulate(SimulationSpec(stimulus="naturalscene", size=(50, 50), n_cells=10, minutes=10.0), progress=False)
    assert sim.recording.train.n_bins == 60000


# ----------------------------------------------------------------------------- the ground truth as a probe target; OSR cells
@pytest.fixture(scope="module")
def osr_file(tmp_path_factory):
    """Full-field flicker from a retina with the five standard types plus an OSR cell (cell 6), saved."""
    from retinakit.simulate import simulate_to_file

    path = tmp_path_factory.mktemp("osr") / "osr.h5"
    spec = SimulationSpec(stimulus="fullfield", n_cells=6, minutes=1.0, test_seconds=3.0, n_repeats=3, cell_types=("default", "on-omitted-stimulus"))
    simulate_to_file(spec, path, progress=False)
    return path


def test_default_cell_mix_is_not_written_and_unchanged():
    assert "cell_types" not in SimulationSpec().to_json()  # default files (and the sample's name) stay as they were
    a = simulate(SimulationSpec(stimulus="fullfield", n_cells=5, minutes=0.2, test_seconds=1.0, n_repeats=2), progress=False)
    b = simulate(SimulationSpec(stimulus="fullfield", n_cells=5, minutes=0.2, test_seconds=1.0, n_repeats=2, cell_types=("default",)), progress=False)
    np.testing.assert_array_equal(a.recording.train.true_rate, b.recording.train.true_rate)
    np.testing.assert_array_equal(a.recording.test.repeats, b.recording.test.repeats)
    assert "cell_type_table" not in a.recording.provenance and "cell_type_table" in b.recording.provenance
    with pytest.raises(ConfigError, match="unknown cell type"):
        SimulationSpec(cell_types=("on-osr-ish",)).validate()


def test_truth_is_rebuilt_exactly_from_the_recording(osr_file):
    from retinakit.io import load_recording
    from retinakit.simulate.truth import is_simulation, load_truth

    rec = load_recording(osr_file)
    assert is_simulation(osr_file) and rec.provenance["cells"][5]["type"] == "ON omitted-stimulus"
    truth = load_truth(osr_file)
    pred = truth.predict(rec.test.stimulus)
    assert np.isnan(pred[: truth.history]).all()
    # the test segment was simulated after a 1-s lead-in; past the retina's memory the rebuilt truth gives the stored rate
    np.testing.assert_allclose(pred[150:, :5], rec.test.true_rate[150:, :5], rtol=1e-4, atol=1e-6)
    assert load_truth(osr_file, cells=[6, 2]).predict(rec.test.stimulus).shape == (rec.test.n_bins, 2)


def test_a_changed_simulator_is_refused(osr_file):
    import copy

    from retinakit.errors import ModelError
    from retinakit.simulate.truth import rebuild_retina, simulation_provenance

    prov = copy.deepcopy(simulation_provenance(osr_file))
    prov["cells"][2]["t_peak_ms"] += 1.0
    with pytest.raises(ModelError, match="differs from the stored ground truth"):
        rebuild_retina(prov)
    prov["simulator_version"] = "0"
    with pytest.raises(ModelError, match="simulator version"):
        rebuild_retina(prov)


def test_osr_cells_of_the_truth_have_slope_one_and_no_other_cell_an_osr(osr_file, tmp_path):
    """The OSR cell fires a fixed delay after the omitted flash was due (latency from the last flash
    = period + delay, slope 1 by construction); the probe must find that, and no OSR elsewhere."""
    from retinakit.probes import run_probe
    from retinakit.simulate.truth import load_truth

    res = run_probe(load_truth(osr_file), "osr", {}, tmp_path, progress=False)
    by_id = {c["id"]: c for c in res["cells"]}
    osr = by_id[6]
    assert osr["osr"] and osr["bursts"] >= 6  # at the fastest rates the cell's adapted drive is too weak to burst
    assert osr["fit"]["slope"] == pytest.approx(1.0, abs=0.2)
    assert osr["fit"]["r"] > 0.95
    assert [c["id"] for c in res["cells"] if c["osr"]] == [6]


def test_truth_contrast_adaptation_matches_the_planted_gain(osr_file, tmp_path):
    """The normalised gain ratio of the linear (sustained) cells is the ratio of the retina's own
    divisive gain 1 / (1 + a sigma) at high and low contrast; the strongly adapting transient cells halve it."""
    from retinakit.probes import run_probe
    from retinakit.probes.base import stimulus_levels
    from retinakit.probes.stimuli import contrast_switch_noise
    from retinakit.simulate.truth import load_truth

    truth = load_truth(osr_file)
    res = run_probe(truth, "contrast-adaptation", {}, tmp_path, progress=False)
    ratios = {c["id"]: c["gain_ratio"] for c in res["cells"]}
    lv = stimulus_levels(truth)
    assert lv.mean == pytest.approx(0.0, abs=0.05)
    block = res["block_frames"]
    x, sd, _ = contrast_switch_noise(np.random.default_rng(0), block, res["cycles"], truth.history + block, 0.1, 0.35)
    gain = truth.retina.contrast_gain((x * lv.amplitude + lv.mean).astype(np.float32))
    expected = gain[sd == 0.35].mean(0) / gain[sd == 0.1].mean(0)
    for cid in (3, 4):  # OFF and ON sustained: linear pooling, so the gain is exactly divisive
        assert ratios[cid] == pytest.approx(expected[cid - 1], abs=0.1)
        assert expected[cid - 1] < 0.9
    for cid in (1, 2, 5):  # transient cells, adaptation strength 25
        assert ratios[cid] < 0.7


def test_cli_simulate_with_osr_cells_and_bad_cell_types(tmp_path):
    from retinakit.cli import main

    base = ["simulate", "--stimulus", "fullfield", "--minutes", "0.2", "--cells", "6", "--repeats", "2", "--test-seconds", "1", "--quiet"]
    res = CliRunner().invoke(main, base + ["--with-osr", "--out", str(tmp_path / "o.h5")])
    assert res.exit_code == 0, res.output
    assert "ON omitted-stimulus" in res.output and "OFF transient" in res.output
    res = CliRunner().invoke(main, base + ["--cell-types", "on-sustained,bogus", "--out", str(tmp_path / "b.h5")])
    assert res.exit_code == 2 and "unknown cell type 'bogus'" in res.output and not (tmp_path / "b.h5").exists()
