"""Hand-built models with known behaviour for the probe tests (plus checks of the models themselves).

- :class:`LNToy`: a linear spatio-temporal filter (biphasic, ON or OFF per cell, Gaussian
  spatial weights) followed by a softplus: the LN baseline in its simplest form.
- :class:`OSRToy`: a deliberately non-LN model that fires a burst exactly ``delay`` frames after
  the time the next flash of a periodic train was due: its latency from the last flash is
  ``period + delay`` frames, so the OSR analysis must return slope 1, intercept ``delay * dt``.
- :func:`tiny_cnn`: the McIntosh CNN with random weights on small frames.

They all take z-scored windows ``(B, history, H, W)`` (oldest frame first) like retinakit models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retinakit.alignment import lag_of_position
from retinakit.models.fitted import FittedModel, stimulus_windows

DT = 0.01


class Windowed(nn.Module):
    """``forward_chunks`` for the toy models: every window of each chunk through ``forward``
    (the interface every retinakit model has; ``FittedModel.predict`` uses it)."""

    history: int

    def forward_chunks(self, zc: torch.Tensor) -> torch.Tensor:
        K, total = zc.shape[0], zc.shape[1]
        windows = torch.cat([stimulus_windows(zc[k], self.history) for k in range(K)])
        return self.forward(windows.contiguous()).reshape(K, total - self.history, -1)


def meta_for(history: int, frame_shape: tuple[int, ...], n_cells: int, kind: str, spec: dict | None = None) -> dict:
    """Metadata as a fit writes it: binary +-1 training stimulus (mean 0, s.d. 1, range -1..1)."""
    return {
        "model": spec or {"family": kind}, "kind": kind, "history": history, "frame_dt": DT, "frame_shape": list(frame_shape),
        "cell_ids": list(range(1, n_cells + 1)), "stim_mean": 0.0, "stim_std": 1.0, "stim_min": -1.0, "stim_max": 1.0,
        "data_sha256": "0" * 64, "data_source": "<test>", "stimulus_kind": "whitenoise" if frame_shape else "fullfield",
    }


def biphasic(history: int, peak_lag: int = 4, width: float = 1.5, undershoot: float = 0.45) -> np.ndarray:
    """A biphasic temporal filter indexed by window position (oldest first): positive lobe at ``peak_lag``
    frames, a smaller negative lobe later, zero weight at lags beyond the history."""
    lags = lag_of_position(np.arange(history), history).astype(np.float64)
    f = np.exp(-0.5 * ((lags - peak_lag) / width) ** 2) - undershoot * np.exp(-0.5 * ((lags - 2.2 * peak_lag) / (2 * width)) ** 2)
    return f / np.abs(f).max()


class LNToy(Windowed):
    """Linear filter (temporal x spatial, sign per cell) -> softplus; cells alternate ON, OFF."""

    def __init__(self, history: int, frame_shape: tuple[int, ...], n_cells: int, gain: float = 1.5, bias: float = -1.0, peak_lags: list[int] | None = None) -> None:
        super().__init__()
        H, W = (1, 1) if not frame_shape else frame_shape
        yy, xx = np.mgrid[0:H, 0:W]
        spatial, temporal = [], []
        for k in range(n_cells):
            cy, cx = (H - 1) / 2, (W - 1) * (k + 1) / (n_cells + 1)
            s = np.exp(-0.5 * (((yy - cy) ** 2 + (xx - cx) ** 2) / 1.5**2))
            spatial.append(s / s.sum())
            lag = peak_lags[k] if peak_lags else 3 + k
            temporal.append((1.0 if k % 2 == 0 else -1.0) * biphasic(history, lag))
        self.register_buffer("spatial", torch.tensor(np.array(spatial), dtype=torch.float32))
        self.register_buffer("temporal", torch.tensor(np.array(temporal), dtype=torch.float32))
        self.gain, self.bias, self.history, self.hw = gain, bias, history, (H, W)
        self.dummy = nn.Parameter(torch.zeros(()))  # so FittedModel finds a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.history, *self.hw)
        drive = torch.einsum("bthw,ct,chw->bc", x, self.temporal, self.spatial)
        return 0.1 * nn.functional.softplus(self.gain * drive + self.bias) + 0 * self.dummy


class OSRToy(Windowed):
    """Responds ``flash_amp`` 2 frames after each flash onset, and ``burst_amp`` when ``delay``
    frames have passed since the next flash was due (period = interval between the last two onsets)."""

    def __init__(self, history: int, delay: int = 3, base: float = 0.02, flash_amp: float = 0.05, burst_amp: float = 0.2) -> None:
        super().__init__()
        self.history, self.delay, self.base, self.flash_amp, self.burst_amp = history, delay, base, flash_amp, burst_amp
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H = x.shape[0], self.history
        lum = x.reshape(B, H, -1).mean(-1)
        on = lum > 0.5
        onset = on.clone()
        onset[:, 1:] = on[:, 1:] & ~on[:, :-1]
        onset[:, 0] = False
        pos = torch.arange(H).expand(B, H)
        masked = torch.where(onset, pos, torch.full_like(pos, -1))
        j1 = masked.max(1).values
        masked2 = torch.where(onset & (pos < j1[:, None]), pos, torch.full_like(pos, -1))
        j2 = masked2.max(1).values
        since = H - j1  # lag of the last onset (alignment: position j is lag H - j)
        has2 = (j1 >= 0) & (j2 >= 0)
        burst = has2 & (since == (j1 - j2) + self.delay)
        flash = (j1 >= 0) & (since == 2)
        out = self.base + self.flash_amp * flash.float() + self.burst_amp * burst.float()
        return out[:, None] + 0 * self.dummy


class DeltaLinear(Windowed):
    """Purely linear cells: rate = base + gain * sign * (RF-weighted frame ``lag`` frames back).

    ``rf`` ``(n_cells, H, W)`` spatial weights (default: a one-pixel RF per cell); cells alternate
    ON (sign +1) and OFF (-1). Every response is an exact, delayed copy of the stimulus."""

    def __init__(self, history: int, frame_shape: tuple[int, ...], n_cells: int, lag: int = 4, base: float = 0.1, gain: float = 0.05, rf: np.ndarray | None = None) -> None:
        super().__init__()
        H, W = (1, 1) if not frame_shape else frame_shape
        if rf is None:
            rf = np.zeros((n_cells, H, W))
            for k in range(n_cells):
                rf[k, H // 2, (W * (k + 1)) // (n_cells + 1)] = 1.0
        sign = np.array([1.0 if k % 2 == 0 else -1.0 for k in range(n_cells)])
        self.register_buffer("w", torch.tensor(rf * sign[:, None, None], dtype=torch.float32))
        self.history, self.hw, self.lag, self.base, self.gain = history, (H, W), lag, base, gain
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.history, *self.hw)
        frame = x[:, self.history - self.lag]  # window position H - lag is lag ``lag`` (alignment.py)
        return self.base + self.gain * torch.einsum("bhw,chw->bc", frame, self.w) + 0 * self.dummy


class Subunits(Windowed):
    """One cell pooling half-wave rectified transient pixel subunits (relu of the frame-to-frame change
    ``lag`` frames back) over a Gaussian: the textbook source of frequency doubling."""

    def __init__(self, history: int, frame_shape: tuple[int, int], lag: int = 3, sigma: float = 2.0, base: float = 0.02, gain: float = 0.1) -> None:
        super().__init__()
        H, W = frame_shape
        yy, xx = np.mgrid[0:H, 0:W]
        g = np.exp(-0.5 * (((yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2) / sigma**2))
        self.register_buffer("w", torch.tensor(g / g.sum(), dtype=torch.float32))
        self.history, self.hw, self.lag, self.base, self.gain = history, (H, W), lag, base, gain
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.history, *self.hw)
        j = self.history - self.lag
        change = torch.relu(x[:, j] - x[:, j - 1])
        return (self.base + self.gain * (change * self.w).sum((1, 2)))[:, None] + 0 * self.dummy


class GainControl(Windowed):
    """Full-field linear drive ``lag`` frames back divided by (c0 + the RMS of the whole window):
    the gain falls as contrast rises, like a retinal cell's contrast adaptation."""

    def __init__(self, history: int, lag: int = 3, c0: float = 0.05, base: float = 0.5, gain: float = 0.02) -> None:
        super().__init__()
        self.history, self.lag, self.c0, self.base, self.gain = history, lag, c0, base, gain
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lum = x.reshape(x.shape[0], self.history, -1).mean(-1)
        rms = lum.pow(2).mean(1).sqrt()
        return (self.base + self.gain * lum[:, self.history - self.lag] / (self.c0 + rms))[:, None] + 0 * self.dummy


