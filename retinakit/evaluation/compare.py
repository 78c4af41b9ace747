"""CNN vs LN on the same recording, the same cells, the same split and the same bins, cell by cell.

Both models are (re)scored here from their predictions on the test stimulus, over the bins that
both can predict (``t >= max(history)``), so the ceiling and the bins are identical for the two.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json, write_text
from ..errors import CheckpointError, ConfigError, DataError

SHARED_KEYS = ("history", "cells", "val_fraction", "val_blocks", "seed", "device", "deterministic", "min_reliability")


def _finished_run(path: str | os.PathLike[str], what: str) -> tuple[Path, dict[str, Any]]:
    from ..fitting.runs import CONFIG, is_finished, read_json

    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{what} '{p}' is not a run folder", fix="give a folder made by `retinakit fit`")
    if not is_finished(p):
        raise CheckpointError(f"{what} '{p}' has not finished (no DONE)", str(p), "resume it with `retinakit fit --resume RUN` first")
    return p, read_json(p / CONFIG, "run config")


def compare_ln(
    data: Any = None,
    out: str | os.PathLike[str] | None = None,
    cnn_run: str | os.PathLike[str] | None = None,
    ln_run: str | os.PathLike[str] | None = None,
    options: dict[str, Any] | None = None,
    cnn_options: dict[str, Any] | None = None,
    ln_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit (or reuse finished runs of) a CNN and an LN model and compare them cell by cell.

    ``options`` go to both fits (shared keys such as history, cells, seed), ``cnn_options`` /
    ``ln_options`` to one of them. Writes ``compare.csv``, ``compare.json`` and
    ``compare.png`` (LN vs CNN r/ceiling) into ``out`` and returns the JSON content.
    """
    from ..fitting.config import FitConfig
    from ..fitting.runs import next_run_dir, resolve_data, run_fit

    options = dict(options or {})
    bad = [k for k in options if k == "model"]
    if bad:
        raise ConfigError("option 'model' cannot be given to compare-ln", fix="it always compares model cnn (or bn-cnn via --cnn-model) with ln")
    runs_cfg = {}
    for label, path in (("cnn", cnn_run), ("ln", ln_run)):
        if path is not None:
            p, cfg = _finished_run(path, f"--{label}-run")
            runs_cfg[label] = (p, cfg)
    if data is None and runs_cfg:
        srcs = {cfg["data"]["source"] for _, cfg in runs_cfg.values()}
        if len(srcs) == 1 and not next(iter(srcs)).startswith("<"):
            data = next(iter(srcs))
    rec, source = resolve_data(data)
    from ..fitting.runs import recording_sha256

    sha = recording_sha256(rec)
    for label, (p, cfg) in runs_cfg.items():
        if cfg["data"].get("sha256") != sha:
            raise DataError(f"run '{p}' was fit on another recording ({cfg['data'].get('source')})", str(p), f"compare runs fit on '{source}'")
    # shared options follow a reused run so both fits use the same cells and split
    for _, (p, cfg) in runs_cfg.items():
        for key in SHARED_KEYS:
            if key not in options and key in cfg["config"] and key not in ("device",):
                options[key] = cfg["config"][key]
    if out is None:
        stem = Path(source).stem if not source.startswith("<") else "memory"
        out_dir = next_run_dir("runs", "compare", stem)
    else:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Path] = {}
    for label in ("cnn", "ln"):
        if label in runs_cfg:
            runs[label] = runs_cfg[label][0]
            continue
        extra = dict(cnn_options or {}) if label == "cnn" else dict(ln_options or {})
        opts = {**options, **extra}
        opts.setdefault("model", FitConfig().model if label == "cnn" else "ln")
        if label == "cnn" and opts["model"] not in ("cnn", "bn-cnn"):
            raise ConfigError(f"the CNN side must be model cnn or bn-cnn, got {opts['model']!r}", "--cnn-model")
        run_dir = out_dir / label
        from ..fitting.runs import is_finished

        if is_finished(run_dir):
            runs[label] = run_dir
            continue
        resume = run_dir.is_dir() and any(run_dir.iterdir())
        run_fit(rec, run_dir, opts, resume=resume, progress=progress)
        runs[label] = run_dir
    result = compare_runs(rec, runs["cnn"], runs["ln"])
    result["data"] = {"source": source, "sha256": sha}
    write_json(out_dir / "compare.json", result)
    write_text(out_dir / "compare.csv", _csv(result["cells"]))
    from .figures import compare_scatter

    c = result["cells"]
    nan = float("nan")
    compare_scatter(np.array([x["ln_r_norm"] if x["ln_r_norm"] is not None else nan for x in c]),
                    np.array([x["cnn_r_norm"] if x["cnn_r_norm"] is not None else nan for x in c]),
                    np.array([x["reliable"] for x in c]), out_dir / "compare.png",
                    title=f"LN vs CNN on {Path(source).name}")
    result["out"] = str(out_dir)
    return result


