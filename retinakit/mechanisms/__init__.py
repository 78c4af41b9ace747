"""Reading mechanisms out of a fitted CNN (Tanaka et al., NeurIPS 2019).

Integrated gradients from one ganglion cell's output to every channel ("model interneuron") of
the two hidden layers over a stimulus (:mod:`.attribution`), the ranking of the channels by their
contribution, and the reduced model that keeps the top ``K`` channels with the others clamped at
their mean (:mod:`.reduce`); stimuli from the probe protocols or the test movie
(:mod:`.stimuli`); figures (:mod:`.figures`). ``retinakit reduce`` on the command line;
:func:`reduce` from Python. The LN model has no hidden layer: it is refused with a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .reduce import DEFAULT_LAYER, DEFAULT_TOP, format_summary


def default_out_dir(run_path: str | os.PathLike[str], stimulus: str, cell: int | None) -> Path:
    """``<RUN>/mechanisms/<stimulus>-cell<N>/`` (for a checkpoint file, beside it in its folder)."""
    p = Path(run_path)
    base = p.parent if p.is_file() else p
    return base / "mechanisms" / f"{stimulus}-cell{cell if cell is not None else 'only'}"


def reduce(model: Any, stimulus: str = "natural", cell: int | None = None, top: int = DEFAULT_TOP, layer: str = DEFAULT_LAYER,
           params: dict[str, Any] | None = None, data: Any = None, out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Attribute cell ``cell``'s response to the hidden channels of a fitted CNN and reduce the model.

    ``model``: a run folder, a ``model.pt`` or a ``FittedModel``; ``stimulus``: one of
    :data:`retinakit.mechanisms.stimuli.STIMULI`; ``params``: stimulus parameters
    (:data:`retinakit.mechanisms.stimuli.PARAMS`); ``data``: the recording to score on (default:
    the run's own); ``out``: output folder (default ``RUN/mechanisms/<stimulus>-cell<N>/``, or a
    new temporary folder for an in-memory model). Returns the result written to ``result.json``
    (``format_summary(result)`` gives the terminal summary).
    """
    from .reduce import run_reduce

    source = None
    if isinstance(model, (str, os.PathLike)):
        from ..fitting.run_folder import load_run

        source = str(model)
        fitted = load_run(model)
        if out is None:
            out = default_out_dir(model, stimulus, cell)
    else:
        fitted = model
    if out is None:
        import tempfile

        out = tempfile.mkdtemp(prefix="retinakit-reduce-")
    return run_reduce(fitted, out, stimulus=stimulus, cell=cell, top=top, layer=layer, params=params, data=data, source=source)


__all__ = ["reduce", "format_summary", "default_out_dir"]
