"""A fitted model with everything needed to use it later: the network plus its metadata.

``meta`` (JSON-able) holds at least: ``model`` (the model's ``spec()``), ``history``,
``frame_dt``, ``frame_shape``, ``cell_ids``, ``stim_mean``/``stim_std`` (training z-score
statistics, applied as ``(s - mean) / std``), ``stim_min``/``stim_max`` (raw range seen in
training, for building probe stimuli in the model's own units) and ``data_sha256``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..alignment import first_predicted_bin
from ..errors import ModelError


def stimulus_windows(z: Any, history: int) -> Any:
    """All ``history``-frame windows of a ``(T, H, W)`` tensor as a strided view ``(T-history, history, H, W)``.

    Window ``i`` holds frames ``i .. i+history-1`` and predicts bin ``i + history`` (see
    :mod:`retinakit.alignment`). No copy is made.
    """
    n = z.shape[0] - history
    if n <= 0:
        return z.new_zeros((0, history) + tuple(z.shape[1:]))
    s = z.stride()
    return z.as_strided((n, history) + tuple(z.shape[1:]), (s[0], s[0]) + tuple(s[1:]))


@dataclass
class FittedModel:
    """A trained network (``torch.nn.Module`` in eval mode) and its metadata."""

    model: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def history(self) -> int:
        """Frames of history the model sees."""
        return int(self.meta["history"])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Spatial shape of the frames the model was fit on (``()`` = full-field)."""
        return tuple(int(s) for s in self.meta["frame_shape"])

    @property
    def frame_dt(self) -> float:
        """Bin width in seconds."""
        return float(self.meta["frame_dt"])

    @property
    def cell_ids(self) -> list[int]:
        """Ids of the modelled cells, in output order."""
        return [int(c) for c in self.meta["cell_ids"]]

    def normalise(self, stimulus: np.ndarray) -> np.ndarray:
        """Z-score a raw stimulus with the training statistics; shape ``(T, H, W)`` (1x1 for full-field)."""
        s = np.asarray(stimulus, dtype=np.float32)
        fs = self.frame_shape
        if s.shape[1:] != fs:
            raise ModelError(f"stimulus frames are {s.shape[1:]} but the model was fit on {fs or 'full-field'} frames", fix="build the stimulus in the model's geometry")
        z = (s - np.float32(self.meta["stim_mean"])) / np.float32(self.meta["stim_std"])
        return z.reshape((z.shape[0],) + (fs if fs else (1, 1)))

    def predict(self, stimulus: np.ndarray, chunk_bins: int = 500, device: str | None = None) -> np.ndarray:
        """Expected spike count per bin, ``(T, n_cells)``, for a raw stimulus ``(T,)`` or ``(T, H, W)``.

        Bins without a full history (``t < history``) are NaN. The movie is run through the
        model's ``forward_chunks`` in contiguous stretches of ``chunk_bins`` predicted bins; a
        recurrent model (``model.recurrent``) carries its state from one stretch to the next, so
        the result is one pass over the movie from a zero state whatever ``chunk_bins``.
        """
        import torch

        z = torch.from_numpy(np.ascontiguousarray(self.normalise(stimulus)))
        T = z.shape[0]
        h = self.history
        out = np.full((T, len(self.cell_ids)), np.nan, dtype=np.float32)
        first = first_predicted_bin(h)
        if T <= first:
            return out
        dev = torch.device(device) if device else next(self.model.parameters()).device
        self.model.eval()
        recurrent = bool(getattr(self.model, "recurrent", False))
        state = None
        with torch.no_grad():
            for s in range(0, T - h, chunk_bins):
                e = min(T - h, s + chunk_bins)  # windows s..e-1 predict bins s+h..e+h-1
                zc = z[s : e + h].unsqueeze(0).to(dev)
                if recurrent:
                    p, state = self.model.forward_chunks(zc, state=state, return_state=True)
                else:
                    p = self.model.forward_chunks(zc)
                out[first + s : first + e] = p[0].float().cpu().numpy()
        return out
