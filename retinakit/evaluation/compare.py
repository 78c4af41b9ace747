"""CNN vs LN on the same recording, the same cells, the same split and the same bins, cell by cell.

Both models are (re)scored here from their predictions on the test stimulus, over the bins that
both can predict (``t >= max(history)``), so the ceiling and the bins are identical for the two.

Each cell also gets a response type read from the training data only (:func:`response_types`:
``ON``, ``OFF``, or ``no STA`` when its spike-triggered average does not stand out of the noise,
as for ON-OFF cells, which no single-filter LN model can represent), and the summary gives the
median r/ceiling of each model and the CNN-LN gap per type. Simulated recordings carry each
cell's true polarity (``provenance["cells"]``); it is shown next to the estimated type.

The two fits are made (or reused) by :func:`retinakit.pipeline.compare.compare_ln`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

RESPONSE_TYPES = ("ON", "OFF", "no STA")
NO_STA_LABEL = "no usable STA (ON-OFF-like)"
MIN_STA_Z = 3.0  # cross-validated STA strength (in noise s.d.) below which a cell has no usable STA (null: about N(0, 0.7))


def compare_runs(rec: Any, cnn_run: Path, ln_run: Path) -> dict[str, Any]:
    """Score two finished runs on the same cells and bins; per-cell rows and a summary."""
    from ..fitting.run_folder import load_run
    from .metrics import predict_test, score

    cnn, ln = load_run(cnn_run), load_run(ln_run)
    common = [c for c in cnn.cell_ids if c in set(ln.cell_ids)]
    if not common:
        raise DataError("the two runs share no cells", f"{cnn_run} and {ln_run}", "fit both on the same cells")
    test = rec.test
    lookup = {int(c): k for k, c in enumerate(rec.cell_ids)}
    missing = [c for c in common if c not in lookup]
    if missing:
        raise DataError(f"cells {missing} are not in the recording", str(rec.provenance.get("source", "<memory>")))
    reps = test.repeats if test.repeats is not None else test.counts[None]
    cols = np.array([lookup[c] for c in common])
    h = max(cnn.history, ln.history)
    preds = {}
    for label, fm in (("cnn", cnn), ("ln", ln)):
        p = predict_test(fm, test.stimulus)
        idx = [fm.cell_ids.index(c) for c in common]
        p = p[:, idx]
        p[:h] = np.nan
        preds[label] = p
    from ..fitting.config import FitConfig
    from ..fitting.run_folder import CONFIG, read_json

    min_rel = float(read_json(cnn_run / CONFIG, "run config")["config"].get("min_reliability", FitConfig.min_reliability))
    s_cnn = score(preds["cnn"], reps[:, :, cols], min_reliability=min_rel, cell_ids=common)
    s_ln = score(preds["ln"], reps[:, :, cols], min_reliability=min_rel, cell_ids=common)

    def f(v: Any) -> float | None:
        return float(v) if np.isfinite(v) else None

    rows = []
    for k, cid in enumerate(common):
        ln_r, cnn_r = s_ln["r"][k], s_cnn["r"][k]
        rows.append({
            "cell": int(cid), "ln_r": f(ln_r), "cnn_r": f(cnn_r), "ceiling": f(s_cnn["ceiling"][k]),
            "ln_r_norm": f(s_ln["r_norm"][k]), "cnn_r_norm": f(s_cnn["r_norm"][k]),
            "cnn_minus_ln_r_norm": f(s_cnn["r_norm"][k] - s_ln["r_norm"][k]),
            "cnn_over_ln_r": f(cnn_r / ln_r) if ln_r > 0 else None,
            "ln_feve": f(s_ln["feve"][k]), "cnn_feve": f(s_cnn["feve"][k]),
            "reliable": bool(s_cnn["reliable"][k]),
        })
    types = response_types(rec.train.stimulus, rec.train.counts[:, cols], cnn.history)
    truth = true_polarities(rec, common)
    for k, row in enumerate(rows):
        row["type"] = str(types["type"][k])
        row["sta_z"] = f(types["sta_z"][k])
        if truth is not None:
            row["true_type"] = truth[k]
    summary = {"bins_scored": int(s_cnn["n_bins"]), "n_repeats": int(s_cnn["n_repeats"]), **summarize_comparison(rows)}
    return {"cnn_run": str(cnn_run), "ln_run": str(ln_run), "cnn_kind": cnn.meta.get("kind"), "summary": summary, "cells": rows,
            "min_reliability": min_rel, "note": f"both models scored on test bins t >= {h} (the larger history), same repeats, same ceiling"}


def response_types(stimulus: np.ndarray, counts: np.ndarray, history: int, max_bins: int = 60000, block: int = 1000,
                   min_z: float = MIN_STA_Z) -> dict[str, np.ndarray]:
    """Each cell's response type from its spike-triggered average on training data: ON, OFF or no STA.

    The first ``max_bins`` bins are cut into blocks of ``block`` bins, alternately assigned to
    halves A and B, and an STA (:func:`retinakit.spikes.spike_triggered_average`, ``history``
    frames) is computed on each half. The noise s.d. of one half-STA is ``std(A - B) / sqrt(2)``.
    The STA strength ``sta_z`` is cross-validated: the elements of A above 3 noise s.d. (else its
    peak) form a template, B is projected on it in noise units, and vice versa; the two are
    averaged. For a cell whose spikes do not depend on the sign of the stimulus (ON-OFF cells,
    unresponsive cells) each projection is about N(0, 1); for an ON or OFF cell it grows with the
    number of spikes (simulated 32x32 samples, 10 min: 34-580 for ON/OFF cells, -3.6 and -1.2
    for the ON-OFF cell). ``sta_z < min_z`` gives ``"no STA"`` (also when there are too few
    spikes to measure an STA); otherwise the sign of the full STA (A + B) at its largest element
    gives ``"ON"`` or ``"OFF"``. Returns ``type`` (strings) and ``sta_z`` (floats, NaN without
    spikes).
    """
    from ..spikes import spike_triggered_average

    stim = np.asarray(stimulus)
    c = np.asarray(counts, dtype=np.float32)
    if c.ndim == 1:
        c = c[:, None]
    T = min(int(stim.shape[0]), int(max_bins))
    stim, c = stim[:T], c[:T]
    block = max(1, min(int(block), T // 8))
    in_a = ((np.arange(T) // block) % 2 == 0)[:, None]
    n = c.shape[1]
    sta = spike_triggered_average(stim, np.concatenate([c * in_a, c * ~in_a], axis=1), int(history)).reshape(2 * n, -1).astype(np.float64)
    z = np.full(n, np.nan)
    kind = np.full(n, "no STA", dtype=object)
    for k in range(n):
        a, b = sta[k], sta[n + k]
        sigma = float(np.std(a - b)) / np.sqrt(2.0)
        if not sigma > 0:
            continue
        z[k] = 0.5 * (_template_z(a, b, sigma) + _template_z(b, a, sigma))
        if z[k] >= min_z:
            full = a + b
            kind[k] = "ON" if full[int(np.argmax(np.abs(full)))] > 0 else "OFF"
    return {"type": kind, "sta_z": z}


def _template_z(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    """Projection of ``b`` on the strong elements of ``a`` (> 3 ``sigma``, else its peak), in noise units."""
    w = np.where(np.abs(a) > 3.0 * sigma, a, 0.0)
    if not np.any(w):
        p = int(np.argmax(np.abs(a)))
        w = np.zeros_like(a)
        w[p] = a[p]
    norm = float(np.linalg.norm(w))
    return float(w @ b) / (sigma * norm) if norm > 0 else 0.0


def true_polarities(rec: Any, cell_ids: list[int]) -> list[str] | None:
    """Ground-truth polarity (ON, OFF, ON-OFF) of each cell of a simulated recording, else ``None``."""
    cells = rec.provenance.get("cells") if isinstance(rec.provenance, dict) else None
    if not isinstance(cells, list):
        return None
    by_id = {int(c["id"]): str(c["polarity"]) for c in cells if isinstance(c, dict) and "id" in c and "polarity" in c}
    if not all(int(c) in by_id for c in cell_ids):
        return None
    return [by_id[int(c)] for c in cell_ids]


def summarize_comparison(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and medians over reliable cells, and the CNN-LN gap per response type.

    ``rows`` are per-cell dicts with ``ln_r``, ``cnn_r``, ``ceiling``, ``ln_r_norm``,
    ``cnn_r_norm``, ``cnn_minus_ln_r_norm``, ``ln_feve``, ``cnn_feve``, ``reliable`` and
    optionally ``type`` / ``true_type``. ``by_type`` (and ``by_true_type``) hold, per type, the
    number of cells and of reliable cells and the medians of LN r/ceiling, CNN r/ceiling and their
    difference (plus its mean) over the reliable cells of that type.
    """
    ok = np.array([bool(r["reliable"]) for r in rows], dtype=bool)

    def vals(key: str, mask: np.ndarray) -> np.ndarray:
        v = np.array([r.get(key) if r.get(key) is not None else np.nan for r in rows], dtype=float)[mask]
        return v[np.isfinite(v)]

    def mean(key: str, mask: np.ndarray = ok) -> float | None:
        v = vals(key, mask)
        return float(v.mean()) if v.size else None

    def median(key: str, mask: np.ndarray = ok) -> float | None:
        v = vals(key, mask)
        return float(np.median(v)) if v.size else None

    def groups(field: str, order: tuple[str, ...]) -> dict[str, Any]:
        labels = [r.get(field) for r in rows]
        names = [x for x in order if x in labels] + sorted({str(x) for x in labels if x is not None and x not in order})
        out = {}
        for name in names:
            of = np.array([lab == name for lab in labels], dtype=bool)
            out[name] = {"n_cells": int(of.sum()), "n_reliable": int((of & ok).sum()),
                         "median_ln_r_norm": median("ln_r_norm", of & ok), "median_cnn_r_norm": median("cnn_r_norm", of & ok),
                         "median_cnn_minus_ln_r_norm": median("cnn_minus_ln_r_norm", of & ok),
                         "mean_cnn_minus_ln_r_norm": mean("cnn_minus_ln_r_norm", of & ok)}
        return out

    diff = vals("cnn_minus_ln_r_norm", ok)
    summary: dict[str, Any] = {
        "n_cells": len(rows), "n_reliable": int(ok.sum()),
        "mean_ln_r": mean("ln_r"), "mean_cnn_r": mean("cnn_r"), "mean_ceiling": mean("ceiling"),
        "mean_ln_r_norm": mean("ln_r_norm"), "mean_cnn_r_norm": mean("cnn_r_norm"),
        "mean_cnn_minus_ln_r_norm": mean("cnn_minus_ln_r_norm"),
        "median_ln_r_norm": median("ln_r_norm"), "median_cnn_r_norm": median("cnn_r_norm"),
        "median_cnn_minus_ln_r_norm": median("cnn_minus_ln_r_norm"),
        "n_cnn_better": int(np.sum(diff > 0)),
        "mean_ln_feve": mean("ln_feve"), "mean_cnn_feve": mean("cnn_feve"),
    }
    if any(r.get("type") is not None for r in rows):
        summary["by_type"] = groups("type", RESPONSE_TYPES)
    if any(r.get("true_type") is not None for r in rows):
        summary["by_true_type"] = groups("true_type", ("ON", "OFF", "ON-OFF"))
    return summary


