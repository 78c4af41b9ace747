"""CNN vs LN on one recording: fit (or reuse finished runs of) both models, then compare them cell
by cell with :func:`retinakit.evaluation.compare.compare_runs` and write ``compare.csv``,
``compare.json`` and ``compare.png``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json, write_text
from ..errors import CheckpointError, ConfigError, DataError
from ..evaluation.compare import compare_runs
from ..evaluation.tables import cells_csv
from ..fitting.config import FitConfig
from ..fitting.run_folder import CONFIG, is_finished, next_run_dir, read_json
from .runs import recording_sha256, resolve_data, run_fit

SHARED_KEYS = ("history", "cells", "val_fraction", "val_blocks", "seed", "device", "deterministic", "min_reliability")


def _finished_run(path: str | os.PathLike[str], what: str) -> tuple[Path, dict[str, Any]]:
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
        if label == "cnn" and opts["model"] not in ("cnn", "bn-cnn", "rcnn"):
            raise ConfigError(f"the CNN side must be model cnn, bn-cnn or rcnn, got {opts['model']!r}", "--cnn-model")
        run_dir = out_dir / label
        if is_finished(run_dir):
            runs[label] = run_dir
            continue
        resume = run_dir.is_dir() and any(run_dir.iterdir())
        run_fit(rec, run_dir, opts, resume=resume, progress=progress)
        runs[label] = run_dir
    result = compare_runs(rec, runs["cnn"], runs["ln"])
    result["data"] = {"source": source, "sha256": sha}
    write_json(out_dir / "compare.json", result)
    write_text(out_dir / "compare.csv", cells_csv(result["cells"]))
    from ..evaluation.figures import compare_scatter

    c = result["cells"]
    nan = float("nan")
    compare_scatter(np.array([x["ln_r_norm"] if x["ln_r_norm"] is not None else nan for x in c]),
                    np.array([x["cnn_r_norm"] if x["cnn_r_norm"] is not None else nan for x in c]),
                    np.array([x["reliable"] for x in c]), out_dir / "compare.png",
                    title=f"LN vs CNN on {_data_name(source)}", labels=[x["cell"] for x in c],
                    caption=f"{out_dir.name}: CNN run {result.get('cnn_run')} ({result.get('cnn_kind')}), LN run {result.get('ln_run')}")
    result["out"] = str(out_dir)
    return result


def _data_name(source: str) -> str:
    """The recording's name in a figure title (``sample`` for the bundled sample, else the file name)."""
    from ..sample import data_label

    name = data_label(source) if not source.startswith("<") else source
    return name if name.startswith("sample") or source.startswith("<") else Path(source).name
