"""Filling a run folder: load the data, fit, save the model, score, draw figures, check, ``DONE``.

The folder's layout and the functions that read it are in :mod:`retinakit.fitting.run_folder`.
Gradient fits write ``checkpoint.pt`` every epoch; reverse-correlation LN fits (seconds) have no
epochs and are simply redone when resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import write_json, write_text
from ..errors import CheckpointError, ConfigError, DataError, OutputError
from ..fitting.config import RUNTIME_KEYS, FitConfig
from ..fitting.run_folder import (
    CELLS, CHECKPOINT, CONFIG, DONE, FIGURES, LOG, METRICS, MODEL, is_finished, is_temporary, read_json, read_log, remove_temporaries,
    run_status, save_model,
)
from ..recording import Recording


# ----------------------------------------------------------------------------- data
def resolve_data(data: Any, cells: list[int] | None = None) -> tuple[Recording, str]:
    """The recording to fit and its source string: a path, a :class:`Recording`, or ``None`` (the bundled sample)."""
    if isinstance(data, Recording):
        rec, source = data, str(data.provenance.get("source", "<memory>"))
    else:
        if data is None:
            try:
                from ..sample import sample_path
            except ImportError as exc:
                raise DataError("the bundled sample is not available in this installation", fix="give a recording file (e.g. one made with `retinakit simulate`)") from exc
            data = sample_path()
        from ..io import load_recording
        from ..sample import resolve_sample

        data = resolve_sample(data)  # `sample`, `sample:whitenoise` -> the file (its path is what the run records)
        rec = load_recording(data)
        source = str(Path(data))
    if cells is not None:
        rec = rec.select_cells(cells)
    if rec.test is None:
        raise DataError("the recording has no test part, so the fit cannot be scored", source, "add a repeated test segment ('/test' with repeats)")
    return rec, source


def recording_sha256(rec: Recording) -> str:
    """The recording's content hash: the file's SHA-256 when known, else a hash of its arrays."""
    if rec.provenance.get("sha256"):
        return str(rec.provenance["sha256"])
    h = hashlib.sha256()
    for split in (rec.train, rec.test):
        if split is None:
            continue
        for arr in (split.stimulus, split.counts, split.time, split.repeats):
            if arr is not None:
                a = np.ascontiguousarray(arr)
                h.update(str(a.dtype).encode() + str(a.shape).encode())
                h.update(a.tobytes())
    h.update(np.ascontiguousarray(rec.cell_ids).tobytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of retinakit and the libraries a fit depends on."""
    import torch

    from .._version import __version__

    return {"retinakit": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


# ----------------------------------------------------------------------------- run_fit
def run_fit(
    data: Any,
    run_dir: str | os.PathLike[str],
    options: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    figures: bool = True,
    on_start: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Fit a model to a recording into ``run_dir`` and return its metrics.

    Parameters
    ----------
    data : a recording path, a :class:`~retinakit.recording.Recording`, or ``None`` for the
        bundled sample (:func:`retinakit.sample.sample_path`). With ``resume`` and ``None``, the
        run's own recording is used again.
    run_dir : the run folder. A new fit needs a missing or empty folder (nothing is overwritten).
    options : fit options (see :class:`~retinakit.fitting.config.FitConfig`).
    resume : continue an unfinished run from its ``checkpoint.pt``. A finished run (``DONE``) is
        returned as is. Only runtime options (device, max_epochs, patience, deterministic,
        mixed_precision) may differ from the run's own.
    progress : show tqdm bars on stderr.
    on_epoch : called with each epoch's log entry (after its checkpoint is written).
    figures : write the figures (training curves, predictions, filters) into ``figures/``.
    on_start : called with the run folder once the recording is loaded and ``config.json`` written.
    """
    import torch

    from ..fitting.device import choose_device, deterministic_mode, seed_everything
    from ..fitting.train import prepare_data, train
    from ..models import build_model

    t_start = time.perf_counter()
    run = Path(run_dir)
    options = dict(options or {})
    if resume and not is_finished(run) and not any((run / n).is_file() for n in (CONFIG, CHECKPOINT, MODEL)):
        # killed before the run was set up (no config.json yet): there is nothing to continue, so start it
        if data is None:
            raise CheckpointError(f"cannot resume: '{run}' has no run config ({CONFIG}): it is not a run folder, or its fit was interrupted before it started",
                                  str(run), f"start it again with `retinakit fit DATA --out {run}` (or give DATA with --resume)")
        remove_temporaries(run)
        resume = False
    if resume:
        if not run.is_dir():
            raise CheckpointError(f"cannot resume: '{run}' is not a folder", fix="give the run folder printed by `retinakit fit`")
        if is_finished(run):
            return read_json(run / METRICS, "metrics")
        remove_temporaries(run)
        saved = read_json(run / CONFIG, "run config")
        cfg = _merge_resume(FitConfig.from_saved(saved["config"]), options, run)
        if data is None:
            data = saved["data"]["source"]
            if data.startswith("<"):
                raise DataError(f"run '{run}' was fit on an in-memory recording", str(run), "pass the same Recording again to resume")
        rec, source = resolve_data(data, cfg.cells)
        sha = recording_sha256(rec)
        if saved["data"].get("sha256") and saved["data"]["sha256"] != sha:
            raise DataError(f"the recording '{source}' is not the one run '{run}' was fit on (content hash differs)", str(run / CONFIG), "resume with the original recording")
        has_ckpt = (run / CHECKPOINT).is_file()
    else:
        cfg = FitConfig.from_dict(options)
        if run.exists() and (not run.is_dir() or any(not is_temporary(p) for p in run.iterdir())):
            raise OutputError(f"run folder '{run}' already exists and is not empty", str(run), "use --resume to continue it, or choose another --out")
        remove_temporaries(run)  # left by a fit killed while writing its first file
        rec, source = resolve_data(data, cfg.cells)
        sha = recording_sha256(rec)
        saved = None
        has_ckpt = False
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the run folder '{run}' ({exc.strerror})", fix="choose a writable --out") from exc

    device = choose_device(cfg.device)
    seed_everything(cfg.seed)
    data_info = {
        "source": source, "sha256": sha, "stimulus_kind": rec.stimulus_kind, "frame_shape": list(rec.frame_shape),
        "frame_dt": float(rec.frame_dt), "cell_ids": [int(c) for c in rec.cell_ids],  # type: ignore[arg-type]
        "n_train_bins": rec.train.n_bins, "n_test_bins": rec.test.n_bins if rec.test else 0,
        "n_repeats": rec.test.n_repeats if rec.test else 0,
    }
    kind = cfg.model
    ln_method = resolve_ln_method(cfg, rec) if kind == "ln" else None
    with deterministic_mode(cfg.deterministic):
        fd = prepare_data(rec, cfg)
        torch.manual_seed(cfg.seed)
        if kind == "ln":
            model_options: dict[str, Any] = {"rank": cfg.ln_rank}
            if ln_method == "gd":
                model_options["nonlinearity"] = "softplus"
        else:
            model_options = {"filters": tuple(cfg.filters), "noise_std": cfg.noise_std, "frame_rate": 1.0 / float(rec.frame_dt)}  # type: ignore[arg-type]
            if cfg.kernels is not None:
                model_options["kernels"] = tuple(cfg.kernels)
            if kind in ("cnn", "bn-cnn", "rcnn"):
                model_options["readout"] = cfg.resolved_readout()
                model_options["first_layer"] = cfg.resolved_first_layer()
        model = build_model(kind, cfg.history, rec.frame_shape, rec.n_cells, **model_options)
        geometry_note = getattr(model, "geometry_note", None)
        config_doc = {
            "config": cfg.to_dict(), "ln_method": ln_method, "data": data_info, "versions": versions(), "device": str(device),
            "geometry_note": geometry_note, "created": saved["created"] if saved else _now(),
            "resumed": (saved.get("resumed", []) + [_now()]) if saved else [],
        }
        write_json(run / CONFIG, config_doc)
        if on_start is not None:
            on_start(run)

        fit_info: dict[str, Any]
        if kind == "ln" and ln_method != "gd":
            from ..models.ln import fit_ln_revcorr

            t0 = time.perf_counter()
            if ln_method == "stc":  # two rank-1 filters (ln_rank does not apply)
                from ..models.stc import fit_ln_stc

                base = single_filter_method(rec)
                model, details = fit_ln_stc(fd, base=base, crop=cfg.ln_crop, n_bins=cfg.ln_bins, progress=progress)
            else:
                model, details = fit_ln_revcorr(fd, method=str(ln_method), rank=cfg.ln_rank, crop=cfg.ln_crop, n_bins=cfg.ln_bins, progress=progress)
            wall = time.perf_counter() - t0
            entry = {"epoch": 0, "method": ln_method, "val_corr": details["val_corr"], "seconds": round(wall, 3)}
            write_text(run / LOG, json.dumps(entry) + "\n")
            fit_info = {"method": ln_method, "epochs": 0, "val_corr": details["val_corr"], "cells": details["cells"], "fit_seconds": wall}
        else:
            if kind == "ln":
                from ..models.ln import init_ln_for_gd

                init_ln_for_gd(model, fd, crop=cfg.ln_crop)
            state = train(model, fd, cfg, device, run / CHECKPOINT, run / LOG, resume=resume and has_ckpt, progress=progress, on_epoch=on_epoch)
            fit_info = {"method": ln_method or "adam", "epochs": state.epoch, "best_epoch": state.best_epoch, "best_val_loss": state.best_val_loss,
                        "best_val_corr": state.best_val_corr, "stopped": state.stopped, "fit_seconds": state.wall_s}
            model = model.cpu()
    stats = fd.stats
    del fd
    return finalize_run(run, model, rec, cfg, kind, data_info, stats, fit_info, geometry_note, t_start, figures)


def single_filter_method(rec: Recording) -> str:
    """The reverse-correlation filter for this stimulus: ``sta`` for white noise / full-field,
    ``ridge`` for natural scenes and unknown stimuli (correlated pixels need regularising)."""
    return "sta" if rec.stimulus_kind in ("whitenoise", "fullfield") else "ridge"


def resolve_ln_method(cfg: FitConfig, rec: Recording) -> str:
    """``auto`` -> ``stc`` (the two-filter LN, chosen per cell on validation over the single
    filter, so never worse there), or the single filter when ``ln_rank`` asks for a full filter."""
    if cfg.ln_method != "auto":
        return cfg.ln_method
    return "stc" if cfg.ln_rank == 1 else "sta"


def _merge_resume(saved: FitConfig, options: dict[str, Any], run: Path) -> FitConfig:
    given = FitConfig.from_dict(options).to_dict()
    updates: dict[str, Any] = {}
    sd = saved.to_dict()
    for key in options:
        if given[key] == sd[key]:
            continue
        if key not in RUNTIME_KEYS:
            raise ConfigError(f"option '{key}' is {given[key]!r} but run '{run}' was started with {sd[key]!r}", str(run / CONFIG),
                              f"only {', '.join(RUNTIME_KEYS)} may change on resume; start a new run for other options")
        updates[key] = given[key]
    return saved.with_updates(**updates) if updates else saved


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_meta(model: Any, rec: Recording, cfg: FitConfig, kind: str, data_info: dict[str, Any], stats: dict[str, float]) -> dict[str, Any]:
    """The FittedModel metadata (see :mod:`retinakit.models.fitted`)."""
    return {
        "model": model.spec(), "kind": kind, "history": cfg.history, "frame_dt": float(rec.frame_dt),  # type: ignore[arg-type]
        "frame_shape": list(rec.frame_shape), "cell_ids": [int(c) for c in rec.cell_ids],
        "stim_mean": stats["stim_mean"], "stim_std": stats["stim_std"], "stim_min": stats["stim_min"], "stim_max": stats["stim_max"],
        "data_sha256": data_info["sha256"], "data_source": data_info["source"], "stimulus_kind": rec.stimulus_kind,
    }


def finalize_run(run: Path, model: Any, rec: Recording, cfg: FitConfig, kind: str, data_info: dict[str, Any], stats: dict[str, float],
                 fit_info: dict[str, Any], geometry_note: str | None, t_start: float, figures: bool = True) -> dict[str, Any]:
    """Save model.pt, score on the test repeats, write metrics/cells/figures, then DONE."""
    from ..evaluation.metrics import evaluate, per_cell_rows, to_jsonable
    from ..evaluation.tables import cells_csv
    from ..models.fitted import FittedModel

    fitted = FittedModel(model=model.eval(), meta=build_meta(model, rec, cfg, kind, data_info, stats))
    save_model(run / MODEL, fitted)
    scores, pred = evaluate(fitted, rec, min_reliability=cfg.min_reliability, return_prediction=True)
    rows = per_cell_rows(scores)
    dt = float(rec.frame_dt)  # type: ignore[arg-type]
    for k, row in enumerate(rows):
        row["rate_hz_train"] = float(rec.train.counts[:, k].mean() / dt)
        row["rate_hz_test"] = float(rec.test.counts[:, k].mean() / dt) if rec.test is not None else None
    metrics: dict[str, Any] = {
        "model": kind, "run": str(run), "data": data_info, "summary": scores["summary"], "cells": rows,
        "scores": to_jsonable({k: v for k, v in scores.items() if k != "summary"}),
        "fit": fit_info, "geometry_note": geometry_note, "definitions": "see retinakit.evaluation.metrics (README: Scoring)",
    }
    checks = _run_checks(fitted)
    if checks is not None:
        metrics["checks"] = checks
    metrics["figures"] = []
    if figures:
        from ..evaluation.figures import write_run_figures

        metrics["figures"] = [str(p.relative_to(run)) for p in write_run_figures(run / FIGURES, fitted, rec, pred, scores, read_log(run))]
    metrics["wall_seconds"] = time.perf_counter() - t_start
    write_json(run / METRICS, metrics)
    write_text(run / CELLS, cells_csv(rows))
    write_text(run / DONE, _now() + "\n")
    return metrics


def _run_checks(fitted: Any) -> dict[str, Any] | None:
    """Causality/alignment checks from :mod:`retinakit.probes.check` when that module is installed."""
    try:
        from ..probes.check import check_model  # type: ignore[import-not-found]
    except ImportError:
        return None
    return check_model(fitted)


# ----------------------------------------------------------------------------- unfinished runs
def find_unfinished_runs(root: str | os.PathLike[str], model: str, data_label: str, config: dict[str, Any], source: str | None) -> list[dict[str, Any]]:
    """Unfinished runs ``root/<model>-<data_label>-<n>`` of the same fit: same options (apart from the
    runtime ones) and the same recording file. Oldest first; each is a :func:`~retinakit.fitting.run_folder.run_status` dict."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = []
    prefix = f"{model}-{data_label}-"
    for d in base.iterdir():
        if not (d.name.startswith(prefix) and d.name[len(prefix):].isdigit() and d.is_dir()) or is_finished(d) or not (d / CONFIG).is_file():
            continue
        st = run_status(d)
        saved = st["config"] or {}
        same = all(saved.get(k) == v for k, v in config.items() if k not in RUNTIME_KEYS)
        if same and source is not None and st["source"] is not None:
            try:
                same = Path(st["source"]).resolve() == Path(source).resolve()
            except OSError:
                same = False
        if same:
            found.append((int(d.name[len(prefix):]), st))
    return [st for _, st in sorted(found, key=lambda x: x[0])]
