"""The recurrent CNN (``--model rcnn``): the McIntosh front end and a gated, bypassing recurrent layer.

Task-driven convolutional recurrent networks (Nayebi, Bear, Kubilius et al., NeurIPS 2018) work
when the local recurrent cell has both **gating** (multiplication by an input-dependent tensor
with values in [0, 1]) and **bypassing** (with a zero state the input passes unchanged). The
retina adapts over seconds, longer than the 400 ms window of the feed-forward CNN; this model
keeps the CNN's front end and replaces its second layer by such a cell.

Architecture, per time bin ``t`` (window ``x_t``: the ``history`` frames before bin ``t``,
oldest first, as everywhere in retinakit, see :mod:`retinakit.alignment`):

* front end (the batch-norm CNN's first layer): ``a1_t = ReLU(BN1(conv1(x_t)))``;
* feed-forward drive of the recurrent layer: ``u_t = BN2(conv2(a1_t))`` (``C = filters[1]`` maps);
* the **gated bypass cell** (state ``s``, ``C`` maps of the same size; a block starts from the resting state, zero in a new model; ``*``: a
  ``k x k`` convolution with ``same`` padding, ``k`` = :data:`RECURRENT_KERNEL` (1 by default:
  the channels are mixed at each position, the spatial pooling is the front end's), ``o``: the
  elementwise product, ``e_t = [u_t, |u_t|]``)::

      z_t = sigmoid(W_z * e_t + U_z * s_{t-1} + b_z)      update gate, in (0, 1)
      c_t = softplus(W_c * e_t + b_c)                     what the state tracks (>= 0: signal level and energy)
      g_t = 1 / (1 + softplus(Omega) * s_{t-1})           gain gate, in (0, 1]: divisive, 1 when s_{t-1} = 0
      y_t = g_t o u_t + V * s_{t-1}                       bypass: s_{t-1} = 0  =>  y_t = u_t exactly
      s_t = (1 - z_t) o s_{t-1} + z_t o c_t               gated leaky integration (s stays >= 0)

  ``U_z * s``, ``softplus(Omega) * s`` and ``V * s`` have no bias, so a zero state leaves the
  input untouched (the network is then exactly the batch-norm CNN); ``z_t`` sets how fast the
  state follows its input (its bias is initialised to time constants spread log-uniformly from
  :data:`TAU_RANGE_S`), ``g_t`` is a contrast-gain-control gate fed by that slow state;
* readout as in the CNN: ``a2_t = ReLU(y_t)``, dense (or factorised: a spatial mask times a
  feature vector per cell) to one unit per cell, BN, softplus. The first layer can be space x
  time separable as the CNN's (``first_layer``).

Time order and state. :meth:`RCNN.forward_chunks` runs the cell over the ``L`` rows of each
contiguous chunk in time order, from the resting state (or from ``state``), and can return the
final state, so a long movie can be run in consecutive pieces with the same result as one long
pass. Rows not in ``rows`` (padding, or windows that cross a gap between recorded blocks) reset
the state: every recorded block starts from the **resting state** :attr:`RCNN.rest`, the mean
state over the training movie (a buffer, zero in a new model, set after every epoch by
:mod:`retinakit.fitting.train` from its pass over the training movie, like batch norm's running
statistics). A recording's blocks start after a lead-in the model never sees; the resting state
stands for the retina adapted to the stimulus ensemble, where a zero state would be a retina
that had seen nothing for a long time, and the first seconds of every block would be a
transient the recording does not have.

Training (:mod:`retinakit.fitting.train`) uses chunks of ``burn_in + chunk_len`` contiguous bins,
each started from the state the model had at that point of the movie in the last pass over it;
the first ``burn_in`` bins (default :data:`BURN_IN_S`) bring that state up to date with the
current weights, the loss is taken on the last ``chunk_len``; gradients flow through the whole
chunk (truncated backpropagation through time). The cell's own parameters (its gates' input
weights and biases, ``U_z``, ``V``, ``Omega``) learn at :data:`CELL_LR_SCALE` times the base
learning rate (:meth:`RCNN.lr_scales`), reached by a linear ramp over the first
:data:`CELL_LR_WARMUP_STEPS` optimiser steps: at the base rate seven of its eight time constants
stayed within 16 % of their initial values on the validation suite's natural scenes; at the
faster rate from the first step, fits of short recordings often collapsed to a constant
prediction within a few epochs. Predictions on a test segment are one long pass per block.

:meth:`RCNN.forward` on independent windows is the response from the resting state (one step
of the cell; with a zero state, as in a new model, the bypass network, i.e. the batch-norm
CNN); :meth:`RCNN.step` is one step from a given state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .cnn import check_chunks, conv_geometry, conv_maps, init_readout, make_first_layer, readout_drive

#: range of the initial time constants of the update gate (seconds), log-uniform over channels
TAU_RANGE_S = (0.05, 4.0)
#: bins before the loss starts in each training chunk (seconds): they bring the state carried from the last pass over the movie up to date
BURN_IN_S = 0.5
#: initial divisive weight of each channel's own state (the diagonal of ``softplus(Omega)``)
INIT_GAIN = 0.3
#: recurrent kernel side (1: the state at each position is mixed across channels; the spatial pooling comes from the front end)
RECURRENT_KERNEL = 1
#: learning rate of the recurrent cell's own parameters (gates, state weights) relative to the rest (at the base
#: rate its time constants hardly moved from their initial values)
CELL_LR_SCALE = 10.0
#: optimiser steps over which the cell's rate rises linearly from the base rate to CELL_LR_SCALE times it (without
#: the ramp, fits of short recordings often collapsed to a constant prediction within their first epochs)
CELL_LR_WARMUP_STEPS = 100
#: frame rate assumed when none is given (Hz), for the time constants and the burn-in only
DEFAULT_FRAME_RATE = 100.0


class RCNN(nn.Module):
    """McIntosh front end, a gated bypass recurrent layer, a readout (see module docstring)."""

    recurrent = True  # forward_chunks runs in time order and carries a state
    lr_warmup_steps = CELL_LR_WARMUP_STEPS  # the cell's faster learning rate is reached over these many steps
    accepts_rows = True  # forward_chunks takes a mask of real rows (batch norm over them; the state resets at the others)

    def __init__(
        self,
        history: int,
        frame_shape: tuple[int, ...],
        n_cells: int,
        filters: tuple[int, int] = (8, 8),
        kernels: tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | None = None,
        noise_std: float = 0.05,
        frame_rate: float = DEFAULT_FRAME_RATE,
        recurrent_kernel: int = RECURRENT_KERNEL,
        burn_in: int | None = None,
        geometry_note: str = "",
        readout: str = "dense",
        first_layer: str = "full",
    ) -> None:
        super().__init__()
        if history < 1 or n_cells < 1 or min(filters) < 1:
            raise ModelError(f"history, n_cells and filters must be >= 1, got {history}, {n_cells}, {filters}")
        if not (frame_rate > 0 and math.isfinite(frame_rate)):
            raise ModelError(f"frame rate must be positive, got {frame_rate}")
        (k1, k2), note, (H, W), (h2, w2) = conv_geometry(frame_shape, kernels)
        self.history, self.frame_shape, self.n_cells = int(history), tuple(int(s) for s in frame_shape), int(n_cells)
        self.filters, self.kernel_sizes = (int(filters[0]), int(filters[1])), (k1, k2)
        self.noise_std, self.frame_rate = float(noise_std), float(frame_rate)
        self.input_hw, self.map_hw = (H, W), (h2, w2)
        kr = max(1, int(recurrent_kernel))
        self.recurrent_kernel = (_odd_at_most(kr, h2), _odd_at_most(kr, w2))
        self.burn_in = int(round(BURN_IN_S * self.frame_rate)) if burn_in is None else int(burn_in)
        if self.burn_in < 0:
            raise ModelError(f"burn-in must be >= 0 bins, got {self.burn_in}")
        self.batchnorm = True
        C = self.filters[1]
        self.geometry_note = geometry_note or (f"{note}; recurrent layer: gated bypass cell, {C} maps of {h2}x{w2}, "
                                               f"{self.recurrent_kernel[0]}x{self.recurrent_kernel[1]} recurrent kernels, "
                                               f"burn-in {self.burn_in} bins")
        self.conv1 = make_first_layer(first_layer, self.history, self.filters[0], k1)
        self.first_layer = first_layer
        self.conv2 = nn.Conv2d(self.filters[0], C, k2)
        self.bn1 = nn.BatchNorm2d(self.filters[0])
        self.bn2 = nn.BatchNorm2d(C)
        pad = (self.recurrent_kernel[0] // 2, self.recurrent_kernel[1] // 2)
        self._pad = pad
        # input-driven parts of the gates: [u, |u|] -> [update-gate input, candidate input]
        self.gate_in = nn.Conv2d(2 * C, 2 * C, self.recurrent_kernel, padding=pad)
        # state-driven parts, all without bias (bypass): U_z, V (free sign) and Omega (>= 0 through softplus)
        self.state_zv = nn.Parameter(torch.zeros(2 * C, C, *self.recurrent_kernel))
        self.state_omega = nn.Parameter(torch.zeros(C, C, *self.recurrent_kernel))
        init_readout(self, readout, n_cells, C, h2, w2)
        self.bn_out = nn.BatchNorm1d(n_cells)
        self.register_buffer("rest", torch.zeros(C, h2, w2))  # the resting state (zero until set from the training movie)
        self._init_cell()

    def _init_cell(self) -> None:
        """Start as a bank of contrast estimators: channel ``k``'s candidate tracks ``|u_k|``
        (``c = softplus(|u_k| - 1)``), its update gate has a time constant spread log-uniformly
        over :data:`TAU_RANGE_S` (one per channel), and its own state divides its drive (diagonal
        ``softplus(Omega)`` = :data:`INIT_GAIN`); every other state weight starts near zero."""
        C = self.filters[1]
        with torch.no_grad():
            nn.init.normal_(self.state_zv, std=0.01)
            eye = torch.eye(C).reshape(C, C, 1, 1)
            centre = (slice(None), slice(None), self.recurrent_kernel[0] // 2, self.recurrent_kernel[1] // 2)
            self.state_omega.fill_(-6.0)  # softplus(-6) = 0.0025
            self.state_omega[centre] += eye[:, :, 0, 0] * (math.log(math.expm1(INIT_GAIN)) + 6.0)
            self.gate_in.weight.mul_(0.1)
            self.gate_in.weight[C:, C:][centre] += eye[:, :, 0, 0]
            lo, hi = (math.log(t * self.frame_rate) for t in TAU_RANGE_S)
            taus = torch.exp(torch.linspace(lo, hi, C)) if C > 1 else torch.tensor([math.exp(0.5 * (lo + hi))])
            rate = (1.0 / taus.clamp_min(1.0)).clamp(1e-4, 0.999)
            self.gate_in.bias[:C] = torch.log(rate / (1 - rate))
            self.gate_in.bias[C:] = -1.0

    # ------------------------------------------------------------------ spec
    def spec(self) -> dict[str, Any]:
        """Constructor arguments as JSON-able values (enough to rebuild the model)."""
        return {
            "family": "rcnn", "history": self.history, "frame_shape": list(self.frame_shape), "n_cells": self.n_cells,
            "filters": list(self.filters), "kernels": [list(self.kernel_sizes[0]), list(self.kernel_sizes[1])],
            "noise_std": self.noise_std, "frame_rate": self.frame_rate, "recurrent_kernel": list(self.recurrent_kernel),
            "burn_in": self.burn_in, "batchnorm": True, "cell": "gated bypass cell", "geometry_note": self.geometry_note,
            "readout": self.readout_kind, "first_layer": self.first_layer,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "RCNN":
        """Rebuild from :meth:`spec` (recorded kernel sizes used verbatim)."""
        rk = spec.get("recurrent_kernel", [RECURRENT_KERNEL, RECURRENT_KERNEL])
        m = cls(int(spec["history"]), tuple(spec["frame_shape"]), int(spec["n_cells"]), filters=tuple(spec["filters"]),  # type: ignore[arg-type]
                kernels=(tuple(spec["kernels"][0]), tuple(spec["kernels"][1])), noise_std=float(spec["noise_std"]),
                frame_rate=float(spec.get("frame_rate", DEFAULT_FRAME_RATE)), recurrent_kernel=int(max(rk)),
                burn_in=int(spec["burn_in"]), geometry_note=str(spec.get("geometry_note", "")),
                readout=str(spec.get("readout", "dense")), first_layer=str(spec.get("first_layer", "full")))
        if tuple(m.recurrent_kernel) != tuple(int(k) for k in rk):
            raise ModelError(f"recurrent kernel {rk} in the checkpoint does not fit {m.map_hw[0]}x{m.map_hw[1]} maps")
        return m

    # ------------------------------------------------------------------ pieces
    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise_std > 0:
            return x + self.noise_std * torch.randn_like(x)
        return x

    def initial_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """The resting state ``(batch, C, h2, w2)`` a recorded block starts from (:attr:`rest`)."""
        return self.rest.to(device if device is not None else self.rest.device).unsqueeze(0).expand(batch, -1, -1, -1).clone()

    def set_rest(self, states: torch.Tensor) -> None:
        """Set the resting state to the mean of ``states`` ``(N, C, h2, w2)`` (states met over the training movie)."""
        if states.numel():
            with torch.no_grad():
                self.rest.copy_(states.float().mean(dim=0).to(self.rest.device))

    def _drive(self, c1: torch.Tensor) -> torch.Tensor:
        """Feed-forward drive ``u`` from first-layer pre-BN maps ``(N, F1, h1, w1)``."""
        a1 = torch.relu(self._noise(self.bn1(c1)))
        return self.bn2(conv_maps(self.conv2, a1))

    def _gate_inputs(self, u: torch.Tensor) -> torch.Tensor:
        """Input-driven parts of the update gate and the candidate, ``(N, 2C, h2, w2)``."""
        return self.gate_in(torch.cat([u, u.abs()], dim=1))

    def _state_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The state convolutions' weights: ``U_z`` ``(C, C, kh, kw)`` (update gate) and
        ``[V, softplus(Omega)]`` ``(2C, C, kh, kw)`` (additive term and divisive gain)."""
        C = self.filters[1]
        return self.state_zv[:C], torch.cat([self.state_zv[C:], nn.functional.softplus(self.state_omega)], dim=0)

    def _update(self, gz: torch.Tensor, c: torch.Tensor, s: torch.Tensor, w_z: torch.Tensor) -> torch.Tensor:
        """``s_t`` from the update gate's input part ``gz``, the candidate ``c`` and ``s_{t-1}``."""
        z = torch.sigmoid(gz + nn.functional.conv2d(s, w_z, padding=self._pad))
        return s + z * (c - s)

    def _output(self, u: torch.Tensor, s_prev: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
        """``y_t = g_t o u_t + V * s_{t-1}`` with the gain gate ``g_t = 1 / (1 + softplus(Omega) * s_{t-1})``."""
        C = self.filters[1]
        r = nn.functional.conv2d(s_prev, w_out, padding=self._pad)
        return u / (1.0 + r[:, C:]) + r[:, :C]

    def readout(self, a2: torch.Tensor) -> torch.Tensor:
        """Readout (dense or factorised, as the CNN's) + BN + softplus on the recurrent layer's activations ``(N, C, h2, w2)``."""
        return nn.functional.softplus(self.bn_out(readout_drive(self, a2)))

    # ------------------------------------------------------------------ forward
    def step(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One bin for stimulus windows ``x`` ``(B, history, H, W)`` from ``state`` (the resting
        state when None): ``(expected count (B, n_cells), new state)``. Computes the first layer directly on
        the window (no chunked convolution), so it is an independent check of :meth:`forward_chunks`."""
        x = x.reshape(x.shape[0], self.history, *self.input_hw)
        s = self.initial_state(x.shape[0], x.device) if state is None else state
        C = self.filters[1]
        u = self._drive(self.conv1(x))
        gi = self._gate_inputs(u)
        w_z, w_out = self._state_weights()
        y = self._output(u, s, w_out)
        s_new = self._update(gi[:, :C], nn.functional.softplus(gi[:, C:]), s, w_z)
        return self.readout(torch.relu(self._noise(y))), s_new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expected count per bin ``(B, n_cells)`` for independent windows ``(B, history, H, W)``,
        each from the resting state (one step of the cell). A movie's response,
        which depends on everything before, comes from :meth:`forward_chunks`."""
        return self.step(x)[0]

    def forward_chunks(self, zc: torch.Tensor, method: str = "auto", rows: torch.Tensor | None = None, state: torch.Tensor | None = None,
                       return_state: bool = False, states_at: torch.Tensor | None = None) -> Any:
        """Predictions for contiguous stretches of movie, ``(K, L + history, H, W)`` -> ``(K, L, n_cells)``.

        Row ``l`` of chunk ``k`` predicts the bin right after frames ``l .. l + history - 1`` and is
        computed after rows ``0 .. l - 1`` (time order), from ``state`` ``(K, C, h2, w2)`` (the resting
        state when None). ``rows`` ``(K, L)`` bool: the real rows; batch-norm statistics use only these,
        the others come back as 0 and reset the state to the resting state. ``return_state``: also return the
        state after the last row, to continue with the next stretch of the same movie.
        ``states_at`` (1-D row indices): also return the state just before each of these rows,
        ``(K, n, C, h2, w2)`` (with ``return_state``: ``(out, state, states)``).
        """
        from .fastconv import chunk_conv

        K, total, L = check_chunks(zc, self.history, self.input_hw)
        H, W = self.input_hw
        C, (h2, w2) = self.filters[1], self.map_hw
        if state is not None and tuple(state.shape) != (K, C, h2, w2):
            raise ModelError(f"state has shape {tuple(state.shape)}, expected {(K, C, h2, w2)}", fix="pass the state returned for the same chunks")
        if K == 0:
            out = zc.new_zeros((0, L, self.n_cells))
            return (out, zc.new_zeros((0, C, h2, w2))) if return_state else out
        zc = zc.reshape(K, total, H, W)
        c1 = chunk_conv(zc, self.conv1.weight, self.conv1.bias, L, method)  # (K, L, F1, h1, w1)
        c1 = c1.reshape(K * L, *c1.shape[2:]).contiguous()
        valid = None if rows is None else rows.reshape(K * L).to(c1.device, torch.bool)
        sel = None if valid is None or bool(valid.all()) else torch.nonzero(valid).squeeze(1)
        u = self._drive(c1 if sel is None else c1.index_select(0, sel))
        gi = self._gate_inputs(u)
        if sel is not None:
            u = u.new_zeros((K * L, C, h2, w2)).index_copy(0, sel, u)
            gi = gi.new_zeros((K * L, 2 * C, h2, w2)).index_copy(0, sel, gi)
        u, gi = u.float().reshape(K, L, C, h2, w2), gi.float().reshape(K, L, 2 * C, h2, w2)
        s = self.initial_state(K, c1.device) if state is None else state.float()
        keep = None if sel is None else valid.reshape(K, L, 1, 1, 1).float().unbind(1)  # type: ignore[union-attr]
        with torch.autocast(device_type=c1.device.type, enabled=False):  # the recurrence always in float32
            w_z, w_out = (w.float() for w in self._state_weights())
            cand = nn.functional.softplus(gi[:, :, C:])
            if self.recurrent_kernel == (1, 1):
                s_prev, s = self._run_pointwise(gi[:, :, :C], cand, s, w_z[:, :, 0, 0], keep)
            else:
                s_prev, s = self._run_conv(gi[:, :, :C], cand, s, w_z, keep)
            y = self._output(u.reshape(K * L, C, h2, w2), s_prev.reshape(K * L, C, h2, w2), w_out)
        if sel is not None:
            y = y.index_select(0, sel)
        out = self.readout(torch.relu(self._noise(y)))
        if sel is not None:
            out = out.new_zeros((K * L, self.n_cells)).index_copy(0, sel, out)
        out = out.reshape(K, L, self.n_cells)
        if states_at is not None:
            at = s_prev.index_select(1, states_at.to(s_prev.device, torch.long))
            return (out, s, at) if return_state else (out, at)
        return (out, s) if return_state else out

    def _run_conv(self, gz: torch.Tensor, cand: torch.Tensor, s: torch.Tensor, w_z: torch.Tensor,
                  keep: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The state update over ``L`` steps with a spatial recurrent kernel: ``(s_{t-1}`` for every
        step ``(K, L, C, h2, w2)``, the last state)."""
        prev = []
        rest = self.rest.float()
        gzs, cs = gz.unbind(1), cand.unbind(1)  # unbind, not indexing: its backward is one stack, not L full-size scatters
        for t in range(len(gzs)):
            prev.append(s)
            s = self._update(gzs[t], cs[t], s, w_z)
            if keep is not None:
                s = rest + keep[t] * (s - rest)  # a row that is not real resets the state
        return torch.stack(prev, dim=1), s

    def _run_pointwise(self, gz: torch.Tensor, cand: torch.Tensor, s: torch.Tensor, w_z: torch.Tensor,
                       keep: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_run_conv` for a 1x1 recurrent kernel, channels last: one small matrix product per
        step (much cheaper than a convolution and its backward on CPU). Same values."""
        gzs = gz.permute(0, 1, 3, 4, 2).unbind(1)  # (K, h2, w2, C) per step
        rest = self.rest.float().permute(1, 2, 0)
        cs = cand.permute(0, 1, 3, 4, 2).unbind(1)
        ks = None if keep is None else tuple(k.permute(0, 2, 3, 1) for k in keep)
        wt = w_z.t()
        sc = s.permute(0, 2, 3, 1)
        prev = []
        for t in range(len(gzs)):
            prev.append(sc)
            z = torch.sigmoid(gzs[t] + sc @ wt)
            sc = sc + z * (cs[t] - sc)
            if ks is not None:
                sc = rest + ks[t] * (sc - rest)
        return torch.stack(prev, dim=1).permute(0, 1, 4, 2, 3), sc.permute(0, 3, 1, 2).contiguous()

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate factors by parameter name (see :func:`retinakit.fitting.train.param_groups`): the cell's gates and state weights."""
        return {n: CELL_LR_SCALE for n, _ in self.named_parameters() if n.startswith(("gate_in.", "state_zv", "state_omega"))}

    def weight_l2(self) -> torch.Tensor:
        """Sum of squared weights (convolutions, recurrent kernels and dense; not biases or BN)."""
        total = torch.zeros(())
        for n, p in self.named_parameters():
            if (n.endswith("weight") and not n.startswith("bn")) or n in ("state_zv",):
                total = total + p.pow(2).sum()
        return total


def _odd_at_most(k: int, side: int) -> int:
    """The largest odd kernel side ``<= min(k, side)`` (at least 1), for ``same`` padding."""
    m = max(1, min(int(k), int(side)))
    return m if m % 2 == 1 else m - 1
