"""The Python API for notebooks, mirroring the command line (same defaults, same names).

>>> import retinakit as rk
>>> rec = rk.load_recording("sample")                    # retinakit data inspect sample
>>> res = rk.fit(rec, max_epochs=10)                      # retinakit fit sample --max-epochs 10 (bn-cnn)
>>> print(res.table())                                    # the table the CLI prints
>>> model = rk.load_run(res.run_dir)                      # a FittedModel: model.predict(stimulus)
>>> scores = rk.evaluate(model, rec)                      # per-cell r, ceiling, r/ceiling, FEVE, CC_norm
>>> cmp = rk.compare_ln(rec, cnn_run=res.run_dir)         # retinakit compare-ln sample --cnn-run ...

Recordings are a :class:`Recording`, a file path, or a sample name (``"sample"``,
``"sample:whitenoise"``). ``fit``, ``evaluate`` and ``compare_ln`` return result objects with the
same methods: ``.summary`` (means over reliable cells), ``.cells`` (one dict per cell),
``.table()`` (the text table the CLI prints), ``.to_dict()`` and ``.out`` (the folder written, or
``None``). ``out=None`` writes into a new temporary folder (``result.out`` names it); give
``out=`` to keep the results where you want them. Every function validates its inputs and raises
:class:`~retinakit.errors.RetinakitError` subclasses whose messages use the API's argument names.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .recording import Recording

def load_recording(path: str | os.PathLike[str], cells: list[int] | None = None, rate_keys: list[str] | None = None) -> Recording:
    """Load a recording: a file (any supported format; see :func:`retinakit.io.load_recording`) or
    a bundled sample by name (``"sample"`` = natural scenes, ``"sample:whitenoise"``)."""
    from .io import load_recording as _load

    return _load(path, cells=cells, rate_keys=rate_keys)


class _Result:
    """Shared methods of the API's results. ``result["key"]`` reads :meth:`to_dict` (older code used dicts)."""

    out: Path | None

    @property
    def summary(self) -> dict[str, Any]:
        """Means over reliable cells (``n_reliable``, ``mean_r_norm``...)."""
        return self.to_dict()["summary"]

    @property
    def cells(self) -> list[dict[str, Any]]:
        """The per-cell table, one dict per cell (``cell``, ``r``, ``ceiling``, ``r_norm``...)."""
        return self._rows()

    def _rows(self) -> list[dict[str, Any]]:
        return self.to_dict()["cells"]

    def table(self) -> str:  # pragma: no cover - every subclass defines it
        """The per-cell table as the CLI prints it."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        """Everything, as plain JSON-like data."""
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def keys(self) -> Any:
        """The keys of :meth:`to_dict`."""
        return self.to_dict().keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __str__(self) -> str:
        return self.table()


@dataclass(repr=False)
class FitResult(_Result):
    """What :func:`fit` returns: the run folder and its metrics; ``model`` loads the fitted model."""

    run_dir: Path
    metrics: dict[str, Any]
    _model: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        s = self.metrics["summary"]
        return f"FitResult(run_dir={str(self.run_dir)!r}, model={self.metrics.get('model')!r}, mean_r_norm={s.get('mean_r_norm')}, n_reliable={s.get('n_reliable')})"

    @property
    def out(self) -> Path:  # type: ignore[override]
        """The run folder (same as ``run_dir``)."""
        return self.run_dir

    @property
    def model(self) -> Any:
        """The fitted model (:class:`~retinakit.models.fitted.FittedModel`), loaded on first use."""
        if self._model is None:
            self._model = load_run(self.run_dir)
        return self._model

    def table(self) -> str:
        """The per-cell table as ``retinakit fit`` prints it."""
        from .evaluation.tables import format_cell_table

        return format_cell_table(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """The run's metrics (the content of ``metrics.json``)."""
        return self.metrics


@dataclass(repr=False)
class ScoreResult(_Result):
    """What :func:`evaluate` returns: per-cell scores on the repeated test segment.

    ``result["r"]`` (and ``ceiling``, ``r_norm``, ``feve``, ``cc_norm``, ``reliable``) are arrays
    over cells; ``.cells`` holds the same numbers as one dict per cell.
    """

    scores: dict[str, Any]
    rows: list[dict[str, Any]]
    out: Path | None = None

    def __repr__(self) -> str:
        s = self.scores["summary"]
        return f"ScoreResult(n_cells={len(self.rows)}, n_reliable={s.get('n_reliable')}, mean_r_norm={s.get('mean_r_norm')})"

    def _rows(self) -> list[dict[str, Any]]:
        return self.rows

    def table(self) -> str:
        """The per-cell table, as ``retinakit fit`` prints it."""
        from .evaluation.tables import format_cell_table

        return format_cell_table({"cells": self.rows, "summary": self.scores["summary"]})

    def to_dict(self) -> dict[str, Any]:
        """The scores: per-cell arrays, ``summary`` and ``cell_ids``."""
        return self.scores


