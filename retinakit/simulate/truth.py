"""The simulated retina itself, rebuilt from a recording written by ``retinakit simulate``, as a
model that probes can run on: the ground truth goes through the identical protocol as a model
fitted to the recording.

A simulated recording stores its spec (seed, cell count, frame size and rate, cell mix), the
retina's parameters, the ground truth of every cell and the calibrated output stage
(``provenance`` in the HDF5 file). :func:`rebuild_retina` builds the same retina again
(:meth:`Retina.build` is deterministic) and checks it cell by cell against the stored ground
truth, so a changed simulator is refused instead of silently probed. :class:`TruthModel` has the
interface the probes use (``predict``, ``history``, ``frame_dt``, ``frame_shape``, ``cell_ids``,
``meta`` with the training stimulus statistics) and returns the true expected count per bin.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, ModelError
from .retina import SIMULATOR_VERSION, OutputNonlinearity, Retina, RetinaParams
from .stimuli import to_contrast

#: Frames of history a probe protocol assumes for the truth when no model is compared (the CNN default).
DEFAULT_HISTORY = 40
GENERATOR = "retinakit.simulate"


def simulation_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance of a recording written by ``retinakit simulate``, or None for anything else."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        import h5py

        with h5py.File(p, "r") as f:
            raw = f.attrs.get("provenance")
            if raw is None:
                return None
            prov = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (OSError, ValueError):
        return None
    return prov if isinstance(prov, dict) and prov.get("generator") == GENERATOR else None


def is_simulation(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a recording written by ``retinakit simulate`` (its retina can be rebuilt)."""
    return simulation_provenance(path) is not None