def ln_fitted(history: int = 20, frame_shape: tuple[int, ...] = (8, 8), n_cells: int = 2, **kw) -> FittedModel:
    return FittedModel(LNToy(history, frame_shape, n_cells, **kw).eval(), meta_for(history, frame_shape, n_cells, "ln"))


def osr_fitted(history: int = 40, delay: int = 3, frame_shape: tuple[int, ...] = ()) -> FittedModel:
    return FittedModel(OSRToy(history, delay).eval(), meta_for(history, frame_shape, 1, "toy"))


def linear_fitted(history: int = 12, frame_shape: tuple[int, ...] = (8, 8), n_cells: int = 2, **kw) -> FittedModel:
    return FittedModel(DeltaLinear(history, frame_shape, n_cells, **kw).eval(), meta_for(history, frame_shape, n_cells, "linear"))


def tiny_cnn(history: int = 10, frame_shape: tuple[int, ...] = (8, 8), n_cells: int = 3, seed: int = 0) -> FittedModel:
    from retinakit.models.cnn import CNN

    torch.manual_seed(seed)
    m = CNN(history, frame_shape, n_cells, filters=(4, 4)).eval()
    return FittedModel(m, meta_for(history, frame_shape, n_cells, "cnn", m.spec()))


# ----------------------------------------------------------------------------- checks of the helpers
def test_ln_toy_on_and_off_cells_follow_their_filter_sign() -> None:
    f = ln_fitted(history=12, frame_shape=(), n_cells=2)
    stim = np.zeros(40, dtype=np.float32)
    stim[20] = 1.0
    r = f.predict(stim)
    base = r[15]
    assert r[20 + 3, 0] > base[0] + 1e-3  # ON cell: up 3 frames after a bright flash
    assert r[20 + 4, 1] < base[1] - 1e-3  # OFF cell: down
    assert np.allclose(r[:20][12:], base)  # nothing before the flash