@dataclass(repr=False)
class CompareResult(_Result):
    """What :func:`compare_ln` returns: LN and CNN scored on the same cells and bins."""

    result: dict[str, Any]

    def __repr__(self) -> str:
        s = self.result["summary"]
        return (f"CompareResult(out={self.result.get('out')!r}, mean_ln_r_norm={s.get('mean_ln_r_norm')}, "
                f"mean_cnn_r_norm={s.get('mean_cnn_r_norm')}, n_reliable={s.get('n_reliable')})")

    @property
    def out(self) -> Path | None:  # type: ignore[override]
        """The folder holding compare.csv/json/png and the two runs."""
        return Path(self.result["out"]) if self.result.get("out") else None

    @property
    def cnn_run(self) -> Path:
        """The CNN's run folder."""
        return Path(self.result["cnn_run"])

    @property
    def ln_run(self) -> Path:
        """The LN model's run folder."""
        return Path(self.result["ln_run"])

    def table(self) -> str:
        """The per-cell table as ``retinakit compare-ln`` prints it."""
        from .evaluation.compare import format_compare_table

        return format_compare_table(self.result)

    def to_dict(self) -> dict[str, Any]:
        """The comparison (the content of ``compare.json``)."""
        return self.result


def _data_label(data: Any) -> str:
    from .sample import data_label

    if isinstance(data, Recording):
        src = str(data.provenance.get("source", ""))
        return data_label(src) if src and not src.startswith("<") else "memory"
    return data_label(data)


def _new_folder(kind: str, data: Any) -> Path:
    """A new temporary folder for ``out=None`` (kept after the call; ``result.out`` names it)."""
    from .atomic import current_umask

    folder = Path(tempfile.mkdtemp(prefix=f"retinakit-{kind}-{_data_label(data)}-"))
    os.chmod(folder, 0o777 & ~current_umask())  # mkdtemp makes 0700; readable like any other run folder
    return folder


def _show_progress(progress: bool | None) -> bool:
    """``None``: progress bars in a notebook or when stderr is a terminal, none when it goes to a file."""
    if progress is not None:
        return bool(progress)
    import sys

    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


def default_model() -> str:
    """The model ``fit`` and ``retinakit fit`` use when none is given (``bn-cnn``)."""
    from .fitting.config import FitConfig

    return FitConfig().model


def fit(data: str | os.PathLike[str] | Recording | None = None, model: str | None = None, out: str | os.PathLike[str] | None = None,
        resume: bool = False, progress: bool | None = None, **options: Any) -> FitResult:
    """Fit ``model`` to ``data`` and score it on the test repeats (``retinakit fit``).

    ``data``: a path, a sample name (``"sample"``, ``"sample:whitenoise"``), a :class:`Recording`,
    or ``None`` for the bundled natural-scene sample. ``model``: ``"bn-cnn"`` (the default, as in
    the CLI), ``"cnn"`` (as published) or ``"ln"``. ``out``: the run folder; ``None`` makes a new
    temporary one (``result.run_dir``). ``resume=True`` continues the unfinished run in ``out``
    (a finished one is returned as it is). ``options``: any
    :class:`~retinakit.fitting.config.FitConfig` key (``history``, ``max_epochs``, ``lr``,
    ``cells``, ``ln_method``...). ``progress``: bars on stderr (``None``: in a notebook or on a
    terminal, not when stderr goes to a file).
    """
    from .errors import ConfigError
    from .pipeline.runs import run_fit

    opts = dict(options)
    if model is not None:
        opts["model"] = model
    if out is None:
        if resume:
            raise ConfigError("resume=True needs the run folder to continue as out=", fix="e.g. retinakit.fit(out='runs/bn-cnn-sample-1', resume=True)")
        out = _new_folder(model or default_model(), data)
    elif not resume:
        p = Path(out)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            from .fitting.run_folder import run_status

            st = run_status(p)
            what = "a finished run" if st["finished"] else ("an unfinished run" if st["is_run"] else "not empty")
            raise ConfigError(f"out='{p}' already exists and is {what}", fix="pass resume=True to continue (or reuse) it, another out=, or out=None for a new temporary folder")
    metrics = run_fit(data, out, opts, resume=resume, progress=_show_progress(progress))
    return FitResult(run_dir=Path(out), metrics=metrics)


def load_run(path: str | os.PathLike[str]) -> Any:
    """The fitted model of a finished run folder (or a ``model.pt``), as a ``FittedModel``."""
    from .fitting.run_folder import load_run as _load_run

    return _load_run(path)


