"""Static nonlinearities of the LN baseline, fitted in numpy (the torch forward is :meth:`LN.output`).

``monotone`` (the default of the reverse-correlation fits): equal-count bins of the generator,
their mean counts made non-decreasing by weighted isotonic regression (pool-adjacent-violators,
:func:`scipy.optimize.isotonic_regression`), interpolated linearly between bin means; below the
lowest bin mean the function stays at its lowest value (a floor >= 0); above the highest bin mean
it keeps rising along a straight line whose slope is the weighted least-squares slope of the
top bins (so a stimulus stronger than any seen in training is not clipped at the top bin).
Chichilnisky (2001); pyret's binned nonlinearity, made monotone.

``binned`` (retinakit <= 0.1 runs; still loaded): the same knots without the isotonic step,
flat beyond both ends.

The two-filter (``stc``) model adds two such functions of two generators:
:func:`fit_additive_monotone` fits them by backfitting.
"""

from __future__ import annotations

import numpy as np

TAIL_FRACTION = 0.25  # the upper tail's slope is fitted to this fraction of the bins (at least 3)


def _bin_means(g: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean generator, mean count and number of samples of ``n_bins`` equal-count bins (ties merged)."""
    edges = np.quantile(g, np.linspace(0, 1, n_bins + 1))
    idx = np.clip(np.searchsorted(edges, g, side="right") - 1, 0, n_bins - 1)
    cnt = np.bincount(idx, minlength=n_bins).astype(np.float64)
    ok = cnt > 0
    xs = np.bincount(idx, weights=g, minlength=n_bins)[ok] / cnt[ok]
    ys = np.bincount(idx, weights=y, minlength=n_bins)[ok] / cnt[ok]
    w = cnt[ok]
    order = np.argsort(xs, kind="stable")
    xs, ys, w = xs[order], ys[order], w[order]
    # merge bins whose means coincide (a generator with many tied values)
    tol = 1e-9 * max(1.0, float(np.abs(xs).max()) if xs.size else 1.0)
    group = np.concatenate([[0], np.cumsum(np.diff(xs) > tol)])
    wg = np.bincount(group, weights=w)
    return np.bincount(group, weights=xs * w) / wg, np.bincount(group, weights=ys * w) / wg, wg


def _pad(xs: np.ndarray, ys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad knot tables to ``n`` entries (every cell has the same number of knots) along the last segment."""
    if xs.size >= n:
        return xs, ys
    extra = n - xs.size
    if xs.size == 1:
        return np.concatenate([xs, xs[-1] + np.arange(1, extra + 1)]), np.concatenate([ys, np.full(extra, ys[-1])])
    # split the last segment: the function does not change, the knots just get denser
    t = np.linspace(0, 1, extra + 2)[1:-1]
    nx = xs[-2] + t * (xs[-1] - xs[-2])
    ny = ys[-2] + t * (ys[-1] - ys[-2])
    return np.concatenate([xs[:-1], nx, xs[-1:]]), np.concatenate([ys[:-1], ny, ys[-1:]])


def _floor(y: np.ndarray) -> float:
    return max(1e-6, 1e-3 * float(np.mean(y))) if y.size else 1e-6


def fit_monotone_nonlinearity(g: np.ndarray, y: np.ndarray, n_bins: int, floor: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit the ``monotone`` nonlinearity to generator values ``g`` and counts ``y`` (held-out bins).

    Returns knots ``x`` (strictly increasing) and ``y`` (non-decreasing, ``>= floor``; default a
    small positive value), ``n_bins`` of each, and the slope (``>= 0``) of the straight line the
    function follows beyond the last knot. ``g`` should be oriented so the function increases
    (see :func:`orientation`); a decreasing relation comes out flat.
    """
    from scipy.optimize import isotonic_regression

    g = np.asarray(g, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    fl = _floor(y) if floor is None else float(floor)
    xs, ys, w = _bin_means(g, y, n_bins)
    iso = isotonic_regression(ys, weights=w, increasing=True).x if xs.size > 1 else ys.copy()
    iso = np.maximum(iso, fl)
    slope = tail_slope(xs, ys, w)
    xs, iso = _pad(xs, iso, n_bins)
    return xs.astype(np.float32), iso.astype(np.float32), float(slope)


def tail_slope(xs: np.ndarray, ys: np.ndarray, w: np.ndarray) -> float:
    """Weighted least-squares slope (``>= 0``) of the top bins' mean counts against their mean generator."""
    k = max(3, int(np.ceil(TAIL_FRACTION * xs.size)))
    if xs.size < 2:
        return 0.0
    x, yv, wt = xs[-k:], ys[-k:], w[-k:]
    xm = float(np.average(x, weights=wt))
    ym = float(np.average(yv, weights=wt))
    den = float(np.sum(wt * (x - xm) ** 2))
    return max(0.0, float(np.sum(wt * (x - xm) * (yv - ym)) / den)) if den > 0 else 0.0


def apply_monotone(g: np.ndarray, kx: np.ndarray, ky: np.ndarray, slope: float) -> np.ndarray:
    """Evaluate a ``monotone`` nonlinearity (same function as :meth:`LN.output`): linear between
    knots, ``ky[0]`` below the first, ``ky[-1] + slope * (g - kx[-1])`` above the last."""
    g = np.asarray(g, dtype=np.float64)
    return np.interp(g, kx, ky) + float(slope) * np.maximum(g - float(kx[-1]), 0.0)


def orientation(g: np.ndarray, y: np.ndarray) -> float:
    """+1 or -1: the sign that makes the counts rise with ``sign * g`` (Pearson correlation; +1 when undefined)."""
    g = np.asarray(g, dtype=np.float64) - np.mean(g)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    return -1.0 if float(g @ y) < 0 else 1.0


def fit_additive_monotone(g1: np.ndarray, g2: np.ndarray, y: np.ndarray, n_bins: int, n_iter: int = 6) -> tuple[tuple[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray, float]]:
    """``y ~ f1(g1) + f2(g2)`` with both functions ``monotone`` (non-decreasing, >= 0), by backfitting.

    Each pass refits ``f1`` to ``y - f2(g2)`` and ``f2`` to ``y - f1(g1)``; the floor of ``f2``
    is 0 and its lowest value is moved into ``f1``, so the split is unique.
    """
    y = np.asarray(y, dtype=np.float64)
    f2 = np.zeros_like(y)
    p1 = fit_monotone_nonlinearity(g1, y, n_bins)
    p2 = fit_monotone_nonlinearity(g2, np.zeros_like(y), n_bins, floor=0.0)
    for _ in range(max(1, int(n_iter))):
        p1 = fit_monotone_nonlinearity(g1, y - f2, n_bins, floor=_floor(y))
        f1 = apply_monotone(g1, *p1)
        p2 = fit_monotone_nonlinearity(g2, y - f1, n_bins, floor=0.0)
        shift = float(p2[1][0])
        if shift > 0:  # keep f2's minimum at 0
            p2 = (p2[0], p2[1] - np.float32(shift), p2[2])
            p1 = (p1[0], p1[1] + np.float32(shift), p1[2])
        f2 = apply_monotone(g2, *p2)
    return p1, p2
