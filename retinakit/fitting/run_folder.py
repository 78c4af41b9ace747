"""Run folders on disk: one fit = one folder, finished when ``DONE`` exists.

Layout::

    config.json    resolved options, data identity, versions, device, geometry note
    checkpoint.pt  latest training state (every epoch; what --resume continues from)
    model.pt       best weights + metadata (what load_run reads)
    log.jsonl      one line per epoch: train loss, validation loss and correlation, lr
    metrics.json   scores on the repeated test segment, per cell and summarised
    cells.csv      the per-cell table
    figures/       training curves, predicted vs recorded responses, filters
    DONE           written last, atomically

This module names the files, creates folders, reads what a folder holds and saves and loads the
fitted model; :mod:`retinakit.pipeline.runs` fills a folder (fit, score, figures, checks, DONE).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, OutputError

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
            if is_temporary(p, figures):
                p.unlink(missing_ok=True)
                removed.append(str(p.relative_to(run)))
    return removed


def is_temporary(p: Path, in_figures: bool = False) -> bool:
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
