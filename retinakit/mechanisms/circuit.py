"""A fitted CNN seen as a circuit: two layers of model interneurons (channels) and a readout.

:class:`Circuit` wraps the two CNN families (:class:`~retinakit.models.cnn.CNN`, spatial, and
:class:`~retinakit.models.temporal_cnn.TemporalCNN`, full-field) behind one interface:

* :meth:`Circuit.pre1` ``(T, ...)`` z-scored movie -> ``u1 (N, C1, *P1)``: the first layer's
  input to its ReLU (convolution and, for the batch-norm variant, the batch norm in eval mode),
  for every window of the movie (window ``i`` predicts bin ``i + history``, as
  :meth:`FittedModel.predict`). It is affine in the stimulus, which integrated gradients use;
* :meth:`Circuit.layer2` ``a1 -> a2`` (post-ReLU second layer);
* :meth:`Circuit.output` ``a2 -> (N, n_cells)`` expected count per bin.

A "channel" is one feature map of a hidden layer; a "unit" is one channel at one position
(space for the CNN, time lag for the temporal CNN). The LN model has no hidden layer: asking
for its circuit raises :class:`~retinakit.errors.ModelError` saying so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError

#: hidden layers a circuit has (1 = first convolution, 2 = second)
LAYERS = (1, 2)


class Circuit:
    """The hidden layers of a fitted CNN or temporal CNN (see module docstring)."""

    def __init__(self, fitted: Any) -> None:
        from ..models.cnn import CNN
        from ..models.temporal_cnn import TemporalCNN

        model = fitted.model
        if isinstance(model, CNN):
            self.kind = "cnn"
        elif isinstance(model, TemporalCNN):
            self.kind = "tcnn"
        else:
            family = (fitted.meta.get("model") or {}).get("family") or type(model).__name__
            if family == "ln" or type(model).__name__ == "LN":
                raise ModelError("this is an LN model: a linear filter and a static nonlinearity, with no hidden layer, so it has no model "
                                 "interneurons to attribute to and nothing to reduce", None,
                                 "run `retinakit reduce` on a CNN run (`retinakit fit --model bn-cnn` or `--model cnn`)")
            raise ModelError(f"cannot read the circuit of a '{family}' model: reduce works on the CNN variants (cnn, bn-cnn, temporal CNN)", None,
                             "fit a CNN with `retinakit fit`")
        model.eval()
        self.fitted = fitted
        self.model = model
        self.history = int(model.history)
        self.channels = (int(model.filters[0]), int(model.filters[1]))

    # ------------------------------------------------------------------ layers
    def pre1_windows(self, x: torch.Tensor) -> torch.Tensor:
        """First-layer pre-ReLU activity for stimulus windows ``(B, history, ...)``."""
        m = self.model
        if self.kind == "cnn":
            return m.bn1(m.conv1(x.reshape(x.shape[0], self.history, *m.input_hw)))
        return m.bn1(m.conv1(x.reshape(x.shape[0], 1, self.history)))

    def pre1(self, z: np.ndarray | torch.Tensor, block: int = 512) -> torch.Tensor:
        """First-layer pre-ReLU activity ``(N, C1, *P1)`` for every window of a z-scored movie
        ``(T, ...)``; ``N = T - history`` (window ``i`` predicts bin ``i + history``)."""
        zt = torch.as_tensor(np.asarray(z, dtype=np.float32)) if not isinstance(z, torch.Tensor) else z.float()
        m = self.model
        T, H = int(zt.shape[0]), self.history
        N = T - H
        if N < 1:
            raise ModelError(f"a stimulus of {T} frames leaves no prediction with this model's history of {H} frames", None,
                             f"use a stimulus longer than {H} frames")
        outs = []
        with torch.no_grad():
            if self.kind == "cnn":
                from ..models.fastconv import chunk_conv

                zc = zt.reshape(T, *m.input_hw)
                for s in range(0, N, block):
                    e = min(N, s + block)
                    c1 = chunk_conv(zc[s : e + H].unsqueeze(0), m.conv1.weight, m.conv1.bias, e - s)[0]
                    outs.append(m.bn1(c1.contiguous()))
            else:
                seq = zt.reshape(1, 1, T)
                c = m.conv1(seq)[0]  # (C1, T - k1 + 1)
                P1 = H - int(m.kernel_lengths[0]) + 1
                win = c.unfold(1, P1, 1)[:, :N].permute(1, 0, 2).contiguous()  # (N, C1, P1)
                for s in range(0, N, block):
                    outs.append(m.bn1(win[s : s + block]))
        return torch.cat(outs, 0)

    def baseline_pre1(self) -> torch.Tensor:
        """First-layer pre-ReLU activity ``(1, C1, *P1)`` for the mean stimulus (0 after z-scoring)."""
        m = self.model
        shape = (1, self.history, *m.input_hw) if self.kind == "cnn" else (1, self.history)
        with torch.no_grad():
            return self.pre1_windows(torch.zeros(shape))

    def pre2(self, a1: torch.Tensor) -> torch.Tensor:
        """Second-layer pre-ReLU activity for first-layer activations ``a1``."""
        return self.model.bn2(self.model.conv2(a1))

    def layer2(self, a1: torch.Tensor) -> torch.Tensor:
        """Second-layer activations (post-ReLU) for first-layer activations ``a1``."""
        return torch.relu(self.pre2(a1))

    def output(self, a2: torch.Tensor) -> torch.Tensor:
        """Expected count per bin ``(N, n_cells)`` from second-layer activations."""
        m = self.model
        if self.kind == "cnn":
            return m.readout(a2)
        return nn.functional.softplus(m.bn_out(m.dense(a2)))[:, :, 0]

    def forward_from_pre1(self, u1: torch.Tensor) -> torch.Tensor:
        """The full model from first-layer pre-ReLU activity: ``(N, n_cells)``."""
        return self.output(self.layer2(torch.relu(u1)))

    # ------------------------------------------------------------------ filters
    def effective_filters(self, layer: int, units: list[tuple[int, tuple[int, ...]]], z: np.ndarray, max_windows: int = 256) -> np.ndarray:
        """Linearised filter of each unit ``(channel, position)`` of ``layer`` in stimulus space,
        ``(n_units, history, *frame)`` (oldest frame first).

        Layer 1: exactly its (batch-norm scaled) convolution kernel. Layer 2: the mean gradient of
        the unit's pre-ReLU activity with respect to the stimulus window, over up to
        ``max_windows`` windows of the movie ``z`` where the unit is active (all of them when it
        never is).
        """
        m = self.model
        zt = torch.as_tensor(np.asarray(z, dtype=np.float32))
        N = int(zt.shape[0]) - self.history
        idx = np.unique(np.linspace(0, N - 1, min(N, max_windows)).round().astype(int))
        if self.kind == "cnn":
            win = torch.stack([zt[i : i + self.history].reshape(self.history, *m.input_hw) for i in idx])
        else:
            win = torch.stack([zt[i : i + self.history].reshape(self.history) for i in idx])
        out = []
        for ch, pos in units:
            x = win.clone().requires_grad_(True)
            u1 = self.pre1_windows(x)
            u = u1 if layer == 1 else self.pre2(torch.relu(u1))
            val = u[(slice(None), ch) + tuple(pos)]
            active = (val > 0).detach()
            w = active.float() if bool(active.any()) else torch.ones_like(val)
            (g,) = torch.autograd.grad((val * w).sum() / w.sum(), x)
            out.append(g.sum(0).detach().numpy())
        shape = (self.history, *m.input_hw) if self.kind == "cnn" else (self.history,)
        return np.stack(out).reshape((len(units),) + shape) if out else np.zeros((0,) + shape)


def split_filter(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rank-1 split of a filter ``(history, ...)`` into a temporal ``(history,)`` and a spatial
    part (frame shape, unit norm, its largest-magnitude pixel positive), and the fraction of the
    filter's energy the rank-1 part holds. Full-field filters are their own temporal part."""
    h = f.shape[0]
    flat = f.reshape(h, -1).astype(np.float64)
    if flat.shape[1] == 1:
        return flat[:, 0], np.ones(f.shape[1:]), 1.0
    U, S, Vt = np.linalg.svd(flat, full_matrices=False)
    spatial, temporal = Vt[0], U[:, 0] * S[0]
    k = int(np.argmax(np.abs(spatial)))
    if spatial[k] < 0:
        spatial, temporal = -spatial, -temporal
    energy = float(S[0] ** 2 / max(float((S**2).sum()), 1e-30))
    return temporal, spatial.reshape(f.shape[1:]), energy


def filter_polarity(temporal: np.ndarray) -> str:
    """``ON`` when the largest-magnitude value of a temporal filter (centre positive) is positive, else ``OFF``."""
    if not np.any(temporal):
        return "none"
    return "ON" if temporal[int(np.argmax(np.abs(temporal)))] > 0 else "OFF"
