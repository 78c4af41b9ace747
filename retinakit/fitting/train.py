"""The training loop: Poisson loss, Adam, contiguous validation blocks, early stopping, checkpoints.

Data path: the training movie is z-scored ONCE into a single float32 tensor ``z`` ``(T, H, W)``
(1x1 frames for full-field). Batches are contiguous chunks ``z[s - history : s + L]`` of that
tensor, stacked to ``(K, L + history, H, W)`` and passed to ``model.forward_chunks``; no window
is ever materialised here. Row ``l`` of a chunk starting at target bin ``s`` predicts bin
``s + l`` (:mod:`retinakit.alignment`).

A recurrent model (``model.recurrent``, :mod:`retinakit.models.rcnn`) gets the same random
contiguous chunks, each extended ``model.burn_in`` bins into the past (:func:`gather_recurrent`).
The model runs over the whole chunk in time order, the loss is taken on the last ``L`` rows
only, and gradients flow through the whole chunk (truncated backpropagation through time).
The chunk starts from the state the model had at that point of the movie: after every epoch
one pass in time order over each recorded block of the training movie (:func:`recurrent_pass`,
no gradient, eval mode) gives the predictions the validation loss is computed on (one pass, as
on the test segment), the state at every chunk start, which the next epoch's chunks start from
(the first epoch starts them from the resting state), and the model's resting state (the mean of
those states, where every recorded block starts); the burn-in rows bring a chunk's state up to
date with the current weights. Rows whose window is not inside one recorded block (before the
recording, or across a gap) reset the state to the resting state. Predictions
(:func:`predict_z`) are one pass over the movie in time order from the resting state, the state
carried from one stretch to the next.

Validation: ``val_fraction`` of the predictable bins, as ``val_blocks`` contiguous blocks spread
evenly over the recording; training bins within ``history`` bins of a validation block are
dropped (their windows overlap the validation windows). Windows never cross a gap in the frame
times (a recording made of several blocks).

Weight averaging (``weight_ema`` > 0, :class:`WeightAverage`): after every optimiser step an
exponential moving average of the parameters and batch-norm statistics moves towards the
current ones; validation, the learning-rate schedule, early stopping and the kept weights all
use the average (swapped in for validation, swapped out to go on training).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..alignment import first_predicted_bin, mask_ranges  # noqa: F401  (mask_ranges: also imported from here)
from ..errors import DataError, ModelError
from ..recording import Recording
from .checkpoint import load_checkpoint, pack, save_checkpoint, unpack
from .config import FitConfig
from .device import autocast

EPS = 1e-8


# ----------------------------------------------------------------------------- data
@dataclass
class FitData:
    """The training part of a recording, ready for fitting.

    ``z``: ``(T, H, W)`` float32 z-scored movie (1x1 frames for full-field); ``y``: ``(T, n)``
    float32 counts; ``fit_mask`` / ``val_mask``: ``(T,)`` bool, the target bins used for
    training / validation; ``stats``: raw ``stim_mean``, ``stim_std``, ``stim_min``, ``stim_max``.
    """

    z: torch.Tensor
    y: torch.Tensor
    fit_mask: np.ndarray
    val_mask: np.ndarray
    history: int
    stats: dict[str, float]
    frame_shape: tuple[int, ...]
    segments: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_cells(self) -> int:
        """Number of modelled cells."""
        return int(self.y.shape[1])


def stimulus_stats(stimulus: np.ndarray, chunk: int = 4096) -> dict[str, float]:
    """Mean, s.d., min and max of a (compact) stimulus, computed in chunks without a float copy."""
    s = np.asarray(stimulus)
    T = s.shape[0]
    total, total_sq, n = 0.0, 0.0, 0
    lo, hi = math.inf, -math.inf
    for a in range(0, T, chunk):
        block = s[a : a + chunk].astype(np.float64)
        total += float(block.sum())
        total_sq += float((block * block).sum())
        n += block.size
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0)
    std = math.sqrt(var)
    return {"stim_mean": mean, "stim_std": std if std > 0 else 1.0, "stim_min": lo, "stim_max": hi}


def zscore_tensor(stimulus: np.ndarray, mean: float, std: float, chunk: int = 4096) -> torch.Tensor:
    """``(stimulus - mean) / std`` as ONE float32 tensor ``(T, H, W)`` (1x1 frames for full-field)."""
    s = np.asarray(stimulus)
    T = s.shape[0]
    shape = (T,) + (tuple(s.shape[1:]) if s.ndim == 3 else (1, 1))
    z = torch.empty(shape, dtype=torch.float32)
    zn = z.numpy()
    m, sd = np.float32(mean), np.float32(std)
    for a in range(0, T, chunk):
        block = s[a : a + chunk].astype(np.float32)
        zn[a : a + chunk] = ((block - m) / sd).reshape((-1,) + shape[1:])
    return z


def contiguous_segments(time: np.ndarray, frame_dt: float) -> list[tuple[int, int]]:
    """Frame ranges ``[a, b)`` without a gap (a step longer than 1.5 frames) in the frame times."""
    t = np.asarray(time, dtype=np.float64)
    breaks = np.flatnonzero(np.diff(t) > 1.5 * frame_dt) + 1
    edges = [0, *breaks.tolist(), t.size]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1) if edges[i + 1] > edges[i]]


def split_masks(segments: list[tuple[int, int]], T: int, history: int, val_fraction: float, val_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation target-bin masks ``(T,)``: contiguous validation blocks, guard bands.

    Predictable bins are those with ``history`` frames before them in the same segment. The
    validation blocks are centred at ``(i + 0.5) / val_blocks`` of the predictable bins; training
    bins closer than ``history`` bins to a validation bin are left out.
    """
    first = first_predicted_bin(history)
    predictable = np.zeros(T, dtype=bool)
    for a, b in segments:
        predictable[a + first : b] = True
    idx = np.flatnonzero(predictable)
    N = idx.size
    if N < 4:
        raise DataError(f"the training part has {N} bins with a full history of {history} frames", "the recording",
                        "use a shorter --history or a longer recording")
    n_val = max(val_blocks, int(round(val_fraction * N)))
    per = max(1, n_val // val_blocks)
    val = np.zeros(T, dtype=bool)
    for i in range(val_blocks):
        c = int((i + 0.5) * N / val_blocks)
        lo, hi = max(0, c - per // 2), min(N, c - per // 2 + per)
        val[idx[lo:hi]] = True
    guard = np.convolve(val.astype(np.int32), np.ones(2 * history + 1, dtype=np.int32), mode="same") > 0
    fit = predictable & ~guard
    if fit.sum() < 2:
        raise DataError(f"only {int(fit.sum())} training bins remain after holding out validation blocks", "the recording",
                        "use a smaller val_fraction, fewer val_blocks, a shorter history or more data")
    return fit, val


def prepare_data(rec: Recording, cfg: FitConfig) -> FitData:
    """Z-score the training movie once and build the training/validation masks."""
    train = rec.train
    stats = stimulus_stats(train.stimulus)
    z = zscore_tensor(train.stimulus, stats["stim_mean"], stats["stim_std"])
    y = torch.from_numpy(np.ascontiguousarray(train.counts, dtype=np.float32))
    segments = contiguous_segments(train.time, float(rec.frame_dt))  # type: ignore[arg-type]
    fit, val = split_masks(segments, z.shape[0], cfg.history, cfg.val_fraction, cfg.val_blocks)
    return FitData(z=z, y=y, fit_mask=fit, val_mask=val, history=cfg.history, stats=stats, frame_shape=rec.frame_shape, segments=segments)


def make_chunks(mask: np.ndarray, history: int, chunk_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Tile the True bins of ``mask`` with chunks of ``L`` target bins.

    Returns ``starts`` ``(K,)`` (target bin of each chunk's first row; its frames are
    ``starts - history .. starts + L - 1``), ``weights`` ``(K, L)`` (1 where the row's bin is in
    the mask and not already covered by an earlier chunk) and ``L``.
    """
    T = mask.size
    first = first_predicted_bin(history)
    L = int(max(1, min(chunk_len, T - first)))
    covered = np.zeros(T, dtype=bool)
    starts, weights = [], []
    for a, b in mask_ranges(mask):
        pos = a
        while pos < b:
            s = min(pos, T - L)
            s = max(s, first)
            w = mask[s : s + L] & ~covered[s : s + L]
            covered[s : s + L] |= w
            starts.append(s)
            weights.append(w.astype(np.float32))
            pos = s + L
    if not starts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, L), dtype=np.float32), L
    return np.asarray(starts, dtype=np.int64), np.stack(weights), L


def gather_chunks(z: torch.Tensor, starts: np.ndarray, history: int, L: int) -> torch.Tensor:
    """Stack the movie stretches of the given chunks: ``(K, L + history, H, W)`` (one copy per batch)."""
    return torch.stack([z[int(s) - history : int(s) + L] for s in starts])


def predictable_bins(segments: list[tuple[int, int]], T: int, history: int) -> np.ndarray:
    """``(T,)`` bool: the bins with ``history`` frames before them inside one contiguous segment."""
    first = first_predicted_bin(history)
    out = np.zeros(T, dtype=bool)
    for a, b in segments or [(0, T)]:
        out[a + first : b] = True
    return out


def gather_recurrent(z: torch.Tensor, starts: np.ndarray, history: int, L: int, burn_in: int, predictable: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunks for a recurrent model: ``(K, burn_in + L + history, H, W)`` frames and ``(K, burn_in + L)``
    real-row mask. Chunk ``k`` covers target bins ``starts[k] - burn_in .. starts[k] + L - 1``;
    frames before the movie are zeros, and a row is real when its bin is ``predictable`` (a full
    window inside one segment): the model resets its state at the other rows."""
    T = int(z.shape[0])
    P = burn_in + L
    zc = z.new_zeros((len(starts), P + history) + tuple(z.shape[1:]))
    rows = np.zeros((len(starts), P), dtype=bool)
    for k, s in enumerate(np.asarray(starts, dtype=np.int64)):
        b0 = int(s) - burn_in  # first row's target bin
        f0 = b0 - history  # its first frame
        lo = max(0, f0)
        zc[k, lo - f0 :] = z[lo : int(s) + L]
        j0 = max(0, -b0)
        rows[k, j0:] = predictable[b0 + j0 : min(T, int(s) + L)]
    return zc, torch.from_numpy(rows)


def recurrent_pass(model: Any, z: torch.Tensor, segments: list[tuple[int, int]], history: int, need: np.ndarray, device: torch.device,
                   amp: bool = False, piece: int = 1000) -> tuple[np.ndarray, dict[int, torch.Tensor]]:
    """One pass of a recurrent model in time order over each segment of the movie ``z`` (no
    gradient, eval mode; zero state at each segment's first predicted bin, so that the pass does
    not depend on the model's resting state).

    Returns the predictions ``(T, n_cells)`` (NaN where a bin has no full window) and, for each
    bin in ``need`` that is predicted and not a segment's first, the state just before that bin
    (``(C, ...)`` on ``device``; a chunk starting at a segment's first bin starts from the resting state).
    """
    T = int(z.shape[0])
    first = first_predicted_bin(history)
    out = np.full((T, int(model.n_cells)), np.nan, dtype=np.float32)
    states: dict[int, torch.Tensor] = {}
    need = np.unique(np.asarray(need, dtype=np.int64))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for a, b in segments or [(0, T)]:
            lo = a + first
            if lo >= b:
                continue
            here = need[(need > lo) & (need < b)]
            state = torch.zeros_like(model.initial_state(1, device))
            for cur in range(lo, b, piece):
                c = min(b, cur + piece)
                at = here[(here >= cur) & (here < c)]
                zc = z[cur - history : c].unsqueeze(0).to(device)
                with autocast(device, amp):
                    p, state, st = model.forward_chunks(zc, state=state, return_state=True, states_at=torch.from_numpy(at - cur))
                out[cur:c] = p[0].float().cpu().numpy()
                for k, bin_ in enumerate(at.tolist()):
                    states[int(bin_)] = st[0, k].clone()  # not a view: the piece's states are freed
    model.train(was_training)
    return out, states


def gather_targets(y: torch.Tensor, starts: np.ndarray, L: int) -> torch.Tensor:
    """Targets of the given chunks: ``(K, L, n_cells)``."""
    return torch.stack([y[int(s) : int(s) + L] for s in starts])


def activity_l1(pred: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean over bins of the MEAN over cells of ``|pred|``: the L1 activity penalty per
    cell, so that it does not grow with the number of recorded cells."""
    return (pred.abs().mean(dim=-1) * weight).sum() / weight.sum().clamp_min(1.0)


def poisson_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean over bins of the mean over cells of ``pred - target * log(pred)`` (the Poisson NLL up to a constant)."""
    nll = (pred - target * torch.log(pred + EPS)).mean(dim=-1)
    return (nll * weight).sum() / weight.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------- prediction
def predict_z(model: Any, z: torch.Tensor, device: torch.device, chunk_len: int = 500, amp: bool = False) -> np.ndarray:
    """Predictions ``(T, n_cells)`` for a z-scored movie ``(T, H, W)`` via ``forward_chunks`` (NaN before ``history``)."""
    h = int(model.history)
    T = int(z.shape[0])
    first = first_predicted_bin(h)
    out = np.full((T, int(model.n_cells)), np.nan, dtype=np.float32)
    if T <= first:
        return out
    was_training = model.training
    model.eval()
    L = max(1, min(chunk_len, T - first))
    if getattr(model, "recurrent", False):  # one pass in time order: consecutive stretches, the state carried
        state = None
        with torch.no_grad():
            for s in range(first, T, L):
                e = min(T, s + L)
                zc = z[s - h : e].unsqueeze(0).to(device)
                with autocast(device, amp):
                    p, state = model.forward_chunks(zc, state=state, return_state=True)
                out[s:e] = p[0].float().cpu().numpy()
        model.train(was_training)
        return out
    with torch.no_grad():
        for s in range(first, T, L):
            s0 = min(s, T - L)
            zc = z[s0 - h : s0 + L].unsqueeze(0).to(device)
            with autocast(device, amp):
                p = model.forward_chunks(zc)[0].float().cpu().numpy()
            out[s0 : s0 + L] = p
    model.train(was_training)
    return out


def masked_corr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson r per cell over the bins in ``mask`` (NaN for constant columns)."""
    from ..spikes import pearson_columns

    return pearson_columns(pred[mask], target[mask])


# ----------------------------------------------------------------------------- loop
@dataclass
class TrainState:
    """Where training stands (saved in ``checkpoint.pt`` every epoch)."""

    epoch: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_val_corr: float = math.nan
    bad_epochs: int = 0
    steps: int = 0
    stopped: str = ""
    converged: bool = False
    log: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


def _state_tensors(model: Any, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in model.state_dict().items()}


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


class WeightAverage:
    """Exponential moving average of a model's parameters and batch-norm statistics (Polyak
    averaging), over a horizon of ``horizon_steps`` optimiser steps.

    The first steps are averaged with a shorter horizon (``(1 + t) / (10 + t)``), so the average
    does not remember the initial weights. Buffers that are not statistics of the training
    batches (an RCNN's resting state) are not averaged.
    """

    def __init__(self, model: Any, horizon_steps: float, avg: dict[str, torch.Tensor] | None = None) -> None:
        self.decay = 1.0 - 1.0 / max(float(horizon_steps), 1.0)
        names = {n for n, _ in model.named_parameters()}
        sd = model.state_dict()
        self.keys = [k for k, v in sd.items() if v.is_floating_point() and (k in names or k.endswith(("running_mean", "running_var")))]
        self.avg = {k: sd[k].detach().clone() for k in self.keys}
        if avg is not None:
            for k in self.keys:
                if k in avg:
                    self.avg[k].copy_(avg[k])

    def update(self, model: Any, step: int) -> None:
        """Move the average towards the model's current weights (after optimiser step ``step``)."""
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        sd = model.state_dict()
        with torch.no_grad():
            for k in self.keys:
                self.avg[k].lerp_(sd[k].detach().to(self.avg[k].dtype), 1.0 - d)

    @contextmanager
    def swapped_in(self, model: Any) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        sd = model.state_dict()
        live = {k: sd[k].detach().clone() for k in self.keys}
        with torch.no_grad():
            for k in self.keys:
                sd[k].copy_(self.avg[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k in self.keys:
                    sd[k].copy_(live[k])


def save_training_checkpoint(path: Any, model: Any, best: dict[str, torch.Tensor], opt: Any, sched: Any, state: TrainState, extra: dict[str, Any],
                             average: WeightAverage | None = None) -> None:
    """Write the whole training state (model, best weights, weight average, optimiser, scheduler, RNG, log)."""
    tensors: dict[str, torch.Tensor] = {}
    tensors.update(_state_tensors(model, "model"))
    tensors.update({f"best/{k}": v for k, v in best.items()})
    if average is not None:
        tensors.update({f"ema/{k}": v for k, v in average.avg.items()})
    opt_json = pack(opt.state_dict(), "optim", tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    info = {
        "kind": "training",
        "state": state.__dict__,
        "optimizer": opt_json,
        "scheduler": sched.state_dict(),
        **extra,
    }
    save_checkpoint(path, tensors, info)


def load_training_checkpoint(path: Any, model: Any, opt: Any, sched: Any) -> tuple[TrainState, dict[str, torch.Tensor], dict[str, Any]]:
    """Restore what :func:`save_training_checkpoint` wrote into ``model``/``opt``/``sched``; the
    info dict carries the weight average (``info["ema"]``, empty when there was none)."""
    from ..errors import CheckpointError

    tensors, info = load_checkpoint(path)
    if info.get("kind") != "training":
        raise CheckpointError(f"'{path}' is not a training checkpoint", fix="resume from the run folder's checkpoint.pt")
    try:
        model.load_state_dict(_strip(tensors, "model"))
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's weights do not fit the model ({str(exc).splitlines()[0]})", str(path), "resume with the options the run was started with") from exc
    try:
        opt.load_state_dict(unpack(info["optimizer"], tensors))
    except ValueError as exc:  # e.g. another number of parameter groups (an rcnn checkpoint from before its cell had its own rate)
        raise CheckpointError(f"the checkpoint's optimiser state does not fit this retinakit's optimiser ({exc})", str(path),
                              "start the fit again without --resume (the checkpoint was written by another retinakit version)") from exc
    sched.load_state_dict(info["scheduler"])
    if "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"])
    best = _strip(tensors, "best")
    info["ema"] = _strip(tensors, "ema")
    state = TrainState(**info["state"])
    return state, best, info


def train(
    model: Any,
    data: FitData,
    cfg: FitConfig,
    device: torch.device,
    checkpoint_path: Any,
    log_path: Any,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainState:
    """Fit ``model`` to ``data`` (see module docstring); return the final state.

    The model ends holding its best weights (lowest validation loss). A checkpoint is written
    after every epoch; with ``resume`` the loop continues from ``checkpoint_path``.
    """
    from tqdm.auto import tqdm

    from ..atomic import write_text

    model.to(device)
    amp = bool(cfg.mixed_precision and device.type == "cuda")
    opt = torch.optim.Adam(param_groups(model, cfg.lr), lr=cfg.lr)
    scales, warmup = group_scales(model), int(getattr(model, "lr_warmup_steps", 0))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience)
    saved_average: dict[str, torch.Tensor] | None = None
    if resume:
        state, best, info = load_training_checkpoint(checkpoint_path, model, opt, sched)
        saved_average = info["ema"] or None
        _move_optimizer(opt, device)
        if state.stopped and not state.converged and not _out_of_budget(state, cfg):
            state.stopped = ""  # resumed with a larger budget
    else:
        state = TrainState()
        init_output_level(model, data.y[torch.from_numpy(data.fit_mask)].mean(dim=0))
        best = {k: v.detach().clone() for k, v in model.state_dict().items()}

    h = data.history
    starts, weights, L = make_chunks(data.fit_mask, h, cfg.chunk_len)
    vstarts, vweights, vL = make_chunks(data.val_mask, h, cfg.chunk_len)
    if starts.size == 0 or vstarts.size == 0:
        raise DataError("no training or validation bins", "the recording", "use a longer recording")
    per_batch = max(1, cfg.batch_size // L)
    n_batches = math.ceil(len(starts) / per_batch)
    rows_arg = bool(getattr(model, "accepts_rows", False))
    recurrent = bool(getattr(model, "recurrent", False))
    burn = int(getattr(model, "burn_in", 0)) if recurrent else 0
    predictable = predictable_bins(data.segments, int(data.z.shape[0]), h)
    z, y = data.z, data.y
    ema_epochs = cfg.resolved_weight_ema()
    average = WeightAverage(model, ema_epochs * n_batches, saved_average) if ema_epochs > 0 else None

    carried: dict[int, torch.Tensor] = {}  # recurrent: the state at each chunk's first row, from the last pass over the movie
    need = np.concatenate([starts, vstarts]) - burn  # chunk starts: states for the training chunks; all of them for the resting state

    def forward(st: np.ndarray, Lc: int, w: torch.Tensor) -> torch.Tensor:
        """The model's predictions ``(K, Lc, n)`` for the chunks starting at target bins ``st``."""
        if recurrent:  # burn-in rows first; the loss rows are the last Lc
            zr, real = gather_recurrent(z, st, h, Lc, burn, predictable)
            init = None
            if carried:
                rest = model.initial_state(1, device)[0]
                init = torch.stack([carried.get(int(s) - burn, rest) for s in st])
            return model.forward_chunks(zr.to(device, non_blocking=True), rows=real.to(device), state=init)[:, burn:]
        zc = gather_chunks(z, st, h, Lc).to(device, non_blocking=True)
        return model.forward_chunks(zc, rows=w > 0) if rows_arg else model.forward_chunks(zc)

    if device.type != "cpu":
        z = _to_device_if_fits(z, device)
        y = y.to(z.device)
    y_np = data.y.numpy()

    def run_val() -> tuple[float, float]:
        if recurrent:  # one pass over the movie: validation as on the test segment, and the states for the next epoch
            pred, states = recurrent_pass(model, z, data.segments, h, need, device, amp)
            carried.clear()
            carried.update(states)
            if states:  # the resting state: the mean state over the training movie
                model.set_rest(torch.stack(list(states.values())))
            vm = data.val_mask & np.isfinite(pred).all(axis=1)
            p = torch.from_numpy(pred[vm])
            loss = float(poisson_loss(p, data.y[torch.from_numpy(vm)], torch.ones(p.shape[0])))
            r = masked_corr(pred, y_np, vm)
            return loss, float(np.nanmean(r)) if np.any(np.isfinite(r)) else math.nan
        model.eval()
        preds, losses, wsum = np.full(y_np.shape, np.nan, dtype=np.float32), 0.0, 0.0
        with torch.no_grad():
            for b in range(0, len(vstarts), per_batch):
                st = vstarts[b : b + per_batch]
                tgt = gather_targets(y, st, vL).to(device)
                w = torch.from_numpy(vweights[b : b + per_batch]).to(device)
                with autocast(device, amp):
                    p = forward(st, vL, w).float()
                losses += float(poisson_loss(p, tgt, w)) * float(w.sum())
                wsum += float(w.sum())
                pn = p.cpu().numpy()
                for k, s in enumerate(st):
                    keep = vweights[b + k] > 0
                    preds[s : s + vL][keep] = pn[k][keep]
        r = masked_corr(preds, y_np, data.val_mask)
        return losses / max(wsum, 1.0), float(np.nanmean(r)) if np.any(np.isfinite(r)) else math.nan

    if recurrent and state.epoch > 0:  # resumed: the states the interrupted run had for its next epoch
        carried.update(recurrent_pass(model, z, data.segments, h, need, device, amp)[1])  # (the resting state is in the checkpoint)
    gen = torch.Generator().manual_seed(cfg.seed)
    planned = budget_epochs(cfg, n_batches)
    epoch_bar = tqdm(total=planned, initial=min(state.epoch, planned), desc="epochs", unit="ep", disable=not progress, leave=False)
    while not state.stopped and not _out_of_budget(state, cfg):
        t0 = time.perf_counter()
        epoch = state.epoch + 1
        gen.manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(starts), generator=gen).numpy()
        model.train()
        total, wtot = 0.0, 0.0
        bar = tqdm(range(n_batches), desc=f"epoch {epoch}", unit="batch", disable=not progress, leave=False)
        for bi in bar:
            idx = order[bi * per_batch : (bi + 1) * per_batch]
            st = starts[idx]
            tgt = gather_targets(y, st, L).to(device, non_blocking=True)
            w = torch.from_numpy(weights[idx]).to(device)
            with autocast(device, amp):
                pred = forward(st, L, w)
            pred = pred.float()
            loss = poisson_loss(pred, tgt, w)
            if not torch.isfinite(loss):
                raise ModelError(f"the training loss became {float(loss.detach())} at epoch {epoch}{_kept(state.epoch)}", "the fit", "lower --lr or check the data for extreme values")
            reg = cfg.l2 * model.weight_l2().to(loss.device)
            if cfg.l1 > 0:
                reg = reg + cfg.l1 * activity_l1(pred, w)
            opt.zero_grad(set_to_none=True)
            (loss + reg).backward()
            for g, f in zip(opt.param_groups[1:], scales[1:]):  # faster groups: the base rate (as the scheduler set it) times their warmed-up factor
                g["lr"] = warmed_lr(opt.param_groups[0]["lr"], f, state.steps, warmup)
            opt.step()
            state.steps += 1
            if average is not None:
                average.update(model, state.steps)
            total += float(loss.detach()) * float(w.sum())
            wtot += float(w.sum())
            bar.set_postfix(loss=f"{total / max(wtot, 1.0):.4f}")
        bar.close()
        train_loss = total / max(wtot, 1.0)
        with average.swapped_in(model) if average is not None else nullcontext():  # the weights validated and kept
            val_loss, val_corr = run_val()
            bad = _nonfinite_weights(model)
            if bad or not math.isfinite(val_loss):  # never save a checkpoint holding NaN/inf weights
                what = f"the weights ({', '.join(bad[:3])}) became NaN or infinite" if bad else f"the validation loss became {val_loss}"
                raise ModelError(f"{what} at epoch {epoch}{_kept(state.epoch)}", "the fit", "lower --lr or check the data for extreme values")
            improved = val_loss < state.best_val_loss - 1e-7
            if improved:
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        sched.step(val_loss)
        if improved:
            state.best_val_loss, state.best_val_corr, state.best_epoch = val_loss, val_corr, epoch
            state.bad_epochs = 0
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        dt = time.perf_counter() - t0
        state.wall_s += dt
        entry = {"epoch": epoch, "steps": state.steps, "train_loss": train_loss, "val_loss": val_loss, "val_corr": val_corr,
                 "lr": float(opt.param_groups[0]["lr"]), "best": improved, "seconds": round(dt, 3)}
        state.log.append(entry)
        if state.bad_epochs >= cfg.patience:
            state.converged = True
            state.stopped = f"converged: no lower validation loss for {cfg.patience} epochs (best epoch {state.best_epoch})"
        elif _out_of_budget(state, cfg):
            state.stopped = _budget_reason(state, cfg)
        save_training_checkpoint(checkpoint_path, model, best, opt, sched, state, {"config": cfg.to_dict()}, average)
        write_text(log_path, "".join(json.dumps(e) + "\n" for e in state.log))
        epoch_bar.update(1)
        epoch_bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}", r=f"{val_corr:.3f}")
        if on_epoch is not None:
            on_epoch(dict(entry))
    epoch_bar.close()
    if not state.stopped:
        state.stopped = _budget_reason(state, cfg)
    model.load_state_dict(best)
    model.eval()
    return state


def budget_epochs(cfg: FitConfig, steps_per_epoch: int) -> int:
    """Epochs the budget allows: ``max_steps`` optimiser steps, at most ``max_epochs`` epochs."""
    n = math.ceil(cfg.max_steps / max(1, steps_per_epoch))
    return n if cfg.max_epochs is None else min(n, cfg.max_epochs)


def _out_of_budget(state: TrainState, cfg: FitConfig) -> bool:
    return state.steps >= cfg.max_steps or (cfg.max_epochs is not None and state.epoch >= cfg.max_epochs)


def _budget_reason(state: TrainState, cfg: FitConfig) -> str:
    """Why a fit that did not converge stopped, and how to give it more."""
    what = (f"max_epochs={cfg.max_epochs}" if cfg.max_epochs is not None and state.epoch >= cfg.max_epochs
            else f"max_steps={cfg.max_steps} optimiser steps")
    still = state.best_epoch >= state.epoch - 1 and state.epoch > 0
    return (f"budget: reached {what} after {state.epoch} epochs" + (" while the validation loss was still falling" if still else "")
            + " (not converged; give a larger --max-steps to train longer)")


def _nonfinite_weights(model: Any) -> list[str]:
    """Names of the parameters and buffers holding NaN or inf (empty when all are finite)."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _kept(last_epoch: int) -> str:
    """The note on what the run folder keeps after a numerical fault."""
    return f" (checkpoint.pt keeps epoch {last_epoch}; the run is not finished)" if last_epoch > 0 else " (nothing was saved; the run is not finished)"


def init_output_level(model: Any, mean_counts: torch.Tensor) -> None:
    """Start a batch-norm CNN at each cell's mean count: the output batch norm's shift set to
    ``softplus^-1(mean count per bin)`` (else Adam needs thousands of steps to get there).

    Only for the batch-norm variant: in the plain CNN the same shift on the dense bias makes the
    first updates silence the second layer (all ReLUs off), so it keeps PyTorch's initialisation.
    """
    bn_out = getattr(model, "bn_out", None)
    if isinstance(bn_out, torch.nn.BatchNorm1d) and bn_out.affine:
        with torch.no_grad():
            bn_out.bias.copy_(torch.log(torch.expm1(mean_counts.clamp_min(1e-4).float())))


def group_scales(model: Any) -> list[float]:
    """The learning-rate factor of each of :func:`param_groups`'s groups, in order (1 for the first)."""
    scales = model.lr_scales() if hasattr(model, "lr_scales") else {}  # names of the model's own parameters
    return [1.0] + sorted({float(f) for f in scales.values()})


def param_groups(model: Any, lr: float) -> list[dict[str, Any]]:
    """Adam's parameter groups: the base learning rate ``lr`` (first group), and ``lr`` times the
    model's own scale for the parameters it names in ``model.lr_scales()`` (name -> factor), if any
    (reached after a warm-up, see :func:`warmed_lr`)."""
    scales = model.lr_scales() if hasattr(model, "lr_scales") else {}
    groups: list[dict[str, Any]] = [{"params": [p for n, p in model.named_parameters() if n not in scales], "lr": float(lr)}]
    for factor in group_scales(model)[1:]:
        groups.append({"params": [p for n, p in model.named_parameters() if scales.get(n) == factor], "lr": float(lr) * factor})
    return groups


def warmed_lr(base_lr: float, scale: float, step: int, warmup_steps: int) -> float:
    """The learning rate of a group with factor ``scale`` at optimiser step ``step`` (from 0): it rises
    linearly from ``base_lr`` to ``scale * base_lr`` over the first ``warmup_steps`` steps."""
    ramp = 1.0 if warmup_steps <= 0 else min(1.0, step / float(warmup_steps))
    return float(base_lr) * (1.0 + (float(scale) - 1.0) * ramp)


def _move_optimizer(opt: Any, device: torch.device) -> None:
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(device)


def _to_device_if_fits(z: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move the movie to the GPU once when it takes less than half of the free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if z.numel() * z.element_size() < 0.5 * free:
            return z.to(device)
        return z.pin_memory()
    return z.to(device)
