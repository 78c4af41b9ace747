"""Static LN nulls: what a linear filter followed by a static nonlinearity predicts for a probe.

A probe readout means something only if a static LN model of the same cell would not produce
it. :func:`fit_static_ln` fits such a model to any trace: a least-squares linear filter of the
``history`` preceding frames of a full-field contrast trace (by Bussgang's theorem proportional to
the true filter of a static LN system driven by Gaussian noise, whatever its nonlinearity) and a
binned nonlinearity of the filter output (means in quantile bins, linear interpolation, straight
continuation of the end segments, so strong probe stimuli do not clip at the top bin; not forced
to be monotone, so a U-shaped nonlinearity is kept). :func:`flicker_nulls` fits one per cell to
the probed system's own response to full-field Gaussian flicker inside the training range; the
probes run the null through their protocol next to the system. :func:`align_gain` compares two
nonlinearities expressed on unit-norm filters (Chander and Chichilnisky 2001; Baccus and Meister
2002): the horizontal scale that maps one onto the other is the change of gain, 1 for a static
LN model whatever its nonlinearity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..alignment import window_frames

NULL_SECONDS = 60.0
NULL_SD = 0.35


@dataclass
class StaticLN:
    """A fitted static LN model of one cell on full-field contrast: filter (oldest lag first), nonlinearity."""

    filter: np.ndarray  # (history,) per unit contrast
    nl_x: np.ndarray  # bin centres of the generator
    nl_y: np.ndarray  # mean rate (Hz) in each bin
    r2: float | None = None  # variance of held-out responses it explains

    @property
    def history(self) -> int:
        return int(self.filter.size)

    def generator(self, contrast: np.ndarray) -> np.ndarray:
        """Filter output for every bin of a full-field contrast trace ``(T,)`` (NaN without a full history)."""
        c = np.asarray(contrast, dtype=np.float64)
        T, H = c.shape[0], self.history
        out = np.full(T, np.nan)
        bins = np.arange(H, T)
        if bins.size:
            out[bins] = c[bins[:, None] + window_frames(0, H)[None, :]] @ self.filter
        return out

    def nonlinearity(self, g: np.ndarray) -> np.ndarray:
        """The binned nonlinearity, interpolated, continued linearly beyond the end bins."""
        return _interp_extrap(np.asarray(g, dtype=np.float64), self.nl_x, self.nl_y)

    def rate(self, contrast: np.ndarray) -> np.ndarray:
        """Predicted rate (Hz) ``(T,)``; NaN where the history is incomplete."""
        return self.nonlinearity(self.generator(contrast))


def _interp_extrap(g: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.interp(g, x, y)
    if x.size >= 2:
        lo_slope = (y[1] - y[0]) / (x[1] - x[0]) if x[1] > x[0] else 0.0
        hi_slope = (y[-1] - y[-2]) / (x[-1] - x[-2]) if x[-1] > x[-2] else 0.0
        out = np.where(g < x[0], y[0] + (g - x[0]) * lo_slope, out)
        out = np.where(g > x[-1], y[-1] + (g - x[-1]) * hi_slope, out)
    return np.where(np.isfinite(g), out, np.nan)


def binned_nonlinearity(g: np.ndarray, r: np.ndarray, n_bins: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Means of ``r`` in ``n_bins`` quantile bins of ``g``: bin centres (mean ``g``) and mean rates."""
    order = np.argsort(g, kind="stable")
    parts = [p for p in np.array_split(order, max(2, int(n_bins))) if p.size]
    x = np.array([g[p].mean() for p in parts])
    y = np.array([r[p].mean() for p in parts])
    keep = np.r_[True, np.diff(x) > 0]
    return x[keep], y[keep]


def fit_static_ln(contrast: np.ndarray, rate: np.ndarray, bins: np.ndarray, history: int, n_bins: int = 25, holdout: float = 0.0) -> StaticLN:
    """A static LN model of ``rate[bins]`` from the ``history`` frames before each bin of ``contrast``.

    With ``holdout`` > 0 the last fraction of ``bins`` is left out of the fit and the model's R^2 on
    it is stored in ``r2``.
    """
    c = np.asarray(contrast, dtype=np.float64)
    r = np.asarray(rate, dtype=np.float64)
    b = np.asarray(bins)
    n_fit = b.size - int(round(holdout * b.size)) if holdout > 0 else b.size
    fit_b, test_b = b[:n_fit], b[n_fit:]
    X = c[fit_b[:, None] + window_frames(0, history)[None, :]]
    A = np.concatenate([X, np.ones((X.shape[0], 1))], 1)
    coef, *_ = np.linalg.lstsq(A, r[fit_b], rcond=None)
    k = coef[:-1]
    g = X @ k
    x, y = binned_nonlinearity(g, r[fit_b], n_bins)
    model = StaticLN(filter=k, nl_x=x, nl_y=y)
    if test_b.size > 10:
        pred = model.nonlinearity(c[test_b[:, None] + window_frames(0, history)[None, :]] @ k)
        obs = r[test_b]
        sst = float(((obs - obs.mean()) ** 2).sum())
        model.r2 = float(1.0 - ((obs - pred) ** 2).sum() / sst) if sst > 0 else None
    return model


