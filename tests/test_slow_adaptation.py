"""Slow contrast adaptation in the simulated retina, and the contrast-steps flicker that shows it."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from retinakit.errors import ConfigError
from retinakit.simulate import Retina, SimulationSpec, simulate
from retinakit.simulate import stimuli as S
from retinakit.simulate.retina import RetinaParams


def test_contrast_steps_hold_each_contrast_for_2_to_8_seconds():
    rate = 50.0
    x = S.fullfield_flicker(int(600 * rate), np.random.default_rng(3), "contrast-steps", frame_rate=rate)
    assert x.dtype == np.float16 and x.shape == (30000,)
    np.testing.assert_array_equal(x, S.fullfield_flicker(int(600 * rate), np.random.default_rng(3), "contrast-steps", frame_rate=rate))
    # the local s.d. (1-s windows) takes few distinct levels, within the range, and changes between them
    sd = x.astype(float).reshape(-1, int(rate)).std(1)
    assert S.STEP_CONTRASTS[0] * 0.6 < sd.min() and sd.max() < S.STEP_CONTRASTS[1] * 1.3
    assert sd.max() / sd.min() > 2.5
    # 600 s in steps of 2-8 s: between 75 and 300 steps; a window straddles at most one change, so the
    # s.d. of most neighbouring windows agrees
    same = np.abs(np.diff(np.log(sd))) < 0.35
    assert 0.6 < same.mean() < 0.99


def _gain_after_steps(slow: float) -> np.ndarray:
    retina = Retina.build((), 5, seed=1, frame_rate=100.0, params=RetinaParams(slow_adaptation=slow))
    rng = np.random.default_rng(0)
    x = np.r_[rng.standard_normal(1000) * 0.1, rng.standard_normal(1000) * 0.4, rng.standard_normal(1500) * 0.1].astype(np.float32)
    return retina.contrast_gain(x)


def test_slow_adaptation_keeps_changing_the_gain_for_seconds_after_a_contrast_step():
    """After a step down the fast gain is back within a second; with slow adaptation it keeps rising for
    seconds (and is lower throughout, the slow part adding to the divisor)."""
    fast, slow = _gain_after_steps(0.0), _gain_after_steps(1.0)
    win = lambda g, a, b: g[2000 + a : 2000 + b].mean(0)  # noqa: E731  mean gain a..b bins after the step down
    fast_rise = win(fast, 1000, 1500) / win(fast, 100, 200)
    slow_rise = win(slow, 1000, 1500) / win(slow, 100, 200)
    assert np.all(np.abs(fast_rise - 1) < 0.1)
    assert np.all(slow_rise > 1.15)
    assert np.all(slow[100:].mean(0) < fast[100:].mean(0))


def test_slow_adaptation_is_written_only_when_on_and_the_truth_rebuilds_it(tmp_path):
    from retinakit.io import save_recording
    from retinakit.simulate.truth import rebuild_retina, simulation_provenance

    kw = dict(stimulus="fullfield", flicker="contrast-steps", n_cells=5, minutes=0.5, test_seconds=2.0, n_repeats=2)
    plain = simulate(SimulationSpec(**kw), progress=False)
    assert "slow_adaptation" not in plain.recording.provenance["spec"]
    assert "slow_adaptation" not in plain.recording.provenance["retina_params"]
    sim = simulate(SimulationSpec(**kw, slow_adaptation=1.0), progress=False)
    assert sim.recording.provenance["spec"]["slow_adaptation"] == 1.0
    assert sim.recording.provenance["retina_params"]["slow_adaptation"] == 1.0
    # the slower gain lowers the drive: other rates than without it, from the same stimulus
    np.testing.assert_array_equal(plain.recording.train.stimulus, sim.recording.train.stimulus)
    assert not np.allclose(plain.recording.train.true_rate, sim.recording.train.true_rate)
    path = tmp_path / "slow.h5"
    save_recording(sim.recording, path)
    rebuilt = rebuild_retina(simulation_provenance(path))
    assert rebuilt.params.slow_adaptation == 1.0
    x = np.asarray(sim.recording.train.stimulus, dtype=np.float32)[:2000]
    np.testing.assert_array_equal(rebuilt.contrast_gain(x), sim.retina.contrast_gain(x))


@pytest.mark.parametrize("value", [-1.0, float("nan"), 11.0])
def test_a_bad_slow_adaptation_strength_is_a_config_error(value):
    with pytest.raises(ConfigError, match="slow adaptation"):
        SimulationSpec(slow_adaptation=value).validate()


def test_cli_simulate_bad_slow_adaptation_is_one_line_exit_2(tmp_path):
    from retinakit.cli import main

    out = tmp_path / "x.h5"
    res = CliRunner().invoke(main, ["simulate", "--stimulus", "fullfield", "--slow-adaptation", "-1", "--out", str(out), "-q"])
    assert res.exit_code == 2
    assert "slow adaptation" in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()
