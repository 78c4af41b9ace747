"""The three-layer CNN of McIntosh et al. (NIPS 2016), and its batch-norm variant.

Input: the last ``history`` frames (z-scored) as channels, ``(B, history, H, W)``, oldest first
(see :mod:`retinakit.alignment`). conv ``filters[0]``@``k1`` -> ReLU -> conv ``filters[1]``@``k2``
-> ReLU -> dense to one unit per cell -> softplus. Valid padding (50 -> 36 -> 26 for the
reference 15/11 kernels). Output: expected spike count per bin, ``(B, n_cells)``.

While training, Gaussian noise of s.d. ``noise_std`` is added to each hidden layer before the
ReLU. The batch-norm variant (Tanaka et al. 2019) adds BatchNorm after each convolution and on
the output before the softplus.

``readout="factorized"`` replaces the dense layer (``filters[1] * h2 * w2`` weights per cell) by a
spatial mask times a feature vector per cell (Klindt et al. 2017): ``drive_n = sum_{f,x,y}
mask_n[x, y] features_n[f] a2[f, x, y] + bias_n``, ``h2 * w2 + filters[1]`` weights per cell.

``first_layer="separable"`` makes each first-layer kernel a spatial filter times a temporal filter
(:class:`SeparableConv2d`, ``history + k1*k1`` weights per channel instead of ``history * k1*k1``),
the structure of a bipolar subunit (a centre-surround field times a biphasic kernel).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ModelError

REFERENCE_SIZE = 50
REFERENCE_KERNELS = (15, 11)


def adapt_kernels(frame_shape: tuple[int, ...], kernels: tuple[int, int] | None = None) -> tuple[tuple[tuple[int, int], tuple[int, int]], str]:
    """Kernel sizes for a frame geometry, and a sentence explaining the choice.

    Frames of at least 50 pixels per side keep the reference kernels (15, 11) unless ``kernels``
    is given. Smaller frames shrink both kernels in proportion to the side (at least 1), so the
    second layer still has an output map; a full-field stimulus (``()``, treated as 1x1) gives
    1x1 kernels, i.e. a temporal-only network.
    """
    if len(frame_shape) == 0:
        return ((1, 1), (1, 1)), "full-field stimulus: 1x1 kernels, a temporal-only network"
    if len(frame_shape) != 2:
        raise ModelError(f"frames must be 2-D (H, W) or full-field, got shape {frame_shape}")
    H, W = (int(s) for s in frame_shape)
    if kernels is not None:
        k1, k2 = (int(k) for k in kernels)
        ks = ((min(k1, H), min(k1, W)), (min(k2, H - min(k1, H) + 1), min(k2, W - min(k1, W) + 1)))
        if ks != ((k1, k1), (k2, k2)):
            return ks, f"kernels {k1}/{k2} requested, clipped to {ks[0]}/{ks[1]} to fit {H}x{W} frames"
        return ks, f"kernels {k1}/{k2} as requested on {H}x{W} frames"

    def side(s: int) -> tuple[int, int]:
        if s >= REFERENCE_SIZE:
            return REFERENCE_KERNELS
        a = max(1, min(s, round(REFERENCE_KERNELS[0] * s / REFERENCE_SIZE)))
        b = max(1, min(s - a + 1, round(REFERENCE_KERNELS[1] * s / REFERENCE_SIZE)))
        return a, b

    (a1, b1), (a2, b2) = side(H), side(W)
    ks = ((a1, a2), (b1, b2))
    if H >= REFERENCE_SIZE and W >= REFERENCE_SIZE:
        why = f"{H}x{W} frames: reference kernels 15x15 and 11x11"
    else:
        why = f"{H}x{W} frames are smaller than the reference 50x50: kernels scaled to {a1}x{a2} and {b1}x{b2}"
    return ks, why


def conv_geometry(frame_shape: tuple[int, ...], kernels: Any = None) -> tuple[tuple[tuple[int, int], tuple[int, int]], str, tuple[int, int], tuple[int, int]]:
    """Kernel sizes (explicit pairs, or :func:`adapt_kernels`), the sentence explaining them, the
    input size ``(H, W)`` and the second layer's map size ``(h2, w2)`` (valid padding)."""
    if kernels is not None and all(isinstance(k, (tuple, list)) for k in kernels):
        k1, k2 = (int(kernels[0][0]), int(kernels[0][1])), (int(kernels[1][0]), int(kernels[1][1]))
        note = f"kernels {k1} and {k2} given explicitly"
    else:
        (k1, k2), note = adapt_kernels(tuple(frame_shape), kernels)
    H, W = (1, 1) if len(frame_shape) == 0 else (int(frame_shape[0]), int(frame_shape[1]))
    h1, w1 = H - k1[0] + 1, W - k1[1] + 1
    h2, w2 = h1 - k2[0] + 1, w1 - k2[1] + 1
    if min(h1, w1, h2, w2) < 1:
        raise ModelError(f"kernels {k1} and {k2} do not fit {H}x{W} frames", fix="use smaller --kernels")
    return (k1, k2), note, (H, W), (h2, w2)