def evaluate(model: Any, data: str | os.PathLike[str] | Recording | None = None, min_reliability: float | None = None) -> ScoreResult:
    """Score a fitted model (a ``FittedModel``, a :class:`FitResult` or a run folder) on a
    recording's repeated test segment; ``data=None``: the recording the run was fit on.

    Returns a :class:`ScoreResult`: per-cell ``r``, ``ceiling``, ``r_norm``, ``feve``,
    ``cc_norm``, ``reliable`` and a ``summary`` (definitions: :mod:`retinakit.evaluation.metrics`).
    """
    from .errors import ConfigError
    from .evaluation.metrics import DEFAULT_MIN_RELIABILITY, evaluate as _evaluate, per_cell_rows

    if isinstance(model, FitResult):
        model = model.model
    fitted = load_run(model) if isinstance(model, (str, os.PathLike)) else model
    if not hasattr(fitted, "predict") or not hasattr(fitted, "cell_ids"):
        raise ConfigError(f"model= must be a fitted model, a FitResult or a run folder, got {type(model).__name__}", fix="e.g. retinakit.evaluate(retinakit.load_run('runs/bn-cnn-sample-1'), rec)")
    if data is None:
        data = fitted.meta.get("data_source")
        if not data or str(data).startswith("<"):
            raise ConfigError("the model was fit on an in-memory recording, so data= must be given", fix="pass the Recording: retinakit.evaluate(model, rec)")
    rec = data if isinstance(data, Recording) else load_recording(data)
    scores = _evaluate(fitted, rec, min_reliability=DEFAULT_MIN_RELIABILITY if min_reliability is None else min_reliability)
    rows = per_cell_rows(scores)
    lookup = {int(c): k for k, c in enumerate(rec.cell_ids)}
    dt = float(rec.frame_dt)  # type: ignore[arg-type]
    for row in rows:
        k = lookup.get(int(row["cell"]))
        if k is not None:  # the columns `retinakit fit` prints
            row["rate_hz_train"] = float(rec.train.counts[:, k].mean() / dt)
            row["rate_hz_test"] = float(rec.test.counts[:, k].mean() / dt) if rec.test is not None else None
    return ScoreResult(scores=scores, rows=rows)


def compare_ln(data: str | os.PathLike[str] | Recording | None = None, out: str | os.PathLike[str] | None = None,
               cnn_run: str | os.PathLike[str] | None = None, ln_run: str | os.PathLike[str] | None = None,
               cnn_model: str | None = None, progress: bool | None = None, **options: Any) -> CompareResult:
    """CNN vs LN cell by cell on the same cells, split, bins and ceiling (``retinakit compare-ln``).

    Fits whichever of ``cnn_run`` / ``ln_run`` (finished run folders) is not given, into
    ``out/cnn`` and ``out/ln``; ``out=None`` makes a new temporary folder (``result.out``).
    ``cnn_model``: ``"bn-cnn"`` (default, as in the CLI) or ``"cnn"``. ``options`` go to both fits.
    An ``out`` that already holds finished fits with the same options is reused; with other
    options it is refused.
    """
    from .errors import ConfigError
    from .fitting.run_folder import is_finished, not_a_finished_run
    from .pipeline.compare import compare_ln as _compare

    if "model" in options:
        raise ConfigError(f"compare_ln() has no model= (got {options['model']!r})", fix="choose the CNN variant with cnn_model='bn-cnn' or 'cnn'; the other side is always the LN model")
    if cnn_model is not None and cnn_model not in ("cnn", "bn-cnn", "rcnn"):
        raise ConfigError(f"cnn_model must be 'bn-cnn', 'cnn' or 'rcnn', got {cnn_model!r}", fix="cnn_model='bn-cnn' (default), 'cnn' or 'rcnn'")
    for name, run in (("cnn_run", cnn_run), ("ln_run", ln_run)):
        if run is not None and (not Path(run).is_dir() or not is_finished(run)):
            raise not_a_finished_run(run, what=name, resume_hint=f"continue it with retinakit.fit(out='{run}', resume=True)")
    if out is None:
        out = _new_folder("compare", data)
    else:
        _check_reused_out(Path(out), options, cnn_model)
    cnn_options = {"model": cnn_model} if cnn_model else {}
    result = _compare(data, out, cnn_run=cnn_run, ln_run=ln_run, options=options, cnn_options=cnn_options, progress=_show_progress(progress))
    return CompareResult(result=result)


def _check_reused_out(out: Path, options: dict[str, Any], cnn_model: str | None) -> None:
    """Refuse an ``out`` whose fits were made with other options (they would be reused silently)."""
    from .errors import ConfigError
    from .fitting.config import FitConfig
    from .fitting.run_folder import run_status

    for label in ("cnn", "ln"):
        st = run_status(out / label)
        if not st["is_run"] or not st["config"]:
            continue
        wanted = {**options, "model": (cnn_model or default_model()) if label == "cnn" else "ln"}
        given = FitConfig.from_dict(wanted).to_dict()
        differ = [k for k in wanted if k != "device" and given.get(k) != st["config"].get(k)]
        if differ:
            k = differ[0]
            raise ConfigError(f"out='{out}' already holds a {label} fit made with {k}={st['config'].get(k)!r}, not {given.get(k)!r}",
                              fix="give another out= (or out=None for a new temporary folder) to fit again with these options")


__all__ = ["load_recording", "fit", "FitResult", "ScoreResult", "CompareResult", "load_run", "evaluate", "compare_ln", "default_model"]