@pytest.mark.parametrize("period", [5, 8])
def test_osr_toy_bursts_delay_frames_after_the_missing_flash(period: int) -> None:
    f = osr_fitted(history=40, delay=3)
    T = 200
    stim = -np.ones(T, dtype=np.float32)
    onsets = list(range(50, 50 + 8 * period, period))
    for o in onsets:
        stim[o : o + 2] = 1.0
    r = f.predict(stim)[:, 0]
    peak = int(np.nanargmax(r))
    assert peak == onsets[-1] + period + 3


class StaticNL(Windowed):
    """Full-field static LN cells: a biphasic filter (ON for even cells, OFF for odd) then a fixed
    nonlinearity ``kind``: ``softplus`` (expansive), ``sigmoid`` (saturating) or ``ushape`` (an
    asymmetric U: rises on both sides of its minimum, steeper on the preferred side). No
    adaptation of any kind: every probe null must call these static."""

    def __init__(self, history: int, kind: str, n_cells: int = 2, peak_lag: int = 4, gain: float = 2.0) -> None:
        super().__init__()
        sign = np.array([1.0 if k % 2 == 0 else -1.0 for k in range(n_cells)])
        self.register_buffer("temporal", torch.tensor(sign[:, None] * biphasic(history, peak_lag)[None, :], dtype=torch.float32))
        self.history, self.kind, self.gain = history, kind, gain
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lum = x.reshape(x.shape[0], self.history, -1).mean(-1)
        g = self.gain * lum @ self.temporal.T
        if self.kind == "softplus":
            r = 0.1 * nn.functional.softplus(2.0 * g - 1.0)
        elif self.kind == "sigmoid":
            r = 0.02 + 0.3 * torch.sigmoid(3.0 * g - 1.0)
        elif self.kind == "ushape":
            r = 0.02 + 0.06 * (nn.functional.softplus(3.0 * (g - 0.3)) + 0.5 * nn.functional.softplus(-3.0 * (g + 0.3)))
        else:
            raise ValueError(self.kind)
        return r + 0 * self.dummy