def compare_runs(rec: Any, cnn_run: Path, ln_run: Path) -> dict[str, Any]:
    """Score two finished runs on the same cells and bins; per-cell rows and a summary."""
    from ..fitting.runs import load_run
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
    from ..fitting.runs import CONFIG, read_json

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
    ok = np.array([r["reliable"] for r in rows], dtype=bool)

    def mean(key: str) -> float | None:
        v = np.array([r[key] if r[key] is not None else np.nan for r in rows], dtype=float)[ok]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else None

    diff = np.array([r["cnn_minus_ln_r_norm"] if r["cnn_minus_ln_r_norm"] is not None else np.nan for r in rows])[ok]
    summary = {
        "n_cells": len(rows), "n_reliable": int(ok.sum()), "bins_scored": int(s_cnn["n_bins"]), "n_repeats": int(s_cnn["n_repeats"]),
        "mean_ln_r": mean("ln_r"), "mean_cnn_r": mean("cnn_r"), "mean_ceiling": mean("ceiling"),
        "mean_ln_r_norm": mean("ln_r_norm"), "mean_cnn_r_norm": mean("cnn_r_norm"),
        "mean_cnn_minus_ln_r_norm": mean("cnn_minus_ln_r_norm"),
        "n_cnn_better": int(np.sum(diff[np.isfinite(diff)] > 0)),
        "mean_ln_feve": mean("ln_feve"), "mean_cnn_feve": mean("cnn_feve"),
    }
    return {"cnn_run": str(cnn_run), "ln_run": str(ln_run), "cnn_kind": cnn.meta.get("kind"), "summary": summary, "cells": rows,
            "min_reliability": min_rel, "note": f"both models scored on test bins t >= {h} (the larger history), same repeats, same ceiling"}


def _csv(rows: list[dict[str, Any]]) -> str:
    from ..fitting.runs import cells_csv

    return cells_csv(rows)


def format_compare_table(result: dict[str, Any], max_rows: int = 40) -> str:
    """A one-screen per-cell table: LN r, CNN r, ceiling, r/ceiling of each, and the summary."""
    def f(v: Any, w: int = 7) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

    lines = [f"{'cell':>6} {'LN r':>7} {'CNN r':>7} {'ceiling':>8} {'LN r/c':>7} {'CNN r/c':>8} {'CNN-LN':>7}  reliable"]
    for r in result["cells"][:max_rows]:
        lines.append(f"{r['cell']:>6} {f(r['ln_r'])} {f(r['cnn_r'])} {f(r['ceiling'], 8)} {f(r['ln_r_norm'])} {f(r['cnn_r_norm'], 8)} "
                     f"{f(r['cnn_minus_ln_r_norm'])}  {'yes' if r['reliable'] else 'NO'}")
    if len(result["cells"]) > max_rows:
        lines.append(f"... {len(result['cells']) - max_rows} more cells in compare.csv")
    s = result["summary"]
    lines.append(f"mean over {s['n_reliable']}/{s['n_cells']} reliable cells: LN r/ceiling {f(s['mean_ln_r_norm'], 0)}, "
                 f"CNN r/ceiling {f(s['mean_cnn_r_norm'], 0)}, difference {f(s['mean_cnn_minus_ln_r_norm'], 0)} "
                 f"(CNN better on {s['n_cnn_better']} cells)")
    return "\n".join(lines)