def rebuild_retina(provenance: dict[str, Any], where: str = "recording") -> Retina:
    """The simulated retina of a recording, rebuilt exactly from its provenance and calibrated.

    Raises :class:`~retinakit.errors.ModelError` when the recording was made by another simulator
    version or the rebuilt cells differ from the stored ground truth.
    """
    from .record import SimulationSpec

    version = str(provenance.get("simulator_version"))
    if version != SIMULATOR_VERSION:
        raise ModelError(f"the recording was simulated by simulator version {version}, this retinakit has {SIMULATOR_VERSION}", where,
                         "simulate it again with this retinakit, or probe it with the retinakit that made it")
    try:
        sj = dict(provenance["spec"])
        sj["size"] = tuple(int(v) for v in sj["size"])
        sj["cell_types"] = tuple(sj.get("cell_types", ()))
        spec = SimulationSpec(**sj).validate()
        params = RetinaParams(**provenance["retina_params"])
        out = provenance["output_nonlinearity"]
        output = OutputNonlinearity(theta=np.asarray(out["theta"], dtype=np.float64), scale=np.asarray(out["scale"], dtype=np.float64),
                                    amp=np.asarray(out["amp_hz"], dtype=np.float64), sharpness=float(out["sharpness"]), max_rate_hz=float(out["max_rate_hz"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"the simulation record is incomplete ({type(exc).__name__}: {exc})", f"{where} provenance", "simulate the recording again with this retinakit") from None
    retina = Retina.build(spec.frame_shape, int(spec.n_cells), seed=int(spec.seed), frame_rate=spec.frame_rate, params=params, types=spec.types)
    stored = json.loads(json.dumps(provenance.get("cells")))
    rebuilt = json.loads(json.dumps(retina.ground_truth()))
    if stored != rebuilt:
        bad = next((i for i, (a, b) in enumerate(zip(stored or [], rebuilt)) if a != b), 0)
        raise ModelError(f"the retina rebuilt from the spec differs from the stored ground truth (cell {bad + 1})", where,
                         "the simulator's cell types changed since the recording was made; simulate it again")
    retina.output = output
    return retina


def _stimulus_stats(stimulus: np.ndarray, chunk: int = 4096) -> dict[str, float]:
    """Mean, s.d., min and max of the raw training stimulus (as ``retinakit fit`` records them)."""
    s = np.asarray(stimulus)
    total = total_sq = 0.0
    n = 0
    lo, hi = math.inf, -math.inf
    for a in range(0, s.shape[0], chunk):
        b = s[a : a + chunk].astype(np.float64)
        total += float(b.sum())
        total_sq += float((b * b).sum())
        n += b.size
        lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
    mean = total / n
    sd = math.sqrt(max(total_sq / n - mean * mean, 0.0))
    return {"stim_mean": mean, "stim_std": sd if sd > 0 else 1.0, "stim_min": lo, "stim_max": hi}


@dataclass
class TruthModel:
    """The simulated retina of a recording with the interface of a fitted model.

    ``predict(stimulus)`` maps a raw stimulus (the recording's units) to the true expected spike
    count per bin, ``(T, n_cells)``; bins before ``history`` are NaN as for a fitted model, so a
    probe reads the same bins from both. ``cells`` restricts and orders the cells (ids).
    """

    retina: Retina
    meta: dict[str, Any] = field(default_factory=dict)
    columns: list[int] = field(default_factory=list)

    @property
    def history(self) -> int:
        """Frames of history the probe protocol assumes (the compared model's, else :data:`DEFAULT_HISTORY`)."""
        return int(self.meta["history"])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """``()`` for a full-field retina, else ``(H, W)``."""
        return tuple(self.retina.frame_shape)

    @property
    def frame_dt(self) -> float:
        """Bin width in seconds."""
        return 1.0 / self.retina.frame_rate

    @property
    def cell_ids(self) -> list[int]:
        """Ids of the cells, in output order."""
        return [int(c) for c in self.meta["cell_ids"]]

    def predict(self, stimulus: np.ndarray) -> np.ndarray:
        """True expected spike count per bin ``(T, n_cells)`` for a raw stimulus ``(T,)`` or ``(T, H, W)``."""
        s = np.asarray(stimulus)
        if s.shape[1:] != self.frame_shape:
            raise ModelError(f"stimulus frames are {s.shape[1:]} but the retina has {self.frame_shape or 'full-field'} frames", fix="build the stimulus in the retina's geometry")
        if self.meta.get("stim_dtype") == "uint8":
            c = (s.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)
        else:
            c = to_contrast(s.astype(np.float32))
        rate = self.retina.rate_hz(self.retina.generator(c))[:, self.columns] * self.frame_dt
        out = rate.astype(np.float32)
        out[: min(self.history, out.shape[0])] = np.nan
        return out


def load_truth(path: str | os.PathLike[str], history: int | None = None, cells: list[int] | None = None, levels_from: dict[str, Any] | None = None) -> TruthModel:
    """The simulated retina of the recording at ``path`` as a :class:`TruthModel`.

    ``history``: the probe protocol's history (default :data:`DEFAULT_HISTORY`); ``cells``: ids to
    keep, in order (default all); ``levels_from``: a model's metadata whose training stimulus
    statistics (``stim_mean`` ...) are used instead of the recording's, so that both see the very
    same probe stimuli. Raises :class:`~retinakit.errors.DataError` when ``path`` is not a
    simulated recording.
    """
    from ..io import load_recording

    prov = simulation_provenance(path)
    if prov is None:
        raise DataError(f"'{path}' is not a recording written by `retinakit simulate`", str(path), "give a run folder, or a recording made by `retinakit simulate`")
    retina = rebuild_retina(prov, str(path))
    rec = load_recording(path)
    ids = [int(c) for c in rec.cell_ids]
    keep = ids if cells is None else [int(c) for c in cells]
    missing = [c for c in keep if c not in ids]
    if missing:
        raise DataError(f"cell(s) {', '.join(map(str, missing))} are not in the simulation", str(path), f"its cells are {', '.join(map(str, ids))}")
    stats = _stimulus_stats(rec.train.stimulus)
    if levels_from is not None:
        stats.update({k: levels_from[k] for k in ("stim_mean", "stim_std", "stim_min", "stim_max") if levels_from.get(k) is not None})
    meta = {
        "kind": "truth", "history": int(history or DEFAULT_HISTORY), "frame_dt": float(rec.frame_dt), "frame_shape": list(retina.frame_shape),
        "cell_ids": keep, **stats, "stim_dtype": str(rec.train.stimulus.dtype), "stimulus_kind": rec.stimulus_kind,
        "data_sha256": prov.get("sha256") or rec.provenance.get("sha256"), "data_source": str(path),
        "cells": [c for c in prov["cells"] if int(c["id"]) in keep],
    }
    return TruthModel(retina=retina, meta=meta, columns=[ids.index(c) for c in keep])