def check_chunks(zc: torch.Tensor, history: int, input_hw: tuple[int, int]) -> tuple[int, int, int]:
    """Check movie chunks ``(K, L + history, H, W)`` for a model; returns ``(K, L + history, L)``."""
    if zc.ndim < 2:
        raise ModelError(f"chunks must be (K, L + history, H, W), got shape {tuple(zc.shape)}")
    K, total = int(zc.shape[0]), int(zc.shape[1])
    L = total - history
    if L < 1:
        raise ModelError(f"chunks of {total} frames leave no prediction with history {history}", fix="pass chunks of L + history frames, L >= 1")
    H, W = input_hw
    if zc.numel() != K * total * H * W:
        raise ModelError(f"chunk frames are {tuple(zc.shape[2:])} but the model takes {H}x{W} frames", fix="build the chunks in the model's geometry")
    return K, total, L


def init_readout(m: nn.Module, kind: str, n_cells: int, channels: int, h2: int, w2: int) -> None:
    """Give ``m`` its last layer: ``dense`` (``m.dense``) or ``factorized`` (``m.mask_weight``,
    ``m.feature_weight``, ``m.readout_bias``; Klindt et al. 2017); sets ``m.readout_kind``."""
    if kind not in ("dense", "factorized"):
        raise ModelError(f"readout must be 'dense' or 'factorized', got {kind!r}")
    m.readout_kind = kind
    if kind == "dense":
        m.dense = nn.Linear(channels * h2 * w2, n_cells)
    else:  # a spatial mask and a feature vector per cell
        m.mask_weight = nn.Parameter(torch.full((n_cells, h2, w2), 1.0 / (h2 * w2)) + 0.01 * torch.randn(n_cells, h2, w2) / (h2 * w2) ** 0.5)
        m.feature_weight = nn.Parameter(torch.randn(n_cells, channels) / channels**0.5)
        m.readout_bias = nn.Parameter(torch.zeros(n_cells))