def format_compare_table(result: dict[str, Any], max_rows: int = 40) -> str:
    """A one-screen per-cell table (LN r, CNN r, ceiling, r/ceiling of each, response type), the
    mean and median summary, and the CNN-LN gap per response type."""
    def f(v: Any, w: int = 7) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

    cells = result["cells"]
    has_type = any("type" in r for r in cells)
    has_truth = any("true_type" in r for r in cells)
    head = f"{'cell':>6} {'LN r':>7} {'CNN r':>7} {'ceiling':>8} {'LN r/c':>7} {'CNN r/c':>8} {'CNN-LN':>7}  reliable"
    if has_type:
        head += f"  {'type':<7}" + (" true" if has_truth else "")
    lines = [head.rstrip()]
    for r in cells[:max_rows]:
        line = (f"{r['cell']:>6} {f(r['ln_r'])} {f(r['cnn_r'])} {f(r['ceiling'], 8)} {f(r['ln_r_norm'])} {f(r['cnn_r_norm'], 8)} "
                f"{f(r['cnn_minus_ln_r_norm'])}  {'yes' if r['reliable'] else 'NO':<8}")
        if has_type:
            line += f"  {r.get('type', '-'):<7}" + (f" {r.get('true_type', '-')}" if has_truth else "")
        lines.append(line.rstrip())
    if len(cells) > max_rows:
        lines.append(f"... {len(cells) - max_rows} more cells in compare.csv")
    s = result["summary"]
    lines.append(f"mean over {s['n_reliable']}/{s['n_cells']} reliable cells: LN r/ceiling {f(s['mean_ln_r_norm'], 0)}, "
                 f"CNN r/ceiling {f(s['mean_cnn_r_norm'], 0)}, difference {f(s['mean_cnn_minus_ln_r_norm'], 0)} "
                 f"(CNN better on {s['n_cnn_better']} cells)")
    if "median_ln_r_norm" in s:
        lines.append(f"median over reliable cells: LN r/ceiling {f(s['median_ln_r_norm'], 0)}, CNN r/ceiling {f(s['median_cnn_r_norm'], 0)}, "
                     f"difference {f(s['median_cnn_minus_ln_r_norm'], 0)}")
    for key, title in (("by_type", "by response type (training STA)"), ("by_true_type", "by true type (simulation ground truth)")):
        if s.get(key):
            parts = []
            for name, g in s[key].items():
                label = NO_STA_LABEL if name == "no STA" else name
                parts.append(f"{label} {f(g['median_cnn_minus_ln_r_norm'], 0)} (LN {f(g['median_ln_r_norm'], 0)}, "
                             f"CNN {f(g['median_cnn_r_norm'], 0)}; {g['n_reliable']}/{g['n_cells']} reliable)")
            lines.append(f"median CNN-LN {title}: " + "; ".join(parts))
    return "\n".join(lines)