def flicker_nulls(fitted: Any, levels: Any, seed: int = 0, seconds: float = NULL_SECONDS, sd: float = NULL_SD, progress: bool = False) -> tuple[list[StaticLN], np.ndarray]:
    """One static LN null per cell, fitted to the system's response to full-field Gaussian flicker.

    The flicker has s.d. ``sd`` in contrast units (clipped to +-1, inside the training range);
    the last quarter is held out for the R^2 of each null. Returns the nulls and each cell's rate
    s.d. on the flicker (Hz), the scale against which probe responses are judged.
    """
    from .base import model_rates
    from .stimuli import to_raw

    fitted = getattr(fitted, "fitted", fitted)  # past a RangeWatch: the null's own stimuli are not the probe's
    H = fitted.history
    T = H + int(round(seconds / fitted.frame_dt))
    x = np.clip(np.random.default_rng([int(seed), 77]).standard_normal(T) * sd, -1.0, 1.0)
    (rate,) = model_rates(fitted, [to_raw(x, levels, fitted.frame_shape)], desc="static-LN null", progress=progress)
    bins = np.arange(H, T)
    nulls = [fit_static_ln(x, rate[:, k], bins, H, holdout=0.25) for k in range(rate.shape[1])]
    return nulls, rate[bins].std(0)


def null_rates(nulls: Sequence[StaticLN], contrast: np.ndarray) -> np.ndarray:
    """Rates ``(T, n_cells)`` of the nulls for one full-field contrast trace."""
    return np.stack([n.rate(contrast) for n in nulls], 1)


def align_gain(x_lo: np.ndarray, y_lo: np.ndarray, x_hi: np.ndarray, y_hi: np.ndarray, grid: tuple[float, float] = (0.1, 10.0)) -> dict[str, Any]:
    """The gain change between two nonlinearities on unit-norm filters: ``alpha`` minimising
    ``sum_j (N_lo(x_j) - N_hi(x_j / alpha))^2`` over the low-contrast bins ``x_j`` inside the high
    curve's range. A static nonlinearity gives 1; reduced gain at high contrast gives < 1.
    Returns ``alpha``, the relative r.m.s. misfit and the number of bins compared.
    """
    alphas = np.geomspace(grid[0], grid[1], 801)
    best = (np.inf, None, 0)
    scale = float(np.ptp(y_lo)) or 1.0
    for a in alphas:
        xs = x_lo / a
        inside = (xs >= x_hi[0]) & (xs <= x_hi[-1])
        if inside.sum() < max(3, int(0.6 * x_lo.size)):
            continue
        err = float(np.mean((y_lo[inside] - np.interp(xs[inside], x_hi, y_hi)) ** 2))
        if err < best[0]:
            best = (err, float(a), int(inside.sum()))
    err, alpha, n = best
    return {"alpha": alpha, "misfit": (float(np.sqrt(err)) / scale) if alpha is not None else None, "n_bins": n}


@dataclass
class SpatialLN:
    """A static LN null on movies: a rank-1 filter (spatial weights x temporal filter) and a binned nonlinearity."""

    temporal: np.ndarray  # (history,) oldest lag first, unit norm
    spatial: np.ndarray  # (H, W)
    nl_x: np.ndarray
    nl_y: np.ndarray
    r2: float | None = None

    def rate(self, contrast: np.ndarray) -> np.ndarray:
        """Predicted rate (Hz) ``(T,)`` for a contrast movie ``(T, H, W)``; NaN without a full history."""
        c = np.asarray(contrast, dtype=np.float64)
        drive = c.reshape(c.shape[0], -1) @ self.spatial.ravel()
        g = StaticLN(filter=self.temporal, nl_x=self.nl_x, nl_y=self.nl_y).generator(drive)
        return _interp_extrap(g, self.nl_x, self.nl_y)


def temporally_filtered(movie: np.ndarray, temporal: np.ndarray) -> np.ndarray:
    """Each pixel's trace through ``temporal`` (oldest lag first) as the model sees it: row ``t`` is the
    filter applied to frames ``window_frames(t, H)``; rows without a full history are 0."""
    from scipy.signal import fftconvolve

    X = np.asarray(movie, dtype=np.float64).reshape(movie.shape[0], -1)
    H = temporal.size
    full = fftconvolve(X, temporal[::-1][:, None], axes=0)
    T = X.shape[0]
    out = np.zeros_like(X)
    t = np.arange(H, T)
    src = window_frames(0, H)[0] + t + H - 1
    ok = src < full.shape[0]
    out[t[ok]] = full[src[ok]]
    return out


