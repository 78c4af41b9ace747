"""Integrated gradients from a ganglion cell's output to the model's hidden channels.

Following Tanaka et al. (NeurIPS 2019): for the model output ``F`` of one cell in one bin, the
stimulus window ``x`` moves on the straight path ``x(alpha) = x' + alpha (x - x')`` from the
baseline ``x'`` (the mean stimulus: every frame at the training mean, 0 after z-scoring) to
``x``. The attribution of hidden unit ``j`` of layer ``l`` is

    A_j = integral_0^1 dF/da_j(x(alpha)) * da_j/dalpha dalpha

(the gradient times the unit's own change along the path: the "conductance" of Dhamdhere et al.
2019). Every path from the stimulus to the output passes through each hidden layer, so the
attributions of one layer are **complete**: they sum to ``F(x) - F(x')``. A channel's attribution
is the sum over its units (positions); per bin it is the channel's *contribution* to the response
at that time.

The integral is a trapezoid sum over ``steps`` points of the path. The first layer's input is
affine in the stimulus, so each point costs one pass through the cheap part of the network. The
number of steps doubles (per bin) until the attributions of both layers sum to ``F(x) - F(x')``
within ``tolerance`` (1 %) of ``max(|F(x) - F(x')|, floor)``, with ``floor`` 5 % of the largest
output change over the stimulus (a bin whose output barely moves is held to the same absolute
accuracy as the typical bin, not to 1 % of almost nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .circuit import Circuit

DEFAULT_TOLERANCE = 0.01
START_STEPS = 16
MAX_STEPS = 8192
FLOOR_FRACTION = 0.05


@dataclass
class Attribution:
    """Integrated gradients of one cell over every window of a stimulus.

    ``channels[l]``: ``(N, C_l)`` contribution of each channel of layer ``l`` per window (expected
    count per bin); ``units[l]``: ``(C_l, *P_l)`` summed absolute attribution per unit (where in
    the map a channel matters); ``output`` and ``baseline``: ``F(x)`` per window and ``F(x')``;
    ``error``: ``(N,)`` the larger of the two layers' completeness errors relative to
    ``max(|F(x) - F(x')|, floor)``; ``steps``: ``(N,)`` path steps used.
    """

    channels: dict[int, np.ndarray]
    units: dict[int, np.ndarray]
    output: np.ndarray
    baseline: float
    error: np.ndarray
    steps: np.ndarray
    tolerance: float

    @property
    def max_error(self) -> float:
        """The largest relative completeness error over the windows."""
        return float(np.max(self.error)) if self.error.size else 0.0

    def completeness(self, layer: int) -> np.ndarray:
        """``sum_c A_c - (F(x) - F(x'))`` per window for ``layer`` (absolute, count per bin)."""
        return self.channels[layer].sum(1) - (self.output - self.baseline)


def _ig_block(circuit: Circuit, u1: torch.Tensor, u1b: torch.Tensor, cell: int, steps: int, max_rows: int = 8192) -> tuple[torch.Tensor, ...]:
    """Trapezoid integrated gradients for a block of windows ``u1 (n, C1, *P1)``.

    Returns per-window channel attributions of layers 1 and 2 ``(n, C)``, per-unit absolute
    attributions summed over the block, and the outputs at alpha = 1 and alpha = 0.
    """
    n = int(u1.shape[0])
    alphas = torch.linspace(0.0, 1.0, steps + 1)
    d1 = u1 - u1b
    A = {1: torch.zeros(n, *u1.shape[1:]), 2: None}
    f_end = f_start = None
    prev: dict[int, Any] = {}
    per_step = max(1, max_rows // max(n, 1))
    for s0 in range(0, steps + 1, per_step):
        al = alphas[s0 : s0 + per_step]
        k = int(al.shape[0])
        pre = (u1b.unsqueeze(0) + al.view(k, 1, *([1] * (u1.ndim))) * d1.unsqueeze(0)).reshape(k * n, *u1.shape[1:])
        a1 = torch.relu(pre).requires_grad_(True)
        a2 = circuit.layer2(a1)
        f = circuit.output(a2)[:, cell]
        g1, g2 = torch.autograd.grad(f.sum(), [a1, a2])
        a1, a2, g1, g2, f = (t.detach().reshape(k, n, *t.shape[1:]) for t in (a1, a2, g1, g2, f))
        if A[2] is None:
            A[2] = torch.zeros(n, *a2.shape[2:])
        for j in range(k):
            step = s0 + j
            cur = {1: (a1[j], g1[j]), 2: (a2[j], g2[j])}
            if step == 0:
                f_start = f[j]
            if step == steps:
                f_end = f[j]
            if prev:
                for layer in (1, 2):
                    a_prev, g_prev = prev[layer]
                    a_cur, g_cur = cur[layer]
                    A[layer] += 0.5 * (g_prev + g_cur) * (a_cur - a_prev)
            prev = cur
    ch = {layer: A[layer].flatten(2).sum(2) for layer in (1, 2)}  # type: ignore[union-attr]
    units = {layer: A[layer].abs().sum(0) for layer in (1, 2)}  # type: ignore[union-attr]
    return ch[1], ch[2], units[1], units[2], f_end, f_start  # type: ignore[return-value]


def integrated_gradients(circuit: Circuit, z: np.ndarray, cell: int, tolerance: float = DEFAULT_TOLERANCE, start_steps: int = START_STEPS,
                         max_steps: int = MAX_STEPS, block: int = 256) -> Attribution:
    """Integrated gradients of output ``cell`` (index) to every channel of both hidden layers,
    for every window of the z-scored movie ``z`` ``(T, ...)`` (see module docstring).

    Raises :class:`ModelError` when ``max_steps`` do not reach ``tolerance`` (never expected for a
    ReLU network; it would mean a numerical fault in the model).
    """
    if not 0 <= cell < circuit.model.n_cells:
        raise ModelError(f"cell index {cell} is out of range for a model of {circuit.model.n_cells} cells")
    u1 = circuit.pre1(z)
    u1b = circuit.baseline_pre1()[0]
    N = int(u1.shape[0])
    with torch.no_grad():
        fb = float(circuit.forward_from_pre1(u1b.unsqueeze(0))[0, cell])
        f_all = torch.cat([circuit.forward_from_pre1(u1[s : s + 1024])[:, cell] for s in range(0, N, 1024)]).numpy().astype(np.float64)
    delta = f_all - fb
    floor = FLOOR_FRACTION * float(np.max(np.abs(delta))) if N else 0.0
    scale = np.maximum(np.abs(delta), max(floor, 1e-12))
    C1, C2 = circuit.channels
    ch1, ch2 = np.zeros((N, C1)), np.zeros((N, C2))
    units: dict[int, Any] = {1: None, 2: None}
    steps = np.zeros(N, dtype=np.int64)
    error = np.full(N, np.inf)
    todo = np.arange(N)
    m = int(start_steps)
    while todo.size:
        if m > max_steps:
            worst = int(todo[np.argmax(error[todo])])
            raise ModelError(f"integrated gradients did not reach {tolerance:.0%} completeness in {max_steps} steps "
                             f"(bin {worst + circuit.history}: error {error[worst]:.2%})", None, "the model may be numerically broken; refit it")
        for s in range(0, todo.size, block):
            idx = todo[s : s + block]
            with torch.enable_grad():
                a1c, a2c, un1, un2, fe, _ = _ig_block(circuit, u1[idx], u1b, cell, m)
            ch1[idx], ch2[idx] = a1c.numpy(), a2c.numpy()
            e1 = np.abs(ch1[idx].sum(1) - delta[idx]) / scale[idx]
            e2 = np.abs(ch2[idx].sum(1) - delta[idx]) / scale[idx]
            error[idx] = np.maximum(e1, e2)
            steps[idx] = m
            for layer, un in ((1, un1), (2, un2)):
                units[layer] = un.numpy() if units[layer] is None else units[layer] + un.numpy()
        todo = todo[error[todo] > tolerance]
        m *= 2
    return Attribution(channels={1: ch1, 2: ch2}, units={1: units[1], 2: units[2]}, output=f_all, baseline=fb, error=error, steps=steps,
                       tolerance=float(tolerance))
