"""Probes run on hand-built models whose behaviour is known, from stimulus to result.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_probes_models import DT, GainControl, Subunits, linear_fitted, ln_fitted, meta_for, osr_fitted

from retinakit.errors import ConfigError, ModelError
from retinakit.models.fitted import FittedModel
from retinakit.probes import RESULT_FILE, describe_probes, get_probe, probe_names, run_probe

FAST = {  # small sweeps so the default test run stays quick (used by test_probes_cli.py)
    "osr": {"periods": "0.05,0.08,0.12"},
    "step": {"duration": 0.2},
    "paired-flash": {"intervals": "0.05,0.1,0.3"},
    "reversing-grating": {"widths": "1,4", "phases": 2, "period": 0.2, "cycles": 2},
    "contrast-adaptation": {"cycles": 3, "block": 0.4},
    "motion-anticipation": {"width": 2, "speed": 100},
}


def strict_json(path: Path) -> dict:
    """Parse a result file refusing NaN/Infinity (not JSON)."""
    def bad(name: str) -> None:
        raise AssertionError(f"{path} contains {name}")

    return json.loads(path.read_text(), parse_constant=bad)


def test_osr_toy_model_gives_slope_one_and_its_delay(tmp_path: Path) -> None:
    res = run_probe(osr_fitted(history=40, delay=3), "osr", {}, tmp_path, progress=False)
    periods = [p["period_frames"] for p in res["periods"]]
    assert periods == list(range(5, 17))  # 6-20 Hz at 10 ms frames
    for p in res["periods"]:
        c = p["cells"][0]
        assert c["burst"] and c["latency_from_last_s"] == pytest.approx((p["period_frames"] + 3) * DT)
        assert c["latency_from_expected_s"] == pytest.approx(3 * DT)
    for fit in (res["cells"][0]["fit"], res["population"]["fit"], res["pooled"]["fit"]):
        assert fit["slope"] == pytest.approx(1.0) and fit["intercept"] == pytest.approx(0.03) and fit["r"] == pytest.approx(1.0)
    doc = strict_json(tmp_path / RESULT_FILE)
    assert doc["probe"] == "osr" and doc["params"]["polarity"] == "auto" and doc["cells"][0]["bursts"] == 12
    assert {"osr_responses.png", "osr_latency.png"} <= {p.name for p in tmp_path.iterdir()}
    assert "slope" in get_probe("osr").summary(res)


@pytest.mark.parametrize("lags", [[3, 4], [6, 9], [2, 12]])
def test_ln_model_shows_no_omitted_flash_burst(tmp_path: Path, lags: list[int]) -> None:
    f = ln_fitted(history=40, frame_shape=(), n_cells=2, peak_lags=lags)
    res = run_probe(f, "osr", {}, tmp_path, progress=False)
    assert [c["polarity"] for c in res["cells"]] == ["bright", "dark"]  # ON cell, OFF cell
    for p in res["periods"]:
        for c in p["cells"]:
            assert c["driven"]  # the flashes do drive the cells...
            assert not c["burst"]  # ...but nothing after the omission exceeds their response
            assert c["omission_peak_hz"] <= c["flash_peak_hz"] + 1e-6
        assert not p["population"]["burst"]
    assert res["pooled"]["bursts"] == 0


def test_linear_cells_step_paired_flash_and_osr(tmp_path: Path) -> None:
    f = linear_fitted(history=12, frame_shape=(), n_cells=2, lag=4)
    step = run_probe(f, "step", {"duration": 0.2}, tmp_path / "step", progress=False)
    on, off = step["cells"]
    assert on["class"] == "ON" and off["class"] == "OFF"
    assert on["latency_s"] == pytest.approx(0.04) and off["latency_s"] == pytest.approx(0.04)
    assert on["sustained_index"] == pytest.approx(1.0, abs=1e-5)  # a linear delay line is perfectly sustained
    pf = run_probe(f, "paired-flash", {}, tmp_path / "pf", progress=False)
    for c in pf["cells"]:
        assert c["responsive"] and c["recovery"] == pytest.approx([1.0] * len(pf["intervals_s"]), abs=1e-4)
    osr = run_probe(f, "osr", {"periods": "0.05,0.1,0.15"}, tmp_path / "osr", progress=False)
    assert not any(c["burst"] for p in osr["periods"] for c in p["cells"])


def test_contrast_adaptation_gain_linear_vs_gain_control(tmp_path: Path) -> None:
    lin = run_probe(linear_fitted(history=12, frame_shape=(), n_cells=1, lag=3), "contrast-adaptation", {"cycles": 4, "block": 0.5}, tmp_path / "a", progress=False)
    c = lin["cells"][0]
    assert c["gain_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert c["peak_lag_low_s"] == pytest.approx(0.03) and c["peak_lag_high_s"] == pytest.approx(0.03)
    assert c["gain_low"] == pytest.approx(0.05 / DT, rel=1e-3)  # gain 0.05 counts/bin per unit contrast = 5 Hz
    gc = FittedModel(GainControl(history=12).eval(), meta_for(12, (), 1, "toy"))
    res = run_probe(gc, "contrast-adaptation", {"cycles": 4, "block": 0.5}, tmp_path / "b", progress=False)
    assert res["cells"][0]["gain_ratio"] < 0.6 and res["n_gain_reduced"] == 1
    assert strict_json(tmp_path / "b" / RESULT_FILE)["cells"][0]["gain_ratio"] < 0.6


def test_frequency_doubling_subunits_but_not_linear(tmp_path: Path) -> None:
    params = {"widths": "1,2,8", "phases": 4, "period": 0.2, "cycles": 2}
    sub = FittedModel(Subunits(history=8, frame_shape=(8, 8)).eval(), meta_for(8, (8, 8), 1, "toy"))
    r = run_probe(sub, "reversing-grating", params, tmp_path / "s", progress=False)
    c = r["cells"][0]
    assert c["frequency_doubling"] and 1.0 in c["doubling_widths_px"]
    assert c["ratio_f2_f1"][0] > 2.0  # fine bars: mostly F2
    lin = linear_fitted(history=8, frame_shape=(8, 8), n_cells=1, lag=3)
    r = run_probe(lin, "reversing-grating", params, tmp_path / "l", progress=False)
    c = r["cells"][0]
    assert not c["frequency_doubling"]
    assert max(c["f2_hz"]) == pytest.approx(0.0, abs=1e-3)  # a linear cell has no second harmonic
    assert max(c["f1_hz"]) > 1.0


def test_motion_anticipation_of_a_linear_point_cell_is_its_delay(tmp_path: Path) -> None:
    rf = np.zeros((1, 8, 8))
    rf[0, 4, 3] = 1.0
    f = linear_fitted(history=12, frame_shape=(8, 8), n_cells=1, lag=4, rf=rf)
    res = run_probe(f, "motion-anticipation", {"width": 1, "speed": 25, "flash": 0.01}, tmp_path, progress=False)
    c = res["cells"][0]
    assert c["polarity"] == "bright" and c["responsive"]
    assert c["rf_center_px"] == pytest.approx(3.5)
    assert c["flash_latency_s"] == pytest.approx(0.04)
    for d in c["directions"].values():
        assert d["lag_s"] == pytest.approx(0.04) and d["anticipation_s"] == pytest.approx(0.0, abs=1e-9)
    assert not c["leads"] and res["n_leading"] == 0


@pytest.mark.parametrize("name", ["reversing-grating", "motion-anticipation"])
def test_spatial_probes_refuse_full_field_models(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelError, match="spatial frames"):
        run_probe(linear_fitted(frame_shape=(), n_cells=1), name, {}, tmp_path, progress=False)


def test_parameters_are_validated_with_clear_errors(tmp_path: Path) -> None:
    f = linear_fitted(frame_shape=(), n_cells=1)
    with pytest.raises(ConfigError, match="did you mean 'periods'"):
        run_probe(f, "osr", {"period": "0.1"}, tmp_path)
    with pytest.raises(ConfigError, match="out of range"):
        run_probe(f, "osr", {"contrast": "1.5"}, tmp_path)
    with pytest.raises(ConfigError, match="not longer than the 20-ms flash"):
        run_probe(f, "osr", {"periods": "0.02,0.1"}, tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'bright'"):
        run_probe(f, "paired-flash", {"polarity": "brigth"}, tmp_path)
    with pytest.raises(ConfigError, match="whole number"):
        run_probe(f, "contrast-adaptation", {"cycles": "2.5"}, tmp_path)
    with pytest.raises(ConfigError, match="must exceed low"):
        run_probe(f, "contrast-adaptation", {"low": 0.4, "high": 0.2}, tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'osr'"):
        get_probe("osrr")
    assert not any(tmp_path.iterdir())  # nothing written for rejected parameters


def test_default_osr_periods_follow_the_frame_rate() -> None:
    from retinakit.probes.osr import default_periods

    assert default_periods(0.01) == list(range(5, 17))  # 50-160 ms: 20-6.25 Hz
    assert default_periods(1 / 60) == list(range(3, 11))
    assert default_periods(1 / 30) == [2, 3, 4, 5]


def test_command_line_params_parse_and_reject_duplicates() -> None:
    from retinakit.probes.base import parse_param_args

    assert parse_param_args(["periods=0.05,0.1", " contrast = 0.5"]) == {"periods": "0.05,0.1", "contrast": "0.5"}
    with pytest.raises(ConfigError, match="given twice"):
        parse_param_args(["contrast=1", "contrast=0.5"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_param_args(["=3"])


def test_list_describes_every_probe_and_parameter() -> None:
    text = describe_probes()
    for name in probe_names():
        assert f"{name}: " in text
        for p in get_probe(name).params:
            assert f"    {p.name}=" in text
    assert "periods=auto [s]" in text
