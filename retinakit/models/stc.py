"""The two-filter LN (``--ln-method stc``): a fair opponent for cells a single filter cannot represent.

An ON-OFF cell fires for both signs of its drive, so its spike-triggered average is near zero and
a single filter with a monotone nonlinearity misses most of its response. The standard remedy
(spike-triggered covariance; Fairhall et al. 2006, Schwartz et al. 2006) looks for the stimulus
directions along which the spike-triggered *variance* differs most from the prior. Here, per cell:

1. the single-filter LN (``sta`` or ``ridge``, :func:`~retinakit.models.ln.select_single_filter`)
   gives filter 1;
2. a rank-1 (space x time) STC filter: centred on the peak of the spike-triggered variance map
   (the cross-covariance of the counts with the squared frames), its temporal profile is the top
   generalised eigenvector of (spike-triggered - prior) covariance of the lagged projection on the
   variance map, its spatial profile the top generalised eigenvector of the same problem for the
   temporally filtered crop (ridge-regularised prior covariance, so correlated stimuli are
   whitened), then the temporal profile once more;
3. the output is ``f1(g1) + f2(g2)``, both ``monotone`` nonlinearities (non-decreasing, >= 0,
   linear upper tail), fit by backfitting (:func:`~retinakit.models.ln_nonlinearity.fit_additive_monotone`).
   The pair of signed generators is chosen on the validation blocks among
   ``(k1, +-k_stc)``, ``(k_stc, -k_stc)``, ``(k1, -k1)`` and ``k1`` alone, so the model is never
   chosen worse than the single-filter LN on validation. ``(k, -k)`` is a full-wave rectifier:
   the ON-OFF case;
4. as for the single-filter LN, the final nonlinearities are fit to held-out generator values:
   both filters refitted on each half of the training bins predict the other half.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ModelError
from .ln import (LN, _corr, _filtered_rows, _install, _one_thread, _prepare, _rank1_generator, _subsample_ranges, crop_box,
                 crossfit_folds, crossfit_generator, cross_covariance, lag_matrix, select_single_filter, temporal_filter_movie, _crop_sides)
from .ln_nonlinearity import apply_monotone, fit_additive_monotone, fit_monotone_nonlinearity, orientation

STC_PRIOR_RIDGE = 1e-2  # ridge added to the prior covariance (relative to its mean eigenvalue)
STC_CROP_CANDIDATES = (7, 11)  # crop sides tried for the STC filter, besides the first filter's


def _gen_eig_top(Cs: np.ndarray, C0: np.ndarray, ridge: float) -> np.ndarray:
    """The generalised eigenvector ``v`` of ``(Cs - C0) v = l (C0 + ridge) v`` with the largest ``l``."""
    from scipy.linalg import eigh

    d = C0.shape[0]
    B = C0 + ridge * max(float(np.trace(C0)) / d, 1e-12) * np.eye(d)
    with _one_thread():
        _, vecs = eigh(Cs - C0, B)
    v = vecs[:, -1]
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _weighted_cov(X: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prior covariance of the rows of ``X`` and their covariance weighted by the counts ``w``."""
    Xc = X - X.mean(axis=0)
    C0 = (Xc.T @ Xc) / max(1, X.shape[0])
    sw = float(w.sum())
    if sw <= 0:
        return C0, C0.copy()
    mu = (w @ X) / sw
    Xs = X - mu
    return C0, (Xs.T * w) @ Xs / sw


