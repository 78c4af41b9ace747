"""Model vs ground truth: one probe run on a fitted model and on the simulated retina it was fit to.

``retinakit probe SIMULATION --compare RUN`` (either order) rebuilds the simulated retina of the
recording (:mod:`retinakit.simulate.truth`), restricts it to the model's cells, gives it the
model's history and training-stimulus levels so that both see the very same stimuli, runs the
probe on both and prints, cell by cell, each probe's readout for the model next to the truth's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_pair(a: str | Path, b: str | Path) -> tuple[Any, Any, str, str]:
    """``(model, truth, model_path, truth_path)`` from two paths given in either order.

    One must be a run (folder or model.pt), the other a recording written by ``retinakit simulate``;
    :class:`~retinakit.errors.ConfigError` otherwise.
    """
    from ..errors import ConfigError
    from ..simulate.truth import is_simulation, load_truth
    from . import load_fitted

    sims = [is_simulation(p) for p in (a, b)]
    if sims[0] == sims[1]:
        what = "simulated recordings" if sims[0] else "runs"
        raise ConfigError(f"--compare needs one run and one simulated recording, got two {what} ('{a}', '{b}')", "--compare",
                          "e.g. `retinakit probe sim.h5 --stimulus osr --compare runs/bn-cnn-sim-1`")
    model_path, truth_path = (b, a) if sims[0] else (a, b)
    model = load_fitted(model_path)
    truth = load_truth(truth_path, history=model.history, cells=model.cell_ids, levels_from=model.meta)
    if abs(truth.frame_dt - model.frame_dt) > 1e-9 * max(1.0, model.frame_dt) or tuple(truth.frame_shape) != tuple(model.frame_shape):
        raise ConfigError(f"the model ({model.frame_dt * 1000:g} ms frames, {model.frame_shape or 'full-field'}) was not fit to this simulation "
                          f"({truth.frame_dt * 1000:g} ms frames, {truth.frame_shape or 'full-field'})", "--compare", "compare a model with the recording it was fit to")
    return model, truth, str(model_path), str(truth_path)


def format_compare(name: str, readout_model: dict[int, dict[str, Any]], readout_truth: dict[int, dict[str, Any]]) -> str:
    """A table: per cell, each readout value for the model and the truth side by side."""
    ids = list(readout_truth)
    keys = list(next(iter(readout_truth.values())).keys()) if readout_truth else []

    def fmt(v: Any) -> str:
        return "-" if v is None else str(v)

    cols = []
    for key in keys:
        w = max(len(key) + 2, 9, *(len(fmt(readout_model.get(i, {}).get(key))) + len(fmt(readout_truth[i].get(key))) + 3 for i in ids))
        cols.append((key, w))
    head = f"{'cell':>6} " + " ".join(f"{key:>{w}}" for key, w in cols)
    lines = [f"{name}: model | truth per cell", head]
    for i in ids:
        lines.append(f"{i:>6} " + " ".join(f"{fmt(readout_model.get(i, {}).get(key)) + ' | ' + fmt(readout_truth[i].get(key)):>{w}}" for key, w in cols))
    return "\n".join(lines)
