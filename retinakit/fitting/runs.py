"""Run folders: one fit = one folder, finished when ``DONE`` exists.

Layout::

    config.json    resolved options, data identity, versions, device, geometry note
    checkpoint.pt  latest training state (every epoch; what --resume continues from)
    model.pt       best weights + metadata (what load_run reads)
    log.jsonl      one line per epoch: train loss, validation loss and correlation, lr
    metrics.json   scores on the repeated test segment, per cell and summarised
    cells.csv      the per-cell table
    figures/       training curves, predicted vs recorded responses, filters
    DONE           written last, atomically

Gradient fits write ``checkpoint.pt`` every epoch; reverse-correlation LN fits (seconds) have no
epochs and are simply redone when resumed.
"""

from __future__ import annotations

import csv
import hashlib
import io
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
from ..recording import Recording
from .config import RUNTIME_KEYS, FitConfig

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
CELLS = "cells.csv"
LOG = "log.jsonl"
DONE = "DONE"
FIGURES = "figures"


# ----------------------------------------------------------------------------- folders
def is_finished(run_dir: str | os.PathLike[str]) -> bool:
    """True when the run folder holds ``DONE`` (written last, so everything else is complete)."""
    return (Path(run_dir) / DONE).is_file()


def next_run_dir(root: str | os.PathLike[str], model: str, data_stem: str) -> Path:
    """Create and return ``root/<model>-<data stem>-<n>`` with the first free ``n`` (never reuses a folder)."""
    base = Path(root)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the runs folder '{base}' ({exc.strerror})", fix="choose a writable folder with --out") from exc
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in data_stem) or "data"
    n = 1
    while True:
        p = base / f"{model}-{stem}-{n}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            n += 1
        except OSError as exc:
            raise OutputError(f"cannot create the run folder '{p}' ({exc.strerror})", fix="choose a writable folder with --out") from exc


def remove_temporaries(run_dir: str | os.PathLike[str]) -> list[str]:
    """Delete the temporary files an interrupted atomic write left in a run folder (``.<name>.<random>``); return their names."""
    run = Path(run_dir)
    removed = []
    for folder, figures in ((run, False), (run / FIGURES, True)):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _is_temporary(p, figures):
                p.unlink(missing_ok=True)
                removed.append(str(p.relative_to(run)))
    return removed