def static_fitted(kind: str, history: int = 30, n_cells: int = 2, **kw) -> FittedModel:
    return FittedModel(StaticNL(history, kind, n_cells, **kw).eval(), meta_for(history, (), n_cells, "ln"))


def gain_control_fitted(history: int = 30) -> FittedModel:
    return FittedModel(GainControl(history).eval(), meta_for(history, (), 1, "toy"))


class LinearRF(Windowed):
    """One linear cell: a Gaussian receptive field (s.d. ``sigma`` px) times a biphasic temporal filter,
    no nonlinearity (rate = base + gain x drive). A moving bar's peak can lead its arrival at the RF
    centre for such a cell: anticipation that is entirely linear."""

    def __init__(self, history: int, frame_shape: tuple[int, int], sigma: float = 2.5, peak_lag: int = 4, base: float = 0.2, gain: float = 0.05) -> None:
        super().__init__()
        H, W = frame_shape
        yy, xx = np.mgrid[0:H, 0:W]
        g = np.exp(-0.5 * (((yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2) / sigma**2))
        self.register_buffer("spatial", torch.tensor(g / g.sum(), dtype=torch.float32))
        self.register_buffer("temporal", torch.tensor(biphasic(history, peak_lag, undershoot=0.8), dtype=torch.float32))
        self.history, self.hw, self.base, self.gain = history, (H, W), base, gain
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.history, *self.hw)
        drive = torch.einsum("bthw,t,hw->b", x, self.temporal, self.spatial)
        return (self.base + self.gain * drive)[:, None] + 0 * self.dummy


class SpatialStatic(Windowed):
    """One spatial LN cell: Gaussian RF x biphasic filter, then a U-shaped (asymmetric) static
    nonlinearity: F2 at every grating width, from the nonlinearity alone."""

    def __init__(self, history: int, frame_shape: tuple[int, int], sigma: float = 1.5, peak_lag: int = 4) -> None:
        super().__init__()
        H, W = frame_shape
        yy, xx = np.mgrid[0:H, 0:W]
        g = np.exp(-0.5 * (((yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2) / sigma**2))
        self.register_buffer("spatial", torch.tensor(g / g.sum(), dtype=torch.float32))
        self.register_buffer("temporal", torch.tensor(biphasic(history, peak_lag), dtype=torch.float32))
        self.history, self.hw = history, (H, W)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.history, *self.hw)
        g = 2.0 * torch.einsum("bthw,t,hw->b", x, self.temporal, self.spatial)
        r = 0.02 + 0.06 * (nn.functional.softplus(3.0 * (g - 0.3)) + 0.5 * nn.functional.softplus(-3.0 * (g + 0.3)))
        return r[:, None] + 0 * self.dummy