def stc_filter(prep: dict[str, Any], c: int, box: tuple[int, int, int, int], fit: np.ndarray, vmap_c: np.ndarray, n_iter: int = 2,
               max_rows: int = 16000) -> dict[str, Any]:
    """Rank-1 spike-triggered-covariance filter of cell ``c`` in ``box``, from the training bins in ``fit``.

    ``vmap_c`` ``(H*W,)``: the spike-triggered variance map (:func:`variance_map`; starting spatial weights).
    Returns ``temporal``, ``spatial`` (unit norm, in the crop) and the generator ``g`` on every bin.
    """
    h, z4, y = prep["h"], prep["z4"], prep["y"][:, c]
    T, H, W = z4.shape
    r0, r1, c0, c1 = box
    zc = np.ascontiguousarray(z4[:, r0:r1, c0:c1].reshape(T, -1), dtype=np.float32)
    p = zc.shape[1]
    rows = np.flatnonzero(fit)
    w0 = np.clip(vmap_c.reshape(H, W)[r0:r1, c0:c1].reshape(-1), 0.0, None).astype(np.float64)
    spatial = w0 / np.linalg.norm(w0) if np.any(w0) else np.ones(p) / np.sqrt(p)
    temporal = np.zeros(h)
    ranges = _subsample_ranges(fit, max_rows)
    yr = np.concatenate([y[a:b] for a, b in ranges]) if ranges else np.zeros(0)
    for it in range(n_iter + 1):
        proj = (zc @ spatial.astype(np.float32)).astype(np.float64)
        U = lag_matrix(proj, h, rows)
        C0, Cs = _weighted_cov(U, y[rows])
        temporal = _gen_eig_top(Cs, C0, 1e-3)
        if it == n_iter or p == 1:
            break
        V = _filtered_rows(zc, temporal, ranges)
        C0, Cs = _weighted_cov(V, yr)
        spatial = _gen_eig_top(Cs, C0, STC_PRIOR_RIDGE)
    # a fixed sign: the spatial profile's largest entry positive
    if spatial[int(np.argmax(np.abs(spatial)))] < 0:
        spatial, temporal = -spatial, -temporal
    return {"temporal": temporal, "spatial": spatial, "g": _rank1_generator(zc, spatial, temporal)}


# Candidate signed pairs: name -> (filter, sign) of the first and of the second generator
# (filter 1: the single-filter LN's, 2: the STC filter, 0: none).
PAIRS: dict[str, tuple[int, float, int, float]] = {"k1": (1, 1.0, 0, 0.0), "k1,+stc": (1, 1.0, 2, 1.0), "k1,-stc": (1, 1.0, 2, -1.0),
                                                   "stc,-stc": (2, 1.0, 2, -1.0), "k1,-k1": (1, 1.0, 1, -1.0)}


