"""The Python API for notebooks, mirroring the command line.

>>> import retinakit as rk
>>> rec = rk.load_recording("rec.h5")                    # retinakit data inspect
>>> res = rk.fit(rec, model="cnn", max_epochs=10)         # retinakit fit rec.h5 --max-epochs 10
>>> res.summary["mean_r_norm"], res.run_dir
>>> model = rk.load_run(res.run_dir)                      # a FittedModel: model.predict(stimulus)
>>> scores = rk.evaluate(model, rec)                      # per-cell r, ceiling, r/ceiling, FEVE, CC_norm
>>> cmp = rk.compare_ln(rec, cnn_run=res.run_dir)         # retinakit compare-ln rec.h5 --cnn-run ...

Every function validates its inputs and raises :class:`~retinakit.errors.RetinakitError`
subclasses, like the CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .recording import Recording


def load_recording(path: str | os.PathLike[str], cells: list[int] | None = None) -> Recording:
    """Load a recording file (any supported format; see :func:`retinakit.io.load_recording`)."""
    from .io import load_recording as _load

    return _load(path, cells=cells)


@dataclass
class FitResult:
    """What :func:`fit` returns: the run folder and its metrics; ``model`` loads the fitted model."""

    run_dir: Path
    metrics: dict[str, Any]
    _model: Any = field(default=None, repr=False)

    @property
    def summary(self) -> dict[str, Any]:
        """Means over reliable cells (``mean_r``, ``mean_r_norm``, ``mean_feve``...)."""
        return self.metrics["summary"]

    @property
    def cells(self) -> list[dict[str, Any]]:
        """The per-cell table (one dict per cell)."""
        return self.metrics["cells"]

    @property
    def model(self) -> Any:
        """The fitted model (:class:`~retinakit.models.fitted.FittedModel`), loaded on first use."""
        if self._model is None:
            self._model = load_run(self.run_dir)
        return self._model

    def table(self) -> str:
        """The per-cell table as the CLI prints it."""
        from .fitting.runs import format_cell_table

        return format_cell_table(self.metrics)


def fit(data: str | os.PathLike[str] | Recording | None = None, model: str = "cnn", out: str | os.PathLike[str] | None = None,
        resume: bool = False, progress: bool = True, **options: Any) -> FitResult:
    """Fit ``model`` (``cnn``, ``bn-cnn`` or ``ln``) to ``data`` and score it on the test repeats.

    ``data``: a path, a :class:`Recording`, or ``None`` for the bundled sample. ``out``: the run
    folder (default ``runs/<model>-<data stem>-<n>``); with ``resume=True`` it names the run to
    continue. ``options``: any :class:`~retinakit.fitting.config.FitConfig` key (``history``,
    ``max_epochs``, ``lr``, ``cells``, ``ln_method``...).
    """
    from .errors import ConfigError
    from .fitting.runs import next_run_dir, run_fit

    opts = {"model": model, **options}
    if out is None:
        if resume:
            raise ConfigError("resume=True needs the run folder as out=", fix="fit(out='runs/cnn-rec-1', resume=True)")
        if isinstance(data, Recording):
            stem = Path(str(data.provenance.get("source", "memory"))).stem or "memory"
        elif data is None:
            from .sample import sample_path

            stem = sample_path().stem
        else:
            stem = Path(data).stem
        out = next_run_dir("runs", model, stem)
    metrics = run_fit(data, out, opts if not resume else options, resume=resume, progress=progress)
    return FitResult(run_dir=Path(out), metrics=metrics)


def load_run(path: str | os.PathLike[str]) -> Any:
    """The fitted model of a finished run folder (or a ``model.pt``), as a ``FittedModel``."""
    from .fitting.runs import load_run as _load_run

    return _load_run(path)


def evaluate(model: Any, data: str | os.PathLike[str] | Recording, min_reliability: float | None = None) -> dict[str, Any]:
    """Score a fitted model (or a run folder) on a recording's repeated test segment.

    Returns per-cell arrays ``r``, ``ceiling``, ``r_norm``, ``feve``, ``cc_norm``, ``reliable``
    and a ``summary`` (see :mod:`retinakit.evaluation.metrics` for the definitions).
    """
    from .evaluation.metrics import DEFAULT_MIN_RELIABILITY, evaluate as _evaluate

    fitted = load_run(model) if isinstance(model, (str, os.PathLike)) else model
    rec = data if isinstance(data, Recording) else load_recording(data)
    return _evaluate(fitted, rec, min_reliability=DEFAULT_MIN_RELIABILITY if min_reliability is None else min_reliability)


def compare_ln(data: str | os.PathLike[str] | Recording | None = None, out: str | os.PathLike[str] | None = None,
               cnn_run: str | os.PathLike[str] | None = None, ln_run: str | os.PathLike[str] | None = None,
               progress: bool = True, **options: Any) -> dict[str, Any]:
    """CNN vs LN cell by cell (see ``retinakit compare-ln``); fits whichever run is not given."""
    from .evaluation.compare import compare_ln as _compare

    return _compare(data, out, cnn_run=cnn_run, ln_run=ln_run, options=options, progress=progress)


__all__ = ["load_recording", "fit", "FitResult", "load_run", "evaluate", "compare_ln"]