def readout_drive(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """Each cell's drive ``(B, n_cells)`` (before BN and softplus) from the last maps ``a`` ``(B, C, h2, w2)``."""
    if m.readout_kind == "dense":
        return m.dense(a.flatten(1))
    pooled = torch.einsum("bfhw,nhw->bnf", a, m.mask_weight)
    return (pooled * m.feature_weight).sum(-1) + m.readout_bias


def make_first_layer(kind: str, history: int, channels: int, kernel: tuple[int, int]) -> nn.Module:
    """The first convolution: ``full`` (``nn.Conv2d``, as published) or ``separable`` (:class:`SeparableConv2d`)."""
    if kind not in ("full", "separable"):
        raise ModelError(f"first_layer must be 'full' or 'separable', got {kind!r}")
    return nn.Conv2d(history, channels, kernel) if kind == "full" else SeparableConv2d(history, channels, kernel)


def conv_maps(conv: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """``conv(a)`` for a batch of maps ``(N, C, h, w)``; on CPU in channels-last memory layout,
    whose backward pass is several times faster there (same values up to float rounding)."""
    if a.device.type == "cpu" and a.dim() == 4:
        a = a.contiguous(memory_format=torch.channels_last)
    return conv(a)


class SeparableConv2d(nn.Module):
    """A first layer whose kernels are space x time separable: ``w[f, t, y, x] = time_weight[f, t] * space_weight[f, y, x]``.

    Each channel is one spatial filter with one temporal filter (rank 1), the way a bipolar
    subunit is modelled (a centre-surround field times a biphasic kernel): ``history + k*k``
    weights per channel instead of ``history * k*k``, so far less to learn from minutes of white
    noise. ``weight`` is the full kernel, so code that reads ``conv1.weight`` works unchanged.
    """

    def __init__(self, history: int, channels: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        ref = nn.Conv2d(history, channels, kernel)  # a full layer of this shape: its bias initialisation (and the weight scale below, s.d. 1/sqrt(3 fan_in))
        self.time_weight = nn.Parameter(torch.randn(channels, history) / float(history) ** 0.5)
        self.space_weight = nn.Parameter(torch.randn(channels, *kernel) / float(3 * kernel[0] * kernel[1]) ** 0.5)
        self.bias = nn.Parameter(ref.bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        """The full kernel ``(channels, history, kh, kw)``."""
        return self.time_weight[:, :, None, None] * self.space_weight[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, self.bias)


class CNN(nn.Module):
    """McIntosh et al. 2016 CNN; ``batchnorm=True`` gives the BN variant. See module docstring."""

    def __init__(
        self,
        history: int,
        frame_shape: tuple[int, ...],
        n_cells: int,
        filters: tuple[int, int] = (8, 8),
        kernels: tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | None = None,
        batchnorm: bool = False,
        noise_std: float = 0.05,
        readout: str = "dense",
        first_layer: str = "full",
    ) -> None:
        super().__init__()
        if history < 1 or n_cells < 1 or min(filters) < 1:
            raise ModelError(f"history, n_cells and filters must be >= 1, got {history}, {n_cells}, {filters}")
        (k1, k2), self.geometry_note, (H, W), (h2, w2) = conv_geometry(frame_shape, kernels)
        self.history, self.frame_shape, self.n_cells = int(history), tuple(int(s) for s in frame_shape), int(n_cells)
        self.filters, self.kernel_sizes = (int(filters[0]), int(filters[1])), (k1, k2)
        self.batchnorm, self.noise_std = bool(batchnorm), float(noise_std)
        self.input_hw = (H, W)
        self.conv1 = make_first_layer(first_layer, history, self.filters[0], k1)
        self.first_layer = first_layer
        self.conv2 = nn.Conv2d(self.filters[0], self.filters[1], k2)
        init_readout(self, readout, n_cells, self.filters[1], h2, w2)
        self.bn1 = nn.BatchNorm2d(self.filters[0]) if batchnorm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(self.filters[1]) if batchnorm else nn.Identity()
        self.bn_out = nn.BatchNorm1d(n_cells) if batchnorm else nn.Identity()

    def spec(self) -> dict[str, Any]:
        """Constructor arguments as JSON-able values (enough to rebuild the model)."""
        return {
            "family": "cnn",
            "history": self.history,
            "frame_shape": list(self.frame_shape),
            "n_cells": self.n_cells,
            "filters": list(self.filters),
            "kernels": [list(self.kernel_sizes[0]), list(self.kernel_sizes[1])],
            "batchnorm": self.batchnorm,
            "noise_std": self.noise_std,
            "readout": self.readout_kind,
            "first_layer": self.first_layer,
            "geometry_note": self.geometry_note,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "CNN":
        """Rebuild from :meth:`spec` (the recorded kernel sizes are used verbatim)."""
        m = cls(
            history=int(spec["history"]),
            frame_shape=tuple(spec["frame_shape"]),
            n_cells=int(spec["n_cells"]),
            filters=tuple(spec["filters"]),
            kernels=(tuple(spec["kernels"][0]), tuple(spec["kernels"][1])),
            batchnorm=bool(spec["batchnorm"]),
            noise_std=float(spec["noise_std"]),
            readout=str(spec.get("readout", "dense")),
            first_layer=str(spec.get("first_layer", "full")),
        )
        m.geometry_note = str(spec.get("geometry_note", m.geometry_note))
        return m

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise_std > 0:
            return x + self.noise_std * torch.randn_like(x)
        return x

    def hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations of both hidden layers (after ReLU) for windows ``x`` ``(B, history, H, W)``."""
        x = x.reshape(x.shape[0], self.history, *self.input_hw)
        a1 = torch.relu(self._noise(self.bn1(self.conv1(x))))
        a2 = torch.relu(self._noise(self.bn2(conv_maps(self.conv2, a1))))
        return a1, a2

    def readout(self, a2: torch.Tensor) -> torch.Tensor:
        """Dense (or factorised) layer + (BN) + softplus on the second hidden layer."""
        return nn.functional.softplus(self.bn_out(readout_drive(self, a2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expected spike count per bin, ``(B, n_cells)``, for stimulus windows ``(B, history, H, W)``."""
        return self.readout(self.hidden(x)[1])

    accepts_rows = True  # forward_chunks takes a row mask (batch-norm statistics over real rows only)

    def forward_chunks(self, zc: torch.Tensor, method: str = "auto", rows: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions for contiguous stretches of movie: ``(K, L + history, H, W)`` -> ``(K, L, n_cells)``.

        Row ``l`` of chunk ``k`` predicts the bin right after frames ``l .. l + history - 1`` of
        that chunk (see :mod:`retinakit.alignment`). Same function as :meth:`forward` on every
        window (the same hidden noise too, given the same random state), but the first layer is
        computed once over each chunk (:mod:`retinakit.models.fastconv`; ``method`` ``"auto"``,
        ``"fft"`` or ``"direct"``) instead of once per window, and no window is ever copied.

        ``rows`` ``(K, L)`` bool: only these rows are computed past the first layer (the others
        come back as 0), so batch-norm statistics are taken over the rows that are fit.
        """
        from .fastconv import chunk_conv

        K, total, L = check_chunks(zc, self.history, self.input_hw)
        H, W = self.input_hw
        if K == 0:
            return zc.new_zeros((0, L, self.n_cells))
        zc = zc.reshape(K, total, H, W)
        c1 = chunk_conv(zc, self.conv1.weight, self.conv1.bias, L, method)  # (K, L, F, h1, w1); a separable layer's full kernel
        c1 = c1.reshape(K * L, *c1.shape[2:]).contiguous()  # contiguous: the noise is drawn in the same order as forward's
        sel = None
        if rows is not None:
            sel = torch.nonzero(rows.reshape(-1).to(c1.device)).squeeze(1)
            c1 = c1.index_select(0, sel)
        a1 = torch.relu(self._noise(self.bn1(c1)))
        a2 = torch.relu(self._noise(self.bn2(conv_maps(self.conv2, a1))))
        out = self.readout(a2)
        if sel is not None:
            out = out.new_zeros((K * L, self.n_cells)).index_copy(0, sel, out)
        return out.reshape(K, L, self.n_cells)

    def weight_l2(self) -> torch.Tensor:
        """Sum of squared weights (conv and dense kernels, not biases or BN)."""
        return sum((p.pow(2).sum() for n, p in self.named_parameters() if n.endswith("weight") and not n.startswith("bn")), torch.zeros(()))
