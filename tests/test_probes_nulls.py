"""Every probe against its null: static LN models (softplus, sigmoid, U-shaped), which have no
adaptation, no omitted-stimulus response and linear spatial summation, must come out as such,
although the naive readouts (filter-norm gain ratio, raw paired-flash recovery, the old OSR
criterion) call them adapting, depressing or bursting. Systems with the mechanism must not."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from test_probes_models import DT, LinearRF, Windowed, biphasic, ln_fitted, SpatialStatic, Subunits, gain_control_fitted, linear_fitted, meta_for, osr_fitted, static_fitted

from retinakit.errors import ConfigError
from retinakit.models.fitted import FittedModel
from retinakit.probes import run_probe
from retinakit.probes.contrast_adaptation import image_pattern
from retinakit.probes.lnnull import align_gain, fit_static_ln
from retinakit.probes.osr import flash_trace, sweep

KINDS = ("softplus", "sigmoid", "ushape")


@pytest.mark.parametrize("kind", KINDS)
def test_static_ln_has_no_omitted_stimulus_response(tmp_path: Path, kind: str) -> None:
    res = run_probe(static_fitted(kind, history=40), "osr", {}, tmp_path, progress=False)
    for cell in res["cells"]:
        assert cell["driven"] and not cell["osr"] and cell["bursts"] == 0
        assert cell["null_r2"] > 0.9  # the static-LN null fitted to flicker captures a static LN
    for p in res["periods"]:
        for c in p["cells"]:
            assert c["excess_hz"] < 0.25 * c["single_flash_rise_hz"]  # the omission never beats the continued train by the margin
    assert res["population"]["n_osr"] == 0


def test_the_old_osr_criterion_calls_the_u_shaped_ln_bursting(tmp_path: Path) -> None:
    """Why the continued-train control is needed: peak after the omission vs the last flashes' peak
    (the former criterion) fires for a U-shaped static LN at some periods."""
    res = run_probe(static_fitted("ushape", history=40), "osr", {"null": "none"}, tmp_path, progress=False)
    old = [c["omission_peak_hz"] - c["baseline_hz"] > 1.2 * (c["flash_peak_hz"] - c["baseline_hz"]) for p in res["periods"] for c in p["cells"]]
    assert any(old)
    assert not any(c["burst"] for p in res["periods"] for c in p["cells"])


def test_planted_osr_gives_slope_one_with_a_tight_interval(tmp_path: Path) -> None:
    res = run_probe(osr_fitted(history=40, delay=3), "osr", {}, tmp_path, progress=False)
    cell = res["cells"][0]
    assert cell["osr"] and cell["bursts"] == 12
    lo, hi = cell["fit"]["slope_ci"]
    assert lo <= 1.0 <= hi and hi - lo < 0.01
    assert cell["fit"]["intercept"] == pytest.approx(3 * DT, abs=1e-6)


class RampAfterFlashes(Windowed):
    """Flash responses, and a rate that grows with the time since the last bright frame (capped
    at the window): no burst anywhere, only a ramp once a train stops."""

    def __init__(self, history: int) -> None:
        super().__init__()
        self.history = history
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H = x.shape[0], self.history
        lum = x.reshape(B, H, -1).mean(-1)
        pos = torch.arange(H).expand(B, H)
        last = torch.where(lum > 0.3, pos, torch.full_like(pos, -1)).max(1).values
        since = torch.where(last >= 0, H - last, torch.full_like(last, H)).float()
        return (0.02 + 0.05 * (since == 2).float() + 0.004 * since)[:, None] + 0 * self.dummy


def test_a_ramp_after_the_train_is_not_a_burst(tmp_path: Path) -> None:
    """The rate after the omission keeps rising to the end of the search window: the omitted train
    beats the continued one there, at latency period + window (slope 1), but nothing falls: no burst."""
    f = FittedModel(RampAfterFlashes(40).eval(), meta_for(40, (), 1, "toy"))
    res = run_probe(f, "osr", {"null": "none", "polarity": "bright"}, tmp_path, progress=False)
    cells = [p["cells"][0] for p in res["periods"]]
    assert all(c["excess_hz"] > 0.25 * c["single_flash_rise_hz"] for c in cells)  # what the old rule called a burst
    assert not any(c["peak_falls"] or c["burst"] for c in cells)
    assert not res["cells"][0]["osr"]


@pytest.mark.parametrize("kind", KINDS)
def test_static_ln_contrast_gain_ratio_is_one(tmp_path: Path, kind: str) -> None:
    res = run_probe(static_fitted(kind, history=30), "contrast-adaptation", {}, tmp_path, progress=False)
    for c in res["cells"]:
        assert c["gain_ratio"] == pytest.approx(1.0, abs=0.1)
    assert res["n_gain_reduced"] == 0
    if kind != "ushape":  # the filter norms alone differ: a static nonlinearity changes the least-squares gain (Bussgang)
        assert all(abs(c["filter_norm_ratio"] - 1.0) > 0.2 for c in res["cells"])


def test_gain_control_model_reduces_its_normalised_gain(tmp_path: Path) -> None:
    res = run_probe(gain_control_fitted(history=30), "contrast-adaptation", {}, tmp_path, progress=False)
    (c,) = res["cells"]
    # drive / (c0 + rms): the rms of the window is ~sd, so the gain falls about as (c0 + 0.1) / (c0 + 0.35)
    assert c["gain_ratio"] == pytest.approx((0.05 + 0.1) / (0.05 + 0.35), abs=0.1)
    assert res["n_gain_reduced"] == 1


class SpatialGainControl(Windowed):
    """One spatial cell: Gaussian RF x biphasic filter, the drive divided by (c0 + RMS over the window
    of the RF-weighted signal): contrast gain control seen through its own receptive field."""

    def __init__(self, history: int, frame_shape: tuple[int, int], c0: float = 0.05) -> None:
        super().__init__()
        H, W = frame_shape
        yy, xx = np.mgrid[0:H, 0:W]
        g = np.exp(-0.5 * (((yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2) / 2.0**2))
        self.register_buffer("spatial", torch.tensor(g / g.sum(), dtype=torch.float32))
        self.register_buffer("temporal", torch.tensor(biphasic(history, 3), dtype=torch.float32))
        self.history, self.hw, self.c0 = history, (H, W), c0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.einsum("bthw,hw->bt", x.reshape(x.shape[0], self.history, *self.hw), self.spatial)
        drive = (s @ self.temporal) / (self.c0 + s.pow(2).mean(1).sqrt())
        return 0.05 * nn.functional.softplus(drive)[:, None] + 0 * self.dummy


def test_contrast_adaptation_of_spatial_models_flickers_a_zero_mean_image(tmp_path: Path) -> None:
    """Spatial models see the flicker modulate a natural-like image with the training mean luminance:
    a static LN still gives ratio 1, gain control through the receptive field still a lower one."""
    static = run_probe(ln_fitted(history=30, frame_shape=(16, 16), n_cells=2), "contrast-adaptation", {}, tmp_path / "s", progress=False)
    assert static["pattern"] == "image"
    assert all(c["responsive"] and c["gain_ratio"] == pytest.approx(1.0, abs=0.1) for c in static["cells"])
    assert max(abs(v) for v in static["range"]["probe_luminance"]) < 0.01  # every frame keeps the training mean luminance
    gc = FittedModel(SpatialGainControl(30, (16, 16)).eval(), meta_for(30, (16, 16), 1, "toy"))
    res = run_probe(gc, "contrast-adaptation", {}, tmp_path / "g", progress=False)
    c = res["cells"][0]
    for i, ratio in enumerate(c["gain_ratio_per_image"]):  # each image through the RF: the contrast the cell's gain control sees
        seen = abs(float((gc.model.spatial.numpy() * image_pattern((16, 16), 0, i)).sum()))
        assert ratio is None or ratio == pytest.approx((0.05 + seen * 0.1) / (0.05 + seen * 0.35), abs=0.1)
    assert c["gain_ratio"] == pytest.approx(float(np.median([r for r in c["gain_ratio_per_image"] if r is not None])))
    assert res["n_gain_reduced"] == 1
    full = run_probe(gc, "contrast-adaptation", {"pattern": "fullfield"}, tmp_path / "f", progress=False)
    assert max(abs(v) for v in full["range"]["probe_luminance"]) > 0.5  # the full field swings it
    assert full["pattern"] == "fullfield" and full["cells"][0]["gain_ratio"] == pytest.approx((0.05 + 0.1) / (0.05 + 0.35), abs=0.1)
    with pytest.raises(ConfigError, match="pattern"):
        run_probe(static_fitted("softplus"), "contrast-adaptation", {"pattern": "image"}, tmp_path / "x", progress=False)


def test_align_gain_recovers_a_known_horizontal_scale() -> None:
    x = np.linspace(-1, 1, 30)
    N = lambda g: np.log1p(np.exp(3 * g))  # noqa: E731
    xh = np.linspace(-3, 3, 60)
    assert align_gain(x, N(x), xh, N(0.6 * xh))["alpha"] == pytest.approx(0.6, rel=0.01)
    assert align_gain(x, N(x), xh, N(xh))["alpha"] == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("kind", KINDS)
def test_static_ln_paired_flash_recovery_equals_its_null(tmp_path: Path, kind: str) -> None:
    res = run_probe(static_fitted(kind, history=40), "paired-flash", {}, tmp_path, progress=False)
    assert res["params"]["contrast"] == 0.5  # sub-saturating default
    naive = []
    for c in res["cells"]:
        assert c["responsive"] and c["verdict"] == "as the static LN"
        assert max(abs(v) for v in c["recovery_minus_null"] if v is not None) < 0.1
        naive += [abs(v - 1.0) for v in c["recovery"] if v is not None]
    assert max(naive) > 0.2  # the raw recovery alone would have called this depression or facilitation


def test_linear_cells_paired_flash_matches_null_and_is_one(tmp_path: Path) -> None:
    res = run_probe(linear_fitted(history=12, frame_shape=(), n_cells=2, lag=4), "paired-flash", {}, tmp_path, progress=False)
    for c in res["cells"]:
        assert c["recovery"] == pytest.approx([1.0] * len(res["intervals_s"]), abs=1e-3)
        assert c["null_recovery"] == pytest.approx(c["recovery"], abs=0.02)


def test_motion_anticipation_of_a_linear_cell_is_all_linear(tmp_path: Path) -> None:
    f = FittedModel(LinearRF(20, (16, 16)).eval(), meta_for(20, (16, 16), 1, "linear"))
    res = run_probe(f, "motion-anticipation", {"speed": 100}, tmp_path, progress=False)
    (c,) = res["cells"]
    assert c["responsive"]
    assert abs(c["mean_anticipation_beyond_linear_s"]) <= DT  # the linear prediction explains the lag to within a frame
    assert not c["leads_beyond_linear"] and res["n_leading_beyond_linear"] == 0


def test_reversing_grating_static_u_shape_doubles_only_as_its_null(tmp_path: Path) -> None:
    f = FittedModel(SpatialStatic(12, (16, 16)).eval(), meta_for(12, (16, 16), 1, "ln"))
    res = run_probe(f, "reversing-grating", {"period": 0.2, "cycles": 2}, tmp_path, progress=False)
    (c,) = res["cells"]
    assert c["null_r2"] > 0.9
    assert max(c["f2_hz"]) > 1.0  # the U-shaped nonlinearity makes F2 ...
    assert c["doubling_beyond_null"] is False  # ... that the static-LN null makes too
    for f2, n in zip(c["f2_hz"], c["null_f2_hz"]):
        if f2 >= 1.0:
            assert n == pytest.approx(f2, rel=0.1)


def test_reversing_grating_subunits_double_beyond_the_null(tmp_path: Path) -> None:
    f = FittedModel(Subunits(12, (16, 16)).eval(), meta_for(12, (16, 16), 1, "toy"))
    res = run_probe(f, "reversing-grating", {"period": 0.2, "cycles": 2}, tmp_path, progress=False)
    (c,) = res["cells"]
    assert c["frequency_doubling"] and c["doubling_beyond_null"]
    assert res["n_beyond_null"] == 1


def test_static_ln_fit_recovers_filter_and_u_shaped_nonlinearity() -> None:
    rng = np.random.default_rng(0)
    H = 10
    k = np.r_[np.zeros(H - 4), 0.2, 1.0, 0.5, -0.3]
    x = rng.standard_normal(20000) * 0.4
    g = np.full(x.size, np.nan)
    g[H:] = np.lib.stride_tricks.sliding_window_view(x, H)[: x.size - H] @ k
    N = lambda v: 1 + 2 * (v - 0.1) ** 2  # noqa: E731  (asymmetric around 0: a U whose minimum is off zero)
    rate = N(g)
    ln = fit_static_ln(x, rate, np.arange(H, x.size), H, holdout=0.25)
    assert abs(float(ln.filter @ k) / (np.linalg.norm(ln.filter) * np.linalg.norm(k))) > 0.99
    assert ln.r2 > 0.98


def test_sub_frame_flash_timing_at_30_hz() -> None:
    dt = 1 / 30
    params = {"periods": "auto", "timing": "auto", "flash": 0.02}
    periods, flash, timing = sweep(params, dt)
    assert timing == "subframe" and len(periods) == 10 and flash == 1.0
    assert periods[0] * dt == pytest.approx(0.05) and periods[-1] * dt == pytest.approx(1 / 6)
    # each frame shows the time-average of the flash over it: a 1-frame flash from 2.25 covers 0.75 of frame 2 and 0.25 of frame 3
    c = flash_trace(6, [2.25], 1.0, 0.8)
    assert c == pytest.approx([0, 0, 0.6, 0.2, 0, 0])
    assert sweep(params, 0.01)[2] == "frames"  # 100 Hz: 12 whole-frame periods
    assert sweep({**params, "timing": "frames"}, dt)[0] == [float(p) for p in range(2, 6)]


def test_osr_sweep_runs_sub_frame_on_a_30_hz_linear_model(tmp_path: Path) -> None:
    f = linear_fitted(history=12, frame_shape=(), n_cells=2, lag=2)
    f.meta["frame_dt"] = 1 / 30
    res = run_probe(f, "osr", {}, tmp_path, progress=False)
    assert res["timing"] == "subframe" and len(res["periods"]) == 10
    assert not any(c["osr"] for c in res["cells"])
    assert any("sub-frame" in n for n in res["notes"])
    onsets = res["periods"][3]["onsets"]
    assert any(abs(o - round(o)) > 1e-6 for o in onsets)  # flashes at exact, not whole-frame, times
    assert math.isclose(onsets[1] - onsets[0], res["periods"][3]["period_frames"])


def test_probes_warn_when_the_stimulus_leaves_the_training_range(tmp_path: Path) -> None:
    from conftest import make_recording

    from retinakit.io import save_recording

    data = tmp_path / "rec.h5"
    save_recording(make_recording(frame_shape=(8, 8), n_cells=2, train_bins=2000, test_bins=100, n_repeats=2), data)
    f = static_fitted("softplus", history=20)
    f.meta["frame_shape"] = [8, 8]
    f.meta["data_source"] = str(data)
    full = run_probe(f, "step", {"duration": 0.2, "contrast": 1.0}, tmp_path / "a", progress=False)
    assert any("full-field luminance" in w for w in full["warnings"])  # binary 8x8 noise frames never go all bright
    weak = run_probe(f, "step", {"duration": 0.2, "contrast": 0.1}, tmp_path / "b", progress=False)
    assert not any("full-field luminance" in w for w in weak["warnings"])
    unknown = run_probe(static_fitted("softplus", history=20), "step", {"duration": 0.2}, tmp_path / "c", progress=False)
    assert any("training range unknown" in w for w in unknown["warnings"])
