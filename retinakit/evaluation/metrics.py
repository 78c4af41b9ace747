"""Scoring a prediction against repeated trials, cell by cell.

Definitions (all per cell, over the scored bins of the repeated test segment; predictions and
recorded responses are both expected spike counts per bin; ``n`` repeats, ``T`` scored bins):

* ``r``: Pearson correlation between the prediction and the trial-averaged response.
* ``reliability``: the estimated squared correlation between the n-repeat average and the
  cell's true rate (:func:`retinakit.spikes.split_half_reliability`): the repeats are split into
  halves of ``a = n // 2`` and ``b = n - a`` repeats (every distinct split when there are at most
  50, else 50 random ones), the correlations of the two half-averages are averaged (``r_half``),
  and the per-trial signal-to-noise ratio ``s`` is solved from ``r_half^2 = rho(a) rho(b)`` with
  ``rho(m) = m s / (m s + 1)``; ``reliability = rho(n)``. For even ``n`` this is the
  Spearman-Brown ``2 r_half / (1 + r_half)``; for odd ``n`` the 2-half factor would overstate it.
* ``ceiling = sqrt(reliability)``: the best ``r`` a perfect model can expect.
* ``r_norm = r / ceiling``.
* ``feve``: fraction of explainable variance explained (Cadena et al. 2019),
  ``1 - (MSE - noise_var) / (var_mean - noise_var)``, with ``MSE`` between prediction and the
  repeat average, ``var_mean`` the variance over time of the repeat average and ``noise_var``
  the mean over bins of the across-repeat variance (ddof 1) divided by ``n``. Unlike ``r`` it
  penalises a wrong scale or offset. NaN when the explainable variance is not clearly above zero
  relative to ``var_mean`` (see ``signal_fraction_floor``).
* ``cc_norm``: the normalised correlation of Schoppe et al. (2016):
  ``cov(mean, pred) / sqrt(SP * var(pred))`` with the signal power
  ``SP = (var(sum of repeats) - sum of var(repeat)) / (n (n - 1))`` (Sahani and Linden 2003).
  NaN when ``SP / var_mean`` is not clearly above zero, like ``feve``.
* ``signal_fraction_floor``: ``feve`` and ``cc_norm`` need the explainable fraction
  (``(var_mean - noise_var) / var_mean``, resp. ``SP / var_mean``) to exceed
  ``MIN_SIGNAL_Z = 3`` standard errors of that fraction for a cell with no signal,
  ``sqrt(2 n / ((n - 1) T))``: below it the denominator is noise and the ratio meaningless.
* ``reliable``: at least 2 repeats, non-constant response and ``reliability >= min_reliability``.
  Summary means are taken over reliable cells only; unreliable cells are reported, never averaged in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from ..spikes import pearson_columns, split_half_reliability

DEFAULT_MIN_RELIABILITY = 0.3
MIN_SIGNAL_Z = 3.0  # feve / cc_norm need an explainable fraction this many null standard errors above 0
PER_CELL_KEYS = ("r", "reliability", "ceiling", "r_norm", "feve", "cc_norm", "reliable")


def score(pred: np.ndarray, repeats: np.ndarray, min_reliability: float = DEFAULT_MIN_RELIABILITY, cell_ids: Any = None, n_splits: int = 50, seed: int = 0,
          min_signal_z: float = MIN_SIGNAL_Z) -> dict[str, Any]:
    """Score predictions ``(T, n_cells)`` against repeats ``(n_repeats, T, n_cells)``.

    Bins where the prediction is NaN (no full stimulus history) are dropped for every measure.
    Returns per-cell arrays (``r``, ``reliability``, ``ceiling``, ``r_norm``, ``feve``,
    ``cc_norm``, ``reliable``), ``cell_ids`` and ``summary`` (means/medians over reliable cells).
    ``min_signal_z`` sets the floor of :func:`signal_fraction_floor` (0: only a positive
    explainable variance is required).
    """
    p = np.asarray(pred, dtype=np.float64)
    rep = np.asarray(repeats, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if rep.ndim == 2:
        rep = rep[:, :, None]
    if rep.ndim != 3 or p.ndim != 2 or rep.shape[1:] != p.shape:
        raise DataError(f"prediction {p.shape} and repeats {rep.shape} do not match (expected (T, n) and (n_repeats, T, n))",
                        "scoring", "predict the test stimulus of the same recording")
    keep = np.all(np.isfinite(p), axis=1)
    if keep.sum() < 3:
        raise DataError(f"only {int(keep.sum())} test bins have a prediction", "scoring", "the test segment must be longer than the model's history")
    p, rep = p[keep], rep[:, keep]
    R, T, n = rep.shape
    mean = rep.mean(axis=0)
    r = pearson_columns(p, mean)
    rel = split_half_reliability(rep, n_splits=n_splits, seed=seed)
    reliability = rel["reliability"]
    ceiling = rel["ceiling"]
    with np.errstate(invalid="ignore", divide="ignore"):
        r_norm = np.where(ceiling > 0, r / ceiling, np.nan)
        var_mean = mean.var(axis=0)
        if R >= 2:
            noise_var = rep.var(axis=0, ddof=1).mean(axis=0) / R
            sp = (rep.sum(axis=0).var(axis=0) - rep.var(axis=1).sum(axis=0)) / (R * (R - 1))
        else:
            noise_var = np.full(n, np.nan)
            sp = np.full(n, np.nan)
        mse = ((p - mean) ** 2).mean(axis=0)
        explainable = var_mean - noise_var
        floor = signal_fraction_floor(R, T, min_signal_z) * var_mean
        feve = np.where((var_mean > 0) & (explainable > floor), 1.0 - (mse - noise_var) / np.where(explainable > 0, explainable, 1.0), np.nan)
        cov = ((p - p.mean(axis=0)) * (mean - mean.mean(axis=0))).mean(axis=0)
        var_p = p.var(axis=0)
        cc_norm = np.where((var_mean > 0) & (sp > floor) & (var_p > 0), cov / np.sqrt(np.abs(sp) * var_p), np.nan)
    reliable = np.isfinite(reliability) & (reliability >= min_reliability) & (var_mean > 0) & (R >= 2)
    out: dict[str, Any] = {
        "r": r, "reliability": reliability, "ceiling": ceiling, "r_norm": r_norm,
        "feve": feve, "cc_norm": cc_norm, "reliable": reliable,
        "n_repeats": int(R), "n_bins": int(T), "min_reliability": float(min_reliability),
        "cell_ids": None if cell_ids is None else [int(c) for c in cell_ids],
    }
    out["summary"] = summarize_scores(out)
    return out


def scored_reliability(repeats: np.ndarray, history: int, n_splits: int = 50, seed: int = 0) -> dict[str, Any]:
    """The reliability and ceiling that :func:`score` gives a model with ``history`` frames.

    :func:`retinakit.spikes.split_half_reliability` over the test bins the model predicts
    (``t >= first_predicted_bin(history)``; all bins when fewer than 3 would be left), with the
    same splits as :func:`score`, so ``data inspect --history H`` and a fit with history ``H``
    report the same ceiling. Adds ``first_bin``, the first bin used.
    """
    from ..alignment import first_predicted_bin

    rep = np.asarray(repeats, dtype=np.float64)
    if rep.ndim == 2:
        rep = rep[:, :, None]
    first = first_predicted_bin(history)
    if rep.shape[1] - first < 3:
        first = 0
    out: dict[str, Any] = dict(split_half_reliability(rep[:, first:], n_splits=n_splits, seed=seed))
    out["first_bin"] = int(first)
    return out


def signal_fraction_floor(n_repeats: int, n_bins: int, z: float = MIN_SIGNAL_Z) -> float:
    """Smallest explainable fraction of the repeat average's variance that ``feve``/``cc_norm`` accept.

    For a cell with no signal (repeats = noise around a constant), ``var_mean`` and ``noise_var``
    estimate the same quantity from ``T - 1`` and ``T (n - 1)`` degrees of freedom, so their
    difference over ``var_mean`` has a standard error of about ``sqrt(2 / T + 2 / (T (n - 1)))
    = sqrt(2 n / ((n - 1) T))``; the floor is ``z`` of those. Infinite with fewer than 2 repeats.
    """
    if n_repeats < 2 or n_bins < 2:
        return float("inf")
    return float(z * np.sqrt(2.0 * n_repeats / ((n_repeats - 1.0) * n_bins)))


def summarize_scores(s: dict[str, Any]) -> dict[str, Any]:
    """Means and medians of each measure over reliable cells (NaN-free), and the counts."""
    ok = np.asarray(s["reliable"], dtype=bool)
    summary: dict[str, Any] = {"n_cells": int(ok.size), "n_reliable": int(ok.sum())}
    for key in ("r", "ceiling", "r_norm", "feve", "cc_norm"):
        vals = np.asarray(s[key], dtype=np.float64)[ok]
        vals = vals[np.isfinite(vals)]
        summary[f"mean_{key}"] = float(vals.mean()) if vals.size else None
        summary[f"median_{key}"] = float(np.median(vals)) if vals.size else None
    return summary


def per_cell_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per cell (``cell``, then each per-cell measure as a plain float/bool/None)."""
    ids = s.get("cell_ids") or list(range(1, len(s["r"]) + 1))
    rows = []
    for k, cid in enumerate(ids):
        row: dict[str, Any] = {"cell": int(cid)}
        for key in PER_CELL_KEYS:
            v = s[key][k]
            row[key] = bool(v) if key == "reliable" else (float(v) if np.isfinite(v) else None)
        rows.append(row)
    return rows