def fit_ln_stc(data: Any, base: str = "ridge", crop: int | None = None, n_bins: int = 20, progress: bool = False) -> tuple[LN, dict[str, Any]]:
    """Fit the two-filter LN (see the module docstring) to a :class:`~retinakit.fitting.train.FitData`.

    ``base``: how filter 1 is fit (``sta`` for white noise / full-field, ``ridge`` otherwise);
    ``crop`` as in :func:`~retinakit.models.ln.fit_ln_revcorr` (the STC filter uses the crop
    side chosen for filter 1). Returns the model (``n_filters=2``) and per-cell details.
    """
    from tqdm.auto import tqdm

    if base not in ("sta", "ridge"):
        raise ConfigError(f"the first filter of the stc LN is fit by 'sta' or 'ridge', got {base!r}", "ln_method")
    prep = _prepare(data)
    h, y, fit, val, (H, W) = prep["h"], prep["y"], prep["fit"], prep["val"], prep["hw"]
    n = y.shape[1]
    binary = float(np.var(prep["z"][:: max(1, prep["z"].shape[0] // 2000)] ** 2)) < 1e-3  # squared frames constant
    if binary:  # binary white noise: the energy of temporally filtered pixels
        F2 = _filtered_energy(prep)
        vmap, vmap_folds = variance_map(F2, y, fit), None
    else:  # the spike-triggered variance of the pixels, summed over lags
        F2 = prep["z"].astype(np.float32) ** 2
        vmap = cross_covariance(F2, y, fit, h).sum(axis=1)
    vcentres = _variance_centres(vmap, (H, W))
    sides = _crop_sides(base, crop, (H, W))
    folds = crossfit_folds(fit, h)
    sta_folds = [cross_covariance(prep["z"], y, f, h) for f in folds]
    vmap_folds = [variance_map(F2, y, f) if binary else cross_covariance(F2, y, f, h).sum(axis=1) for f in folds]
    del F2
    model = LN(h, data.frame_shape, n, rank=1, nonlinearity="monotone", n_knots=n_bins, n_filters=2)
    details: list[dict[str, Any]] = []
    bar = tqdm(range(n), desc=f"LN (stc, {base})", unit="cell", disable=not progress, leave=False)
    for c in bar:
        best = select_single_filter(prep, c, base, 1, sides, n_bins)
        yc = y[:, c]
        choice, r_best, box2, second, side = "k1", -np.inf, None, None, 0
        for side2 in (_stc_sides(int(best["side"]), (H, W)) if crop is None else [int(crop)]):
            box_s = crop_box(vcentres[c], side2, (H, W))
            cand = stc_filter(prep, c, box_s, fit, vmap[c])
            gens = {1: best["g"], 2: cand["g"]}
            for name, (a, sa, b, sb) in PAIRS.items():
                if name == "k1" and second is not None:
                    continue
                ga = sa * gens[a]
                if name == "k1":
                    sign = orientation(ga[fit], yc[fit])
                    pred = apply_monotone(sign * ga[val], *fit_monotone_nonlinearity(sign * ga[fit], yc[fit], n_bins))
                else:
                    gb = sb * gens[b]
                    p1, p2 = fit_additive_monotone(ga[fit], gb[fit], yc[fit], n_bins)
                    pred = apply_monotone(ga[val], *p1) + apply_monotone(gb[val], *p2)
                r = _corr(pred, yc[val])
                if second is None or (np.isfinite(r) and r > r_best):
                    choice, r_best, box2, second, side = name, (r if np.isfinite(r) else -np.inf), box_s, cand, side2
        if second is None or box2 is None:
            raise ModelError("no crop size to try for the STC filter", "ln_crop", "give ln_crop explicitly")
        gens = {1: best["g"], 2: second["g"]}
        # held-out generators of both filters (each refitted on one half, evaluated on the other)
        g1_out = crossfit_generator(prep, c, best, base, 1, folds, [s[c] for s in sta_folds])
        g2_out = np.zeros_like(g1_out)
        for k, f in enumerate(folds):
            sk = stc_filter(prep, c, box2, f, vmap_folds[k][c])
            align = np.sign(float(sk["temporal"] @ second["temporal"]) * float(sk["spatial"] @ second["spatial"])) or 1.0
            g2_out[folds[1 - k]] = align * sk["g"][folds[1 - k]]
        a, sa, b, sb = PAIRS[choice]
        outs = {1: g1_out, 2: g2_out, 0: np.zeros_like(g1_out)}
        filt = {1: (best["box"], best["temporal"], best["spatial"]), 2: (box2, second["temporal"], second["spatial"])}
        if choice == "k1":
            sa = orientation(g1_out[fit], yc[fit])
        p1, p2 = fit_additive_monotone(sa * outs[a][fit], sb * outs[b][fit] if b else np.zeros(int(fit.sum())), yc[fit], n_bins)
        if not b:  # one filter: the second nonlinearity is 0 everywhere
            p2 = (p2[0], np.zeros_like(p2[1]), 0.0)
        box_a, t_a, s_a = filt[a]
        _install(model, c, {"box": box_a, "temporal": sa * np.asarray(t_a), "spatial": s_a, "kx": p1[0], "ky": p1[1], "slope": p1[2]}, 1, (H, W))
        box_b, t_b, s_b = filt[b] if b else filt[2]
        _install_second(model, c, box_b, (sb if b else 1.0) * np.asarray(t_b), s_b, p2, (H, W))
        pred = apply_monotone(sa * gens[a][val], *p1) + (apply_monotone(sb * gens[b][val], *p2) if b else 0.0)
        r_val = _corr(np.asarray(pred, dtype=np.float64), yc[val])
        details.append({"cell_index": c, "centre": list(prep["centres"][c]), "stc_centre": list(vcentres[c]), "crop_side": int(best["side"]), "crop_side2": side,
                        "crop_box": list(box_a), "crop_box2": list(box_b), "ridge": best.get("ridge"), "pair": choice,
                        "val_corr": float(r_val) if np.isfinite(r_val) else None})
    bar.close()
    vals = [d["val_corr"] for d in details if d["val_corr"] is not None]
    model.geometry_note = (f"LN by stc: two rank-1 filters per cell ({base} filter and spike-triggered-covariance filter, the signed pair "
                           f"chosen on validation), each with a monotone nonlinearity ({n_bins} bins, isotonic, cross-fitted, linear upper tail), summed")
    model.eval()
    return model, {"cells": details, "val_corr": float(np.mean(vals)) if vals else None}


def _stc_sides(side1: int, hw: tuple[int, int]) -> list[int]:
    """Crop sides tried for the STC filter: filter 1's, and two fixed ones that fit in the frame."""
    H, W = hw
    if (H, W) == (1, 1):
        return [0]
    return sorted({side1} | {s for s in STC_CROP_CANDIDATES if s < max(H, W)})


def _filtered_energy(prep: dict[str, Any]) -> np.ndarray:
    """Every pixel filtered by the cells' common temporal profile, squared, ``(T, H*W)``; row ``t``
    uses frames before bin ``t``. (Squared raw frames would be constant for binary white noise.)"""
    sta = prep["sta"]
    n, _, P = sta.shape
    peaks = np.stack([sta[c][:, int(np.argmax((sta[c] ** 2).sum(axis=0)))] for c in range(n)])  # (n, h)
    with _one_thread():
        _, _, vt = np.linalg.svd(peaks, full_matrices=False)
    k = vt[0] / max(float(np.linalg.norm(vt[0])), 1e-12)
    z = prep["z"]
    F = np.empty(z.shape, dtype=np.float32)
    for a in range(0, P, 256):  # a few pixels at a time: the FFT works in float64
        F[:, a : a + 256] = temporal_filter_movie(z[:, a : a + 256], k) ** 2
    return F


def variance_map(F2: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Correlation of each cell's counts with each pixel's filtered energy on the bins of ``mask``,
    minus its median over pixels (a response to the contrast of the whole scene is not a location), ``(n, H*W)``."""
    m = np.asarray(mask, bool)
    yc = (y[m] - y[m].mean(axis=0)).astype(np.float32)
    Fm = F2[m]
    cov = (yc.T @ Fm).astype(np.float64) / max(1, int(m.sum()))
    sd = np.sqrt(np.maximum(Fm.var(axis=0, dtype=np.float64), 1e-12)) * np.maximum(yc.std(axis=0, dtype=np.float64), 1e-12)[:, None]
    corr = cov / sd
    return corr - np.median(corr, axis=1, keepdims=True)


def _variance_centres(vmap: np.ndarray, hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Per cell, the peak of the positive spike-triggered variance map (3x3 smoothed)."""
    from scipy.ndimage import uniform_filter

    H, W = hw
    out = []
    for c in range(vmap.shape[0]):
        e = np.clip(vmap[c], 0.0, None).reshape(H, W)
        if min(H, W) >= 3:
            e = uniform_filter(e, size=3, mode="nearest")
        r, col = np.unravel_index(int(np.argmax(e)), (H, W))
        out.append((int(r), int(col)))
    return out


def _install_second(model: LN, c: int, box: tuple[int, int, int, int], temporal: np.ndarray, spatial: np.ndarray,
                    nl: tuple[np.ndarray, np.ndarray, float], hw: tuple[int, int]) -> None:
    r0, r1, c0, c1 = box
    model.set_crop(c, box, which=2)
    with torch.no_grad():
        sp = torch.zeros(hw)
        sp[r0:r1, c0:c1] = torch.as_tensor(np.asarray(spatial).reshape(r1 - r0, c1 - c0), dtype=torch.float32)
        model.spatial2[c] = sp
        model.temporal2[c] = torch.as_tensor(np.asarray(temporal), dtype=torch.float32)
        model.bias2[c] = 0.0
        model.knots_x2[c] = torch.as_tensor(nl[0])
        model.knots_y2[c] = torch.as_tensor(nl[1])
        model.tail_slope2[c] = float(nl[2])