def spatial_nulls(fitted: Any, levels: Any, temporal_nulls: Sequence[StaticLN], seed: int = 0, seconds: float = NULL_SECONDS, sd: float = NULL_SD,
                  progress: bool = False) -> list[SpatialLN]:
    """One rank-1 static LN null per cell for a model with spatial frames.

    The temporal filter comes from the full-field null (:func:`flicker_nulls`); the spatial
    weights are the ridge regression (strength chosen on held-out bins) of the response to full-field Gaussian flicker plus
    independent Gaussian pixel noise (each of s.d. ``sd``, clipped to +-1) on the temporally
    filtered pixels, refined by Gauss-Newton steps on ``rate = N(Z w)`` with the binned
    nonlinearity ``N`` refitted at each step (the regression alone is weak for U-shaped ones). The last
    quarter of the noise is held out for ``r2``.
    """
    from .base import model_rates
    from .stimuli import to_raw

    fitted = getattr(fitted, "fitted", fitted)  # past a RangeWatch: the null's own stimuli are not the probe's
    H = fitted.history
    shape = tuple(fitted.frame_shape)
    T = H + int(round(seconds / fitted.frame_dt))
    rng = np.random.default_rng([int(seed), 78])
    # full-field flicker plus pixel noise: the flicker spans the nonlinearity as widely as full-field probes do,
    # the pixel noise makes the spatial weights identifiable
    X = np.clip((rng.standard_normal(T)[:, None, None] + rng.standard_normal((T,) + shape)) * sd, -1.0, 1.0)
    (rate,) = model_rates(fitted, [to_raw(X, levels, shape)], desc="spatial LN null", progress=progress)
    bins = np.arange(H, T)
    n_fit = int(0.75 * bins.size)
    out = []
    for k, tn in enumerate(temporal_nulls):
        kt = tn.filter / (np.linalg.norm(tn.filter) or 1.0)
        Z = temporally_filtered(X, kt)
        A = np.concatenate([Z[bins], np.ones((bins.size, 1))], 1)
        n_tr = int(0.8 * n_fit)  # ridge strength chosen on the last fifth of the fitting part
        fit, val = A[:n_tr], A[n_tr:n_fit]
        evals, evecs = np.linalg.eigh(fit.T @ fit)
        proj = evecs.T @ (fit.T @ rate[bins[:n_tr], k])
        scale = float(evals.mean())
        best = (np.inf, 0.0)
        for f in np.geomspace(1e-4, 1e2, 13):
            wv = evecs @ (proj / (evals + f * scale))
            e = float(((val @ wv - rate[bins[n_tr:n_fit], k]) ** 2).sum())
            if e < best[0]:
                best = (e, f)
        lam = best[1] * scale
        fit = A[:n_fit]
        target = rate[bins[:n_fit], k]
        w = np.linalg.solve(fit.T @ fit + lam * np.eye(fit.shape[1]), fit.T @ target)[:-1]
        Zf = Z[bins[:n_fit]]

        def sse(wv: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            gv = Zf @ wv
            xv, yv = binned_nonlinearity(gv, target, 25)
            return float(((target - _interp_extrap(gv, xv, yv)) ** 2).sum()), xv, yv

        err, x, y = sse(w)
        for _ in range(4):  # Gauss-Newton on rate = N(Z w), kept only when it helps: the regression alone is weak for U-shaped nonlinearities
            g = Zf @ w
            slope = np.gradient(y, x) if x.size > 2 else np.ones_like(x)
            d = np.interp(g, x, slope)
            resid = target - _interp_extrap(g, x, y)
            J = Zf * d[:, None]
            step = np.linalg.solve(J.T @ J + lam * np.eye(J.shape[1]), J.T @ resid)
            for frac in (1.0, 0.5, 0.25):
                e2, x2, y2 = sse(w + frac * step)
                if e2 < err:
                    w, err, x, y = w + frac * step, e2, x2, y2
                    break
            else:
                break
        g = Z[bins] @ w
        x, y = binned_nonlinearity(g[:n_fit], target, 25)
        pred = _interp_extrap(g[n_fit:], x, y)
        obs = rate[bins[n_fit:], k]
        sst = float(((obs - obs.mean()) ** 2).sum())
        out.append(SpatialLN(temporal=kt, spatial=w.reshape(shape), nl_x=x, nl_y=y, r2=float(1 - ((obs - pred) ** 2).sum() / sst) if sst > 0 else None))
    return out