def _is_temporary(p: Path, in_figures: bool = False) -> bool:
    """A temporary file of :func:`retinakit.atomic.atomic_path` for one of the run's files (any dot-file in figures/)."""
    known = (CONFIG, CHECKPOINT, MODEL, METRICS, CELLS, LOG, DONE)
    name = p.name
    if not (name.startswith(".") and p.is_file()):
        return False
    return in_figures or any(name.startswith(f".{k}.") for k in known)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON file of a run folder, with a clear error when missing or damaged."""
    if not path.is_file():
        raise CheckpointError(f"{what} '{path}' is missing", str(path.parent), "is this a retinakit run folder? finished runs hold DONE")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} '{path}' is not valid JSON ({exc})", str(path)) from exc


def read_log(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch log of a run (empty when there is none)."""
    p = Path(run_dir) / LOG
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- what a folder is
def run_status(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a run folder holds: ``is_run`` (has config.json), ``finished`` (DONE), ``epoch`` (the
    last epoch its checkpoint keeps, 0 when none), ``max_epochs``, ``model`` and data ``source``."""
    run = Path(run_dir)
    status: dict[str, Any] = {"run": str(run), "is_run": (run / CONFIG).is_file(), "finished": is_finished(run), "epoch": 0,
                              "max_epochs": None, "model": None, "source": None, "config": None}
    if status["is_run"]:
        try:
            saved = json.loads((run / CONFIG).read_text())
            status.update(config=saved.get("config"), model=saved.get("config", {}).get("model"), source=saved.get("data", {}).get("source"),
                          max_epochs=saved.get("config", {}).get("max_epochs"))
        except (OSError, ValueError, AttributeError):
            pass
    status["epoch"] = checkpoint_epoch(run)
    return status


def checkpoint_epoch(run_dir: str | os.PathLike[str], strict: bool = False) -> int:
    """The last finished epoch a run's ``checkpoint.pt`` holds (what ``--resume`` continues after); 0 when none.

    A damaged checkpoint falls back to the log, or with ``strict`` raises its :class:`CheckpointError`.
    """
    ckpt = Path(run_dir) / CHECKPOINT
    if ckpt.is_file():
        try:
            from .checkpoint import load_checkpoint

            _, info = load_checkpoint(ckpt)
            return int(info.get("state", {}).get("epoch", 0))
        except (CheckpointError, ValueError, TypeError, AttributeError):
            if strict:
                raise
    log = Path(run_dir) / LOG  # written after the checkpoint, so never ahead of it
    try:
        return max([int(e.get("epoch", 0)) for e in read_log(run_dir) if "train_loss" in e] or [0]) if log.is_file() else 0
    except (OSError, ValueError):
        return 0


def not_a_finished_run(folder: str | os.PathLike[str], what: str = "run folder", resume_hint: str | None = None) -> CheckpointError:
    """The error for a folder given where a finished run was expected, saying what the folder is
    (an unfinished run and its epoch, a compare-ln folder, a folder of runs, an empty or foreign folder)."""
    p = Path(folder)
    expected = "a finished run folder made by `retinakit fit` (it holds model.pt and DONE) or its model.pt"
    if not p.is_dir():
        return CheckpointError(f"{what} '{p}' is not a folder", None, f"give {expected}")
    if (p / CONFIG).is_file():
        if is_finished(p):
            return CheckpointError(f"{what} '{p}' is finished but has no {MODEL}", None, "the folder was edited; refit")
        st = run_status(p)
        done = f"its checkpoint keeps epoch {st['epoch']}" + (f" of at most {st['max_epochs']}" if st["max_epochs"] else "") if st["epoch"] else "no epoch had finished"
        hint = resume_hint or f"continue it with `retinakit fit --resume {p}`"
        return CheckpointError(f"{what} '{p}' is a run that has not finished (no DONE; {done})", None, f"{hint}, or give a finished run")
    subdirs = sorted(d for d in p.iterdir() if d.is_dir()) if p.is_dir() else []
    if (p / "compare.json").is_file() or {"cnn", "ln"} <= {d.name for d in subdirs}:
        return CheckpointError(f"{what} '{p}' is a compare-ln folder, not a run", None, f"give one of the runs inside it: {p / 'cnn'} or {p / 'ln'}")
    runs = [d for d in subdirs if (d / CONFIG).is_file()]
    if runs:
        return CheckpointError(f"{what} '{p}' is not a run but a folder of {len(runs)} run(s)", None, f"give one of them, e.g. {runs[-1]}")
    compares = [d for d in subdirs if (d / "compare.json").is_file() or ((d / "cnn").is_dir() and (d / "ln").is_dir())]
    if compares:
        return CheckpointError(f"{what} '{p}' is not a run but a folder of {len(compares)} compare-ln folder(s)", None,
                               f"give one of the runs inside them, e.g. {compares[-1] / 'cnn'}")
    if not any(p.iterdir()):
        return CheckpointError(f"{what} '{p}' is an empty folder, not a run", None, f"give {expected}")
    return CheckpointError(f"{what} '{p}' is not a retinakit run (no {CONFIG}, {MODEL} or {DONE})", None, f"give {expected}")


def _foreign_file_kind(p: Path) -> str | None:
    """What a file given as a model is when it cannot be a checkpoint (``None`` when it may be one)."""
    import zipfile

    try:
        with open(p, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if not head:
        return "it is an empty file"
    if zipfile.is_zipfile(p):
        return None
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "it is an HDF5 file: a recording? fit a model to it with `retinakit fit`"
    try:
        head.decode("utf-8")
        return "it is a text file"
    except UnicodeDecodeError:
        return "it is a binary file but not a retinakit checkpoint"


def find_unfinished_runs(root: str | os.PathLike[str], model: str, data_label: str, config: dict[str, Any], source: str | None) -> list[dict[str, Any]]:
    """Unfinished runs ``root/<model>-<data_label>-<n>`` of the same fit: same options (apart from the
    runtime ones) and the same recording file. Oldest first; each is a :func:`run_status` dict."""
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


# ----------------------------------------------------------------------------- models on disk
def save_model(path: str | os.PathLike[str], fitted: Any) -> Path:
    """Write a fitted model (weights + metadata) as a retinakit checkpoint."""
    from .checkpoint import save_checkpoint

    return save_checkpoint(path, dict(fitted.model.state_dict()), {"kind": "model", "meta": fitted.meta})


def load_run(path: str | os.PathLike[str]) -> Any:
    """Load the fitted model of a run folder (or a ``model.pt``) as a :class:`~retinakit.models.fitted.FittedModel`."""
    from ..models import model_from_spec
    from ..models.fitted import FittedModel
    from .checkpoint import load_checkpoint

    p = Path(path)
    if p.is_dir():
        if not (p / MODEL).is_file():
            raise not_a_finished_run(p)
        p = p / MODEL
    elif p.is_file():
        kind = _foreign_file_kind(p)
        if kind is not None:
            raise CheckpointError(f"'{p}' is not a fitted model ({kind})", None,
                                  "give a run folder made by `retinakit fit` (it holds model.pt and DONE) or its model.pt")
    tensors, info = load_checkpoint(p)
    if info.get("kind") != "model" or "meta" not in info:
        raise CheckpointError(f"'{p}' holds no fitted model (kind {info.get('kind')!r})", str(p), "give the run folder or its model.pt")
    meta = info["meta"]
    try:
        model = model_from_spec(meta["model"])
        model.load_state_dict(tensors)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the model in '{p}' cannot be rebuilt ({type(exc).__name__}: {str(exc).splitlines()[0]})", str(p), "it was written by an incompatible retinakit; refit") from exc
    model.eval()
    return FittedModel(model=model, meta=meta)


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

    from .. import __version__

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

    from ..models import build_model
    from .device import choose_device, deterministic_mode, seed_everything
    from .train import prepare_data, train

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
        cfg = _merge_resume(FitConfig.from_dict(saved["config"]), options, run)
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
        if run.exists() and (not run.is_dir() or any(not _is_temporary(p) for p in run.iterdir())):
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

                base = "sta" if rec.stimulus_kind in ("whitenoise", "fullfield") else "ridge"
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


def resolve_ln_method(cfg: FitConfig, rec: Recording) -> str:
    """``auto`` -> ``sta`` for white noise / full-field, ``ridge`` for natural scenes and unknown stimuli."""
    if cfg.ln_method != "auto":
        return cfg.ln_method
    return "sta" if rec.stimulus_kind in ("whitenoise", "fullfield") else "ridge"


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


def cells_csv(rows: list[dict[str, Any]]) -> str:
    """The per-cell table as CSV text (empty cells for undefined values)."""
    buf = io.StringIO()
    keys = list(rows[0].keys()) if rows else ["cell"]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    return buf.getvalue()


def format_cell_table(metrics: dict[str, Any], max_rows: int = 40) -> str:
    """A one-screen per-cell table of a run's scores plus the summary line."""
    rows = metrics["cells"]
    lines = [f"{'cell':>6} {'r':>7} {'ceiling':>8} {'r/ceil':>7} {'FEVE':>7} {'CCnorm':>7} {'train Hz':>8} {'test Hz':>8}  reliable"]

    def f(v: Any, w: int = 7) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, (int, float)) and v is not None else f"{'-':>{w}}"

    def hz(v: Any) -> str:  # mean rates as in `data inspect` (train / test repeats)
        return f"{v:>8.2f}" if isinstance(v, (int, float)) else f"{'-':>8}"

    for row in rows[:max_rows]:
        lines.append(f"{row['cell']:>6} {f(row['r'])} {f(row['ceiling'], 8)} {f(row['r_norm'])} {f(row['feve'])} {f(row['cc_norm'])} "
                     f"{hz(row.get('rate_hz_train'))} {hz(row.get('rate_hz_test'))}  {'yes' if row['reliable'] else 'NO'}")
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more cells in cells.csv")
    s = metrics["summary"]
    lines.append(f"mean over {s['n_reliable']}/{s['n_cells']} reliable cells: r {f(s['mean_r'], 0)}, ceiling {f(s['mean_ceiling'], 0)}, "
                 f"r/ceiling {f(s['mean_r_norm'], 0)}, FEVE {f(s['mean_feve'], 0)}")
    return "\n".join(lines)
