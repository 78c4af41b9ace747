"""The run pipeline, above fitting, evaluation and probes: a fit into a run folder (:mod:`.runs`:
load the data, fit, save the model, score, draw figures, check causality, write ``DONE``; resume)
and CNN vs LN on one recording (:mod:`.compare`). The CLI, the Python API, validation and batch
sweeps all go through here.
"""

from __future__ import annotations

from .runs import run_fit

__all__ = ["run_fit"]
