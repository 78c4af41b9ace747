"""The temporal CNN: the McIntosh et al. (2016) architecture for full-field stimuli.

A full-field stimulus has one value per frame, so the reference network's spatial kernels are
1x1 and its first layer reduces to one dense map of the whole history. This network keeps the
structure of the reference (two convolutions, ReLU, dense readout, softplus) but convolves over
TIME: ``conv1d(1 -> channels[0], k1)`` -> ReLU -> ``conv1d(channels[0] -> channels[1], k2)`` ->
ReLU -> dense over the remaining time positions to one unit per cell -> softplus.

The kernel lengths are set in seconds (:data:`KERNEL_SECONDS`) and converted to frames at the
recording's frame rate, so the network sees the same time scales at 30 Hz and at 100 Hz; both
are shrunk to fit the history. The number of channels grows with the number of cells
(:func:`temporal_channels`): the hidden layers are shared by every cell, and 8 channels cannot
hold the temporal filters of 200 cells. The choice is written into the run (``geometry_note``).

Alignment as everywhere (:mod:`retinakit.alignment`): a window of ``history`` frames, oldest
first, predicts the bin after its newest frame.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ModelError

# First- and second-layer kernel lengths in seconds (15 and 11 frames at 30 Hz, as in a
# temporal network that fits full-field salamander data well).
KERNEL_SECONDS = (0.5, 0.37)


def temporal_kernels(history: int, frame_rate: float, seconds: tuple[float, float] = KERNEL_SECONDS) -> tuple[int, int]:
    """Kernel lengths in frames for ``seconds`` at ``frame_rate``, shrunk so that both fit in
    ``history`` frames with at least a quarter of the history left for the dense readout."""
    k1 = max(1, int(round(seconds[0] * frame_rate)))
    k2 = max(1, int(round(seconds[1] * frame_rate)))
    budget = max(2, history - max(1, history // 4) + 2)  # k1 + k2 <= budget leaves >= history/4 positions
    if k1 + k2 > budget:
        scale = budget / (k1 + k2)
        k1 = max(1, int(math.floor(k1 * scale)))
        k2 = max(1, min(int(math.floor(k2 * scale)), budget - k1))
    return k1, k2


def temporal_channels(n_cells: int, base: tuple[int, int] = (8, 8)) -> tuple[int, int]:
    """Hidden channels for ``n_cells`` cells: ``base`` up to 16 cells, then growing with the
    square root of the population (``2 * sqrt(n)``, at most 64)."""
    extra = int(min(64, math.ceil(2 * math.sqrt(max(1, n_cells)))))
    return max(int(base[0]), extra), max(int(base[1]), extra)


class TemporalCNN(nn.Module):
    """Two temporal convolutions and a dense readout for full-field stimuli (see module docstring)."""

    def __init__(
        self,
        history: int,
        n_cells: int,
        channels: tuple[int, int] = (8, 8),
        kernels: tuple[int, int] = (15, 11),
        batchnorm: bool = True,
        noise_std: float = 0.05,
        geometry_note: str = "",
    ) -> None:
        super().__init__()
        k1, k2 = int(kernels[0]), int(kernels[1])
        if history < 1 or n_cells < 1 or min(channels) < 1 or min(k1, k2) < 1:
            raise ModelError(f"history, n_cells, channels and kernels must be >= 1, got {history}, {n_cells}, {channels}, {kernels}")
        positions = history - k1 - k2 + 2
        if positions < 1:
            raise ModelError(f"temporal kernels {k1} and {k2} frames do not fit a history of {history} frames", fix="use a longer --history")
        self.history, self.n_cells, self.frame_shape = int(history), int(n_cells), ()
        self.filters = (int(channels[0]), int(channels[1]))
        self.kernel_lengths = (k1, k2)
        self.positions = positions
        self.batchnorm, self.noise_std = bool(batchnorm), float(noise_std)
        self.input_hw = (1, 1)
        self.geometry_note = geometry_note or (f"full-field stimulus: temporal CNN, kernels {k1} and {k2} frames, "
                                               f"{self.filters[0]}+{self.filters[1]} channels")
        self.conv1 = nn.Conv1d(1, self.filters[0], k1)
        self.conv2 = nn.Conv1d(self.filters[0], self.filters[1], k2)
        self.dense = nn.Conv1d(self.filters[1], n_cells, positions)  # a dense layer over the window's positions
        self.bn1 = nn.BatchNorm1d(self.filters[0]) if batchnorm else nn.Identity()
        self.bn2 = nn.BatchNorm1d(self.filters[1]) if batchnorm else nn.Identity()
        self.bn_out = nn.BatchNorm1d(n_cells) if batchnorm else nn.Identity()

    @classmethod
    def for_recording(cls, history: int, n_cells: int, frame_rate: float, filters: tuple[int, int] = (8, 8), batchnorm: bool = True,
                      noise_std: float = 0.05) -> "TemporalCNN":
        """The network for a full-field recording: kernels from :data:`KERNEL_SECONDS` at
        ``frame_rate``, channels from :func:`temporal_channels` (at least ``filters``)."""
        k1, k2 = temporal_kernels(history, frame_rate)
        ch = temporal_channels(n_cells, filters)
        note = (f"full-field stimulus: temporal CNN (convolution over time), kernels {k1} and {k2} frames "
                f"({k1 / frame_rate * 1000:.0f} and {k2 / frame_rate * 1000:.0f} ms at {frame_rate:g} Hz), "
                f"{ch[0]}+{ch[1]} channels for {n_cells} cells")
        return cls(history, n_cells, ch, (k1, k2), batchnorm=batchnorm, noise_std=noise_std, geometry_note=note)

    # ------------------------------------------------------------------ interface
    def spec(self) -> dict[str, Any]:
        """Constructor arguments as JSON-able values (enough to rebuild the model)."""
        return {"family": "tcnn", "history": self.history, "frame_shape": [], "n_cells": self.n_cells,
                "filters": list(self.filters), "kernels": list(self.kernel_lengths), "batchnorm": self.batchnorm,
                "noise_std": self.noise_std, "geometry_note": self.geometry_note}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "TemporalCNN":
        """Rebuild from :meth:`spec`."""
        return cls(int(spec["history"]), int(spec["n_cells"]), tuple(spec["filters"]), tuple(spec["kernels"]),  # type: ignore[arg-type]
                   batchnorm=bool(spec["batchnorm"]), noise_std=float(spec["noise_std"]), geometry_note=str(spec.get("geometry_note", "")))

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise_std > 0:
            return x + self.noise_std * torch.randn_like(x)
        return x

    def _bn(self, bn: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return masked_batch_norm(bn, x, mask) if isinstance(bn, nn.BatchNorm1d) else bn(x)

    def _sequence(self, s: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, n_cells, T - history + 1)`` for frame sequences ``(B, T)``: one output per window.
        ``rows`` ``(B, T - history + 1)`` bool: batch-norm statistics use only these outputs and
        the hidden positions that feed them."""
        m2 = m1 = None
        if rows is not None:
            m2 = _dilate(rows, self.positions)
            m1 = _dilate(m2, self.kernel_lengths[1])
        a1 = torch.relu(self._noise(self._bn(self.bn1, self.conv1(s.unsqueeze(1)), m1)))
        a2 = torch.relu(self._noise(self._bn(self.bn2, self.conv2(a1), m2)))
        return nn.functional.softplus(self._bn(self.bn_out, self.dense(a2), rows))

    def first_layer_filters(self) -> torch.Tensor:
        """First-layer kernels as ``(channels, k1, 1, 1)`` (oldest frame first), for figures."""
        return self.conv1.weight.detach()[:, 0, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expected count per bin ``(B, n_cells)`` for windows ``(B, history, ...)`` of a full-field movie."""
        s = x.reshape(x.shape[0], self.history)
        return self._sequence(s)[:, :, 0]

    accepts_rows = True  # forward_chunks takes a row mask (output batch-norm statistics over real rows only)

    def forward_chunks(self, zc: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Contiguous stretches ``(K, L + history, ...)`` -> ``(K, L, n_cells)``; row ``l`` predicts the
        bin after frames ``l .. l + history - 1`` (the same function as :meth:`forward`).
        ``rows`` ``(K, L)`` bool: the rows that are fit (output batch-norm statistics over these)."""
        if zc.ndim < 2:
            raise ModelError(f"chunks must be (K, L + history[, 1, 1]), got shape {tuple(zc.shape)}")
        K, total = int(zc.shape[0]), int(zc.shape[1])
        L = total - self.history
        if L < 1:
            raise ModelError(f"chunks of {total} frames leave no prediction with history {self.history}", fix="pass chunks of L + history frames, L >= 1")
        if zc.numel() != K * total:
            raise ModelError(f"chunk frames are {tuple(zc.shape[2:])} but the temporal CNN takes full-field (1x1) frames")
        mask = None
        if rows is not None:
            mask = torch.cat([rows.to(zc.device, torch.bool), rows.new_zeros((K, 1), dtype=torch.bool).to(zc.device)], dim=1)
        out = self._sequence(zc.reshape(K, total), mask)  # (K, n, L + 1): the last window ends at the chunk's last frame
        return out[:, :, :L].transpose(1, 2)

    def weight_l2(self) -> torch.Tensor:
        """Sum of squared weights (conv and dense kernels, not biases or BN)."""
        return sum((p.pow(2).sum() for n, p in self.named_parameters() if n.endswith("weight") and not n.startswith("bn")), torch.zeros(()))


def _dilate(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of a layer's input ``(B, P + k - 1)`` that feed an output position in ``mask`` ``(B, P)``
    through a kernel of length ``k``."""
    f = nn.functional.pad(mask.to(torch.float32).unsqueeze(1), (k - 1, k - 1))
    return (nn.functional.conv1d(f, torch.ones(1, 1, k, device=mask.device)) > 0).squeeze(1)


def masked_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``bn`` on ``x`` ``(B, C, P)`` with training statistics over the positions where ``mask``
    ``(B, P)`` is True (running statistics updated the same way); plain ``bn`` otherwise."""
    if mask is None or not bn.training or not bool(mask.any()):
        return bn(x)
    sel = x.transpose(1, 2)[mask]  # (N, C)
    mean = sel.mean(dim=0)
    var = sel.var(dim=0, unbiased=False)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            m = bn.momentum if bn.momentum is not None else 0.1
            n = sel.shape[0]
            bn.running_mean.mul_(1 - m).add_(m * mean.detach())
            bn.running_var.mul_(1 - m).add_(m * var.detach() * (n / max(n - 1, 1)))
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
    y = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + bn.eps)
    if bn.affine:
        y = y * bn.weight[None, :, None] + bn.bias[None, :, None]
    return y