def to_jsonable(s: dict[str, Any]) -> dict[str, Any]:
    """The score dict with arrays as lists and NaN as null."""
    out: dict[str, Any] = {}
    for k, v in s.items():
        if isinstance(v, np.ndarray):
            out[k] = [None if (isinstance(x, float) and not np.isfinite(x)) else x for x in v.tolist()]
        else:
            out[k] = v
    return out


def predict_test(fitted: Any, stimulus: np.ndarray, chunk_len: int = 500) -> np.ndarray:
    """Predictions ``(T, n_cells)`` of a fitted model for a raw stimulus, computed with
    ``forward_chunks`` (same values as :meth:`FittedModel.predict`, NaN for ``t < history``)."""
    import torch

    from ..fitting.train import predict_z

    z = torch.from_numpy(np.ascontiguousarray(fitted.normalise(stimulus)))
    device = next(fitted.model.parameters()).device
    return predict_z(fitted.model, z, device, chunk_len=chunk_len)


def evaluate(fitted: Any, rec: Any, min_reliability: float = DEFAULT_MIN_RELIABILITY, return_prediction: bool = False) -> Any:
    """Score a fitted model on a recording's repeated test segment (see :func:`score`).

    The model's cell ids are matched to the recording's by id. With ``return_prediction`` the
    prediction ``(T, n_cells)`` is returned too.
    """
    if rec.test is None:
        raise DataError("the recording has no test part to score on", str(rec.provenance.get("source", "<memory>")), "add a repeated test segment")
    ids = [int(c) for c in rec.cell_ids]
    lookup = {c: k for k, c in enumerate(ids)}
    missing = [c for c in fitted.cell_ids if c not in lookup]
    if missing:
        raise DataError(f"the model's cells {missing} are not in the recording", str(rec.provenance.get("source", "<memory>")), "score on the recording the model was fit on")
    cols = np.array([lookup[c] for c in fitted.cell_ids], dtype=np.int64)
    test = rec.test
    repeats = test.repeats if test.repeats is not None else test.counts[None]
    pred = predict_test(fitted, test.stimulus)
    s = score(pred, repeats[:, :, cols], min_reliability=min_reliability, cell_ids=fitted.cell_ids)
    return (s, pred) if return_prediction else s
