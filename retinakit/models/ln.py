"""The LN (linear-nonlinear) baseline: a spatio-temporal filter, then a static nonlinearity.

Same interface as the CNN: ``forward`` on windows ``(B, history, H, W)``, ``forward_chunks`` on
contiguous movie stretches ``(K, L + history, H, W)`` (a projection on the spatial filter and a
temporal convolution: no window is materialised), ``spec`` / ``from_spec``, ``weight_l2``.

Filter: rank 1 (``spatial (H, W)`` x ``temporal (history,)`` per cell) or full
(``(history, H, W)``), multiplied by a per-cell crop ``mask`` (1 inside a square box around the
receptive-field centre). Position ``j`` of the temporal filter is lag ``history - j`` frames
(:mod:`retinakit.alignment`). Nonlinearity: ``monotone`` (the default of the closed-form fits:
isotonic, fit on held-out generator values, with a rising linear upper tail;
:mod:`retinakit.models.ln_nonlinearity`), ``binned`` (piecewise-linear interpolation through
(mean generator, mean count) of equal-count bins, flat beyond the ends; runs saved before the
monotone one) or ``softplus`` (``exp(log_scale) * softplus(generator)``, trainable). The
two-filter LN (``n_filters=2``) is fit by :mod:`retinakit.models.stc`.

Two ways to fit (:func:`fit_ln_revcorr`, and gradient descent via the training loop after
:func:`init_ln_for_gd`):

* ``sta`` (white noise): the spike-triggered average (cross-covariance), cropped around its
  peak, rank-1 by SVD, then the monotone nonlinearity. The crop side is chosen per cell on the
  validation blocks unless given.
* ``ridge`` (correlated stimuli such as natural scenes): ridge-regularised least squares for a
  rank-1 filter inside the crop, by alternating the temporal and the spatial solve (each exact
  for the stimulus correlations); the ridge strength and the crop side are chosen per cell on
  the validation blocks; then the monotone nonlinearity.
* ``gd``: the same structure (crop, rank 1 or full) with a softplus output, fit end to end with
  the Poisson loss by the same loop as the CNN (random initial filters).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..alignment import first_predicted_bin, lag_of_position
from ..errors import ConfigError, ModelError
from .ln_nonlinearity import apply_monotone, fit_monotone_nonlinearity, orientation

CROP_CANDIDATES = (3, 5, 7, 9, 13, 17, 25)  # crop sides tried by the STA recipe (cheap)
RIDGE_CROP_CANDIDATES = (5, 9, 13, 17)  # crop sides tried by the ridge recipe (a regression each)
RIDGE_GRID = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
NONLINEARITIES = ("monotone", "binned", "softplus")


class LN(nn.Module):
    """Linear filter (rank 1 or full, cropped) + static nonlinearity, per cell. See module docstring.

    ``n_filters=2`` (the ``stc`` fit) adds a second rank-1 filter (``temporal2``, ``spatial2``,
    ``bias2``, its own crop ``mask2``) with its own ``monotone`` nonlinearity; the output is the
    sum of the two.
    """

    def __init__(self, history: int, frame_shape: tuple[int, ...], n_cells: int, rank: int = 1, nonlinearity: str = "monotone", n_knots: int = 20,
                 n_filters: int = 1) -> None:
        super().__init__()
        if history < 1 or n_cells < 1:
            raise ModelError(f"history and n_cells must be >= 1, got {history}, {n_cells}")
        if rank not in (0, 1):
            raise ModelError(f"LN rank must be 1 (separable) or 0 (full), got {rank}")
        if nonlinearity not in NONLINEARITIES:
            raise ModelError(f"LN nonlinearity must be one of {', '.join(NONLINEARITIES)}, got {nonlinearity!r}")
        if n_filters not in (1, 2):
            raise ModelError(f"LN n_filters must be 1 or 2, got {n_filters}")
        if n_filters == 2 and (rank != 1 or nonlinearity != "monotone"):
            raise ModelError("a two-filter LN has rank-1 filters and monotone nonlinearities", fix="use rank 1 and nonlinearity 'monotone'")
        if len(frame_shape) not in (0, 2):
            raise ModelError(f"frames must be 2-D (H, W) or full-field, got shape {frame_shape}")
        if n_knots < 2:
            raise ModelError(f"the LN nonlinearity needs at least 2 knots, got {n_knots}")
        self.history, self.frame_shape, self.n_cells = int(history), tuple(int(s) for s in frame_shape), int(n_cells)
        self.rank, self.nonlinearity, self.n_knots, self.n_filters = int(rank), str(nonlinearity), int(n_knots), int(n_filters)
        H, W = (1, 1) if not self.frame_shape else self.frame_shape
        self.input_hw = (H, W)
        C, h = self.n_cells, self.history
        if rank == 1:
            self.temporal = nn.Parameter(torch.zeros(C, h))
            self.spatial = nn.Parameter(torch.zeros(C, H, W))
        else:
            self.weight = nn.Parameter(torch.zeros(C, h, H, W))
        self.bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("mask", torch.ones(C, H, W))
        self.register_buffer("crop_box", torch.tensor([[0, H, 0, W]] * C, dtype=torch.int64))
        if nonlinearity == "softplus":
            self.log_scale = nn.Parameter(torch.zeros(C))
        else:
            self.register_buffer("knots_x", torch.linspace(-3, 3, n_knots).repeat(C, 1))
            self.register_buffer("knots_y", torch.ones(C, n_knots))
        if nonlinearity == "monotone":
            self.register_buffer("tail_slope", torch.zeros(C))
        if n_filters == 2:
            self.temporal2 = nn.Parameter(torch.zeros(C, h))
            self.spatial2 = nn.Parameter(torch.zeros(C, H, W))
            self.bias2 = nn.Parameter(torch.zeros(C))
            self.register_buffer("mask2", torch.ones(C, H, W))
            self.register_buffer("crop_box2", torch.tensor([[0, H, 0, W]] * C, dtype=torch.int64))
            self.register_buffer("knots_x2", torch.linspace(-3, 3, n_knots).repeat(C, 1))
            self.register_buffer("knots_y2", torch.zeros(C, n_knots))
            self.register_buffer("tail_slope2", torch.zeros(C))
        filt = "two rank-1 filters (sum of their nonlinearities)" if n_filters == 2 else f"rank {'1 (space x time)' if rank == 1 else 'full'}"
        self.geometry_note = f"LN, {filt}, {nonlinearity} nonlinearity, per-cell crop in crop_box"

    # ------------------------------------------------------------------ interface
    def spec(self) -> dict[str, Any]:
        """Constructor arguments as JSON-able values (crop and nonlinearity tables are buffers)."""
        return {"family": "ln", "history": self.history, "frame_shape": list(self.frame_shape), "n_cells": self.n_cells,
                "rank": self.rank, "nonlinearity": self.nonlinearity, "n_knots": self.n_knots, "n_filters": self.n_filters,
                "geometry_note": self.geometry_note}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "LN":
        """Rebuild from :meth:`spec` (a spec without ``nonlinearity`` is an old binned run)."""
        m = cls(int(spec["history"]), tuple(spec["frame_shape"]), int(spec["n_cells"]), rank=int(spec.get("rank", 1)),
                nonlinearity=str(spec.get("nonlinearity", "binned")), n_knots=int(spec.get("n_knots", 20)), n_filters=int(spec.get("n_filters", 1)))
        m.geometry_note = str(spec.get("geometry_note", m.geometry_note))
        return m

    def filters(self) -> torch.Tensor:
        """The effective (masked) linear filters, ``(n_cells, history, H, W)`` (the first filter of a two-filter LN)."""
        if self.rank == 1:
            return self.temporal[:, :, None, None] * (self.spatial * self.mask)[:, None]
        return self.weight * self.mask[:, None]

    def filters2(self) -> torch.Tensor:
        """The second filters of a two-filter LN, ``(n_cells, history, H, W)``."""
        if self.n_filters != 2:
            raise ModelError("this LN has one filter per cell", fix="use filters()")
        return self.temporal2[:, :, None, None] * (self.spatial2 * self.mask2)[:, None]

    def _rank1_windows(self, x: torch.Tensor, temporal: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
        proj = torch.einsum("bjhw,chw->bjc", x, spatial)
        return torch.einsum("bjc,cj->bc", proj, temporal)

    def generator(self, x: torch.Tensor) -> torch.Tensor:
        """Linear stage on windows ``(B, history, H, W)`` -> ``(B, n_cells)`` (bias included; first filter)."""
        x = x.reshape(x.shape[0], self.history, *self.input_hw)
        if self.rank == 1:
            g = self._rank1_windows(x, self.temporal, self.spatial * self.mask)
        else:
            g = torch.einsum("bjhw,cjhw->bc", x, self.weight * self.mask[:, None])
        return g + self.bias

    def generators(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every filter's generator on windows ``(B, history, H, W)``: a list of ``(B, n_cells)``."""
        out = [self.generator(x)]
        if self.n_filters == 2:
            x = x.reshape(x.shape[0], self.history, *self.input_hw)
            out.append(self._rank1_windows(x, self.temporal2, self.spatial2 * self.mask2) + self.bias2)
        return out

    def _rank1_chunks(self, zc: torch.Tensor, temporal: torch.Tensor, spatial: torch.Tensor, L: int) -> torch.Tensor:
        proj = zc @ spatial.reshape(self.n_cells, -1).T  # (K, L+h, C)
        win = proj.unfold(1, self.history, 1)[:, :L]  # (K, L, C, h) view: frames l .. l+h-1
        return (win * temporal).sum(-1)

    def generator_chunks(self, zc: torch.Tensor) -> torch.Tensor:
        """Linear stage on contiguous stretches ``(K, L + history, H, W)`` -> ``(K, L, n_cells)`` (first filter)."""
        return self.generators_chunks(zc)[0]

    def generators_chunks(self, zc: torch.Tensor) -> list[torch.Tensor]:
        """Every filter's generator on contiguous stretches: a list of ``(K, L, n_cells)``."""
        K, total = int(zc.shape[0]), int(zc.shape[1])
        L = total - self.history
        if L < 1:
            raise ModelError(f"chunks of {total} frames leave no prediction with history {self.history}", fix="pass chunks of L + history frames, L >= 1")
        zc = zc.reshape(K, total, -1)
        C = self.n_cells
        if self.rank == 1:
            out = [self._rank1_chunks(zc, self.temporal, self.spatial * self.mask, L) + self.bias]
        else:
            w = (self.weight * self.mask[:, None]).reshape(C, self.history, -1).transpose(1, 2)  # (C, P, h)
            g = nn.functional.conv1d(zc.transpose(1, 2), w)  # (K, C, L+1)
            out = [g[:, :, :L].transpose(1, 2) + self.bias]
        if self.n_filters == 2:
            out.append(self._rank1_chunks(zc, self.temporal2, self.spatial2 * self.mask2, L) + self.bias2)
        return out

    def _piecewise(self, g: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor, slope: torch.Tensor | None) -> torch.Tensor:
        """Linear interpolation through the knots, flat below the first; above the last, flat
        (``slope`` None) or rising with ``slope`` (same function as :func:`apply_monotone`)."""
        shape = g.shape
        gt = g.reshape(-1, self.n_cells).T.contiguous()  # (C, N)
        kx, ky = kx.to(gt.dtype), ky.to(gt.dtype)
        idx = torch.searchsorted(kx, gt.detach())
        i1 = idx.clamp(1, self.n_knots - 1)
        i0 = i1 - 1
        x0, x1 = kx.gather(1, i0), kx.gather(1, i1)
        y0, y1 = ky.gather(1, i0), ky.gather(1, i1)
        frac = ((gt - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
        out = y0 + frac * (y1 - y0)
        if slope is not None:
            out = out + slope.to(gt.dtype)[:, None] * torch.relu(gt - kx[:, -1:])
        return out.T.reshape(shape)

    def output(self, g: torch.Tensor, g2: torch.Tensor | None = None) -> torch.Tensor:
        """The static nonlinearity on generator values ``(..., n_cells)``: expected count per bin
        (a two-filter LN adds its second nonlinearity of ``g2``)."""
        if self.nonlinearity == "softplus":
            return torch.exp(self.log_scale) * nn.functional.softplus(g)
        out = self._piecewise(g, self.knots_x, self.knots_y, self.tail_slope if self.nonlinearity == "monotone" else None)
        if self.n_filters == 2:
            if g2 is None:
                raise ModelError("a two-filter LN needs both generators", fix="call forward(), or output(*generators(x))")
            out = out + self._piecewise(g2, self.knots_x2, self.knots_y2, self.tail_slope2)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expected spike count per bin ``(B, n_cells)`` for windows ``(B, history, H, W)``."""
        return self.output(*self.generators(x))

    def forward_chunks(self, zc: torch.Tensor) -> torch.Tensor:
        """Predictions for contiguous stretches ``(K, L + history, H, W)`` -> ``(K, L, n_cells)``;
        row ``l`` predicts the bin after frames ``l .. l + history - 1`` (same as :meth:`forward`)."""
        return self.output(*self.generators_chunks(zc))

    def weight_l2(self) -> torch.Tensor:
        """Sum of squared filter weights (not the bias or the nonlinearity)."""
        if self.rank == 1:
            out = self.temporal.pow(2).sum() + (self.spatial * self.mask).pow(2).sum()
        else:
            out = (self.weight * self.mask[:, None]).pow(2).sum()
        if self.n_filters == 2:
            out = out + self.temporal2.pow(2).sum() + (self.spatial2 * self.mask2).pow(2).sum()
        return out

    def set_crop(self, cell: int, box: tuple[int, int, int, int], which: int = 1) -> None:
        """Restrict cell ``cell``'s filter (``which`` 1 or 2) to rows ``box[0]:box[1]``, columns ``box[2]:box[3]``."""
        r0, r1, c0, c1 = (int(b) for b in box)
        mask, cb = (self.mask, self.crop_box) if which == 1 else (self.mask2, self.crop_box2)
        with torch.no_grad():
            mask[cell].zero_()
            mask[cell, r0:r1, c0:c1] = 1.0
            cb[cell] = torch.tensor([r0, r1, c0, c1])


# ----------------------------------------------------------------------------- fitting helpers (numpy)
class _one_thread:
    """Small dense linear algebra (eigh/solve/svd of a few hundred dims) on one thread: on a busy
    machine a multi-threaded LAPACK call this small spends most of its time waiting."""

    def __enter__(self) -> None:
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.n)


def _gram(a: np.ndarray) -> np.ndarray:
    """``a.T @ a`` in float64 (torch matmul)."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    return (t.T @ t).numpy()


def crop_box(center: tuple[int, int], side: int, frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """A ``side`` x ``side`` box around ``center`` shifted to lie inside the frame (0 = the whole frame)."""
    H, W = frame_hw
    if side <= 0 or (side >= H and side >= W):
        return (0, H, 0, W)

    def span(c: int, n: int) -> tuple[int, int]:
        s = min(side, n)
        a = int(c) - s // 2
        a = max(0, min(a, n - s))
        return a, a + s

    r0, r1 = span(center[0], H)
    c0, c1 = span(center[1], W)
    return (r0, r1, c0, c1)


def cross_covariance(z: np.ndarray, y: np.ndarray, mask: np.ndarray, history: int, block: int = 8192) -> np.ndarray:
    """Spike-triggered average (cross-covariance of the mean-removed counts with the stimulus).

    ``z`` ``(T, P)`` z-scored frames, ``y`` ``(T, n)`` counts, ``mask`` ``(T,)`` target bins to
    use. Returns ``(n, history, P)``; position ``j`` is lag ``history - j`` (alignment module),
    normalised by the number of bins. Computed as one matrix product per block of frames
    (lagged counts ``(block, n * history)`` times frames ``(block, P)``).
    """
    T, P = z.shape
    n = y.shape[1]
    m = mask.astype(bool)
    yc = np.where(m[:, None], y - y[m].mean(axis=0), 0.0).astype(np.float32)
    lags = np.array([int(lag_of_position(j, history)) for j in range(history)])
    zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    out = torch.zeros(n * history, P, dtype=torch.float64)
    ypad = np.concatenate([yc, np.zeros((int(lags.max()) + 1, n), dtype=np.float32)])
    for a in range(0, T, block):
        b = min(T, a + block)
        # column (c, j) holds yc[t + lag_j]: its product with frame t sums y(s) * frame(s - lag_j)
        Y = np.stack([ypad[a + lag : b + lag] for lag in lags], axis=2).reshape(b - a, n * history)
        out += (torch.from_numpy(Y).T @ zt[a:b]).double()
    return (out.numpy() / max(int(m.sum()), 1)).reshape(n, history, P)


def temporal_filter_movie(zc: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``V[t] = sum_j k[j] * zc[t - first + j]`` for every bin ``t`` (rows before ``first`` are 0): the filtered crop ``(T, p)``."""
    from scipy.signal import fftconvolve

    h = k.size
    T = zc.shape[0]
    first = first_predicted_bin(h)
    out = np.zeros(zc.shape, dtype=np.float32)
    if T <= first:
        return out
    valid = fftconvolve(zc, k[::-1, None].astype(np.float64), mode="valid", axes=0)  # (T-h+1, p)
    out[first:] = valid[: T - first]
    return out


def lag_matrix(p: np.ndarray, h: int, rows: np.ndarray) -> np.ndarray:
    """Rows ``t`` of the window matrix of a 1-D signal: ``U[i, j] = p[rows[i] - first + j]``."""
    first = first_predicted_bin(h)
    win = np.lib.stride_tricks.sliding_window_view(p, h)
    return win[rows - first]


def fit_binned_nonlinearity(g: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Knots of the binned nonlinearity: mean generator and mean count of ``n_bins`` equal-count bins.

    Returns strictly increasing ``x`` and ``y >= floor`` (``n_bins`` values each; duplicates are
    merged and the end padded so every cell has the same number of knots).
    """
    g = np.asarray(g, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    edges = np.quantile(g, np.linspace(0, 1, n_bins + 1))
    idx = np.clip(np.searchsorted(edges, g, side="right") - 1, 0, n_bins - 1)
    cnt = np.bincount(idx, minlength=n_bins)
    ok = cnt > 0
    xs = np.bincount(idx, weights=g, minlength=n_bins)[ok] / cnt[ok]
    ys = np.bincount(idx, weights=y, minlength=n_bins)[ok] / cnt[ok]
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    keep = np.concatenate([[True], np.diff(xs) > 1e-9 * max(1.0, float(np.abs(xs).max()))])
    xs, ys = xs[keep], ys[keep]
    floor = max(1e-6, 1e-3 * float(y.mean()) if y.size else 1e-6)
    ys = np.maximum(ys, floor)
    if xs.size < n_bins:
        step = max(1e-6, (xs[-1] - xs[0]) / max(1, xs.size) if xs.size > 1 else 1.0)
        extra = n_bins - xs.size
        xs = np.concatenate([xs, xs[-1] + step * np.arange(1, extra + 1)])
        ys = np.concatenate([ys, np.full(extra, ys[-1])])
    return xs.astype(np.float32), ys.astype(np.float32)


def apply_binned(g: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """Evaluate a binned nonlinearity (same rule as :meth:`LN.output`: flat beyond the ends)."""
    return np.interp(g, kx, ky)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def locate_centres(sta: np.ndarray, frame_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Receptive-field centre per cell: the peak of the STA's energy over lags, smoothed 3x3.

    The raw STA is used for every stimulus: correlations of natural images blur it
    symmetrically, which moves its peak little, whereas whitening amplifies pixel noise.
    """
    from scipy.ndimage import uniform_filter

    n, h, P = sta.shape
    H, W = frame_hw
    energy = (sta**2).sum(axis=1).reshape(n, H, W)
    out = []
    for c in range(n):
        e = uniform_filter(energy[c], size=3, mode="nearest") if min(H, W) >= 3 else energy[c]
        r, col = np.unravel_index(int(np.argmax(e)), (H, W))
        out.append((int(r), int(col)))
    return out


# ----------------------------------------------------------------------------- reverse correlation
def fit_ln_revcorr(data: Any, method: str = "sta", rank: int = 1, crop: int | None = None, n_bins: int = 20, progress: bool = False) -> tuple[LN, dict[str, Any]]:
    """Fit an LN model by reverse correlation (``sta``) or ridge regression (``ridge``).

    ``data`` is a :class:`~retinakit.fitting.train.FitData` (z-scored movie, counts, the
    training and validation masks). ``crop``: box side in pixels, 0 for the whole frame, ``None``
    to choose per cell on the validation blocks. The filter is estimated on the training bins;
    the ``monotone`` nonlinearity on held-out generator values (:func:`crossfit_generator`).
    Returns the model and per-cell details (chosen crop, ridge strength, validation r).
    """
    from tqdm.auto import tqdm

    if method not in ("sta", "ridge"):
        raise ConfigError(f"reverse-correlation LN method must be 'sta' or 'ridge', got {method!r}", "ln_method")
    if method == "ridge" and rank != 1:
        raise ConfigError("ln_method 'ridge' fits a rank-1 (space x time) filter", "ln_rank", "use ln_rank 1, or ln_method sta / gd for a full filter")
    prep = _prepare(data)
    h, y, fit, (H, W) = prep["h"], prep["y"], prep["fit"], prep["hw"]
    n = y.shape[1]
    centres = prep["centres"]
    sides = _crop_sides(method, crop, (H, W))
    folds = crossfit_folds(fit, h)
    sta_folds = [cross_covariance(prep["z"], y, f, h) for f in folds]
    model = LN(h, data.frame_shape, n, rank=rank, nonlinearity="monotone", n_knots=n_bins)
    details: list[dict[str, Any]] = []
    bar = tqdm(range(n), desc=f"LN ({method})", unit="cell", disable=not progress, leave=False)
    for c in bar:
        best = select_single_filter(prep, c, method, rank, sides, n_bins)
        best = crossfit_nonlinearity(prep, c, best, method, rank, folds, [s[c] for s in sta_folds], n_bins)
        _install(model, c, best, rank, (H, W))
        details.append({"cell_index": c, "centre": list(centres[c]), "crop_side": int(best["side"]), "crop_box": list(best["box"]),
                        "ridge": best.get("ridge"), "val_corr": float(best["r_val"]) if np.isfinite(best["r_val"]) else None,
                        "tail_slope": float(best["slope"])})
    bar.close()
    vals = [d["val_corr"] for d in details if d["val_corr"] is not None]
    model.geometry_note = (f"LN by {method}: rank {'1' if rank == 1 else 'full'}, per-cell crop "
                           f"{'chosen on validation from ' + str(sides) if crop is None else 'side ' + str(crop)} px, "
                           f"monotone nonlinearity ({n_bins} bins, isotonic, cross-fitted, linear upper tail)")
    model.eval()
    return model, {"cells": details, "val_corr": float(np.mean(vals)) if vals else None}


def _prepare(data: Any) -> dict[str, Any]:
    """Numpy views of a FitData plus the STA of the training bins and the receptive-field centres."""
    h = int(data.history)
    z4 = data.z.numpy()
    T = z4.shape[0]
    H, W = z4.shape[1], z4.shape[2]
    z = z4.reshape(T, H * W)
    y = data.y.numpy().astype(np.float64)
    fit, val = np.asarray(data.fit_mask, bool), np.asarray(data.val_mask, bool)
    sta = cross_covariance(z, y, fit, h)
    return {"h": h, "z4": z4, "z": z, "y": y, "fit": fit, "val": val, "hw": (H, W), "sta": sta, "centres": locate_centres(sta, (H, W)),
            "fit_rows": np.flatnonzero(fit)}


def _crop_sides(method: str, crop: int | None, hw: tuple[int, int]) -> list[int]:
    H, W = hw
    if crop is not None:
        return [int(crop)]
    if (H, W) == (1, 1):
        return [0]
    cands = CROP_CANDIDATES if method == "sta" else RIDGE_CROP_CANDIDATES
    sides = sorted({s for s in cands if s < max(H, W)} | {0})
    if method == "ridge" and H * W > RIDGE_CROP_CANDIDATES[-1] ** 2:
        sides = [s for s in sides if s != 0]  # the whole frame is too many pixels for a regression
    if not sides:
        raise ModelError("no crop size to try for the LN filter", "ln_crop", "give ln_crop explicitly")
    return sides


def crossfit_folds(fit: np.ndarray, history: int, n_pieces: int = 8) -> list[np.ndarray]:
    """Two disjoint masks covering the training bins: alternate contiguous pieces (about
    ``n_pieces`` in all), so each fold's filter can be evaluated on the other fold's bins."""
    from ..alignment import mask_ranges

    rows = int(np.asarray(fit, bool).sum())
    piece = max(4 * int(history), int(np.ceil(rows / max(2, n_pieces))))
    folds = [np.zeros(fit.shape, bool), np.zeros(fit.shape, bool)]
    k = 0
    for a, b in mask_ranges(fit):
        for s in range(a, b, piece):
            folds[k % 2][s : min(b, s + piece)] = True
            k += 1
    if not folds[1].any():  # very short recordings: split the single piece in two
        idx = np.flatnonzero(fit)
        folds = [np.zeros(fit.shape, bool), np.zeros(fit.shape, bool)]
        folds[0][idx[: idx.size // 2]] = True
        folds[1][idx[idx.size // 2 :]] = True
    return folds


def _candidate(prep: dict[str, Any], c: int, method: str, rank: int, box: tuple[int, int, int, int], sta_c: np.ndarray, fit: np.ndarray,
               grid: tuple[float, ...] = RIDGE_GRID) -> dict[str, Any]:
    if method == "sta":
        return _sta_candidate(sta_c, prep["z4"], box, rank, prep["h"])
    return _ridge_candidate(prep["z4"], prep["y"][:, c], fit, prep["val"], np.flatnonzero(fit), box, prep["h"], sta_c, grid=grid)


def select_single_filter(prep: dict[str, Any], c: int, method: str, rank: int, sides: list[int], n_bins: int) -> dict[str, Any]:
    """The crop side (and ridge strength) with the best validation r of cell ``c``'s LN prediction
    (filter on the training bins, monotone nonlinearity fitted to those bins for this comparison)."""
    y, fit, val = prep["y"][:, c], prep["fit"], prep["val"]
    best: dict[str, Any] | None = None
    for side in sides:
        box = crop_box(prep["centres"][c], side, prep["hw"])
        cand = _candidate(prep, c, method, rank, box, prep["sta"][c], fit)
        g = cand["g"]
        nl = fit_monotone_nonlinearity(g[fit], y[fit], n_bins)
        r_val = _corr(apply_monotone(g[val], *nl), y[val])
        if best is None or (np.isfinite(r_val) and (not np.isfinite(best["r_val"]) or r_val > best["r_val"])):
            best = {**cand, "side": side, "box": box, "r_val": r_val}
    if best is None:
        raise ModelError("no crop size to try for the LN filter", "ln_crop", "give ln_crop explicitly")
    return best


def crossfit_generator(prep: dict[str, Any], c: int, best: dict[str, Any], method: str, rank: int, folds: list[np.ndarray],
                       sta_folds: list[np.ndarray]) -> np.ndarray:
    """Held-out generator values on the training bins: the filter (same crop, same ridge strength)
    refitted on one fold predicts the other fold's bins, and vice versa. Bins outside the folds are 0."""
    g_out = np.zeros(prep["z4"].shape[0])
    grid = (float(best["ridge"]),) if best.get("ridge") is not None else RIDGE_GRID
    for k, f in enumerate(folds):
        cand = _candidate(prep, c, method, rank, best["box"], sta_folds[k], f, grid=grid)
        other = folds[1 - k]
        g_out[other] = cand["g"][other]
    return g_out


def crossfit_nonlinearity(prep: dict[str, Any], c: int, best: dict[str, Any], method: str, rank: int, folds: list[np.ndarray],
                          sta_folds: list[np.ndarray], n_bins: int) -> dict[str, Any]:
    """Fit cell ``c``'s monotone nonlinearity to held-out generator values (:func:`crossfit_generator`),
    flipping the filter if needed so that the function increases; validation r of the result."""
    y, fit, val = prep["y"][:, c], prep["fit"], prep["val"]
    g_out = crossfit_generator(prep, c, best, method, rank, folds, sta_folds)
    sign = orientation(g_out[fit], y[fit])
    best = dict(best)
    if sign < 0:
        best["g"] = -best["g"]
        if rank == 1:
            best["temporal"] = -np.asarray(best["temporal"])
        else:
            best["weight"] = -np.asarray(best["weight"])
    kx, ky, slope = fit_monotone_nonlinearity(sign * g_out[fit], y[fit], n_bins)
    best.update(kx=kx, ky=ky, slope=slope, r_val=_corr(apply_monotone(best["g"][val], kx, ky, slope), y[val]))
    return best


def _sta_candidate(sta_c: np.ndarray, z4: np.ndarray, box: tuple[int, int, int, int], rank: int, h: int) -> dict[str, Any]:
    r0, r1, c0, c1 = box
    H, W = z4.shape[1:]
    sub = sta_c.reshape(h, H, W)[:, r0:r1, c0:c1].reshape(h, -1)
    zc = z4[:, r0:r1, c0:c1].reshape(z4.shape[0], -1)
    if rank == 1:
        with _one_thread():
            u, sv, vt = (t.numpy() for t in torch.linalg.svd(torch.from_numpy(np.ascontiguousarray(sub)), full_matrices=False))
        temporal, spatial = u[:, 0] * sv[0], vt[0]
        peak = int(np.argmax(np.abs(spatial)))
        if spatial[peak] < 0:
            temporal, spatial = -temporal, -spatial
        g = _rank1_generator(zc, spatial, temporal)
        return {"g": g, "temporal": temporal, "spatial": spatial}
    g = _full_generator(zc, sub)
    return {"g": g, "weight": sub}


def _rank1_generator(zc: np.ndarray, spatial: np.ndarray, temporal: np.ndarray) -> np.ndarray:
    h = temporal.size
    T = zc.shape[0]
    first = first_predicted_bin(h)
    proj = zc @ spatial.astype(np.float32)
    g = np.zeros(T, dtype=np.float64)
    if T > first:
        g[first:] = np.correlate(proj.astype(np.float64), temporal.astype(np.float64), mode="valid")[: T - first]
    return g


def _full_generator(zc: np.ndarray, filt: np.ndarray) -> np.ndarray:
    h = filt.shape[0]
    T = zc.shape[0]
    first = first_predicted_bin(h)
    g = np.zeros(T, dtype=np.float64)
    if T <= first:
        return g
    proj = zc @ filt.T.astype(np.float32)  # (T, h): proj[t, j] = frame t . filter position j
    n = T - first
    for j in range(h):
        g[first:] += proj[j : j + n, j]
    return g


def _ridge_solve(A: np.ndarray, b: np.ndarray, lam_rel: float) -> np.ndarray:
    lam = lam_rel * float(np.trace(A)) / A.shape[0]
    with _one_thread():
        At = torch.from_numpy(A + lam * np.eye(A.shape[0]))
        return torch.linalg.solve(At, torch.from_numpy(np.asarray(b, dtype=np.float64))).numpy()


def _filtered_rows(zc: np.ndarray, k: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Rows ``t`` (target bins in ``ranges``) of the crop filtered in time: ``sum_j k[j] * zc[t - first + j]``."""
    h = k.size
    first = first_predicted_bin(h)
    parts = []
    for a, b in ranges:
        acc = np.zeros((b - a, zc.shape[1]), dtype=np.float32)
        for j in range(h):
            acc += np.float32(k[j]) * zc[a - first + j : b - first + j]
        parts.append(acc)
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, zc.shape[1]))


def _subsample_ranges(mask: np.ndarray, max_rows: int, piece: int = 256) -> list[tuple[int, int]]:
    """Contiguous pieces of the True runs of ``mask``, evenly spread, about ``max_rows`` bins in all."""
    from ..alignment import mask_ranges

    pieces = [(s, min(s + piece, b)) for a, b in mask_ranges(mask) for s in range(a, b, piece)]
    total = sum(b - a for a, b in pieces)
    if total <= max_rows:
        return pieces
    idx = np.unique(np.linspace(0, len(pieces) - 1, num=max(1, int(np.ceil(max_rows / piece)))).round().astype(int))
    return [pieces[i] for i in idx]


def _ridge_candidate(z4: np.ndarray, y: np.ndarray, fit: np.ndarray, val: np.ndarray, fit_rows: np.ndarray, box: tuple[int, int, int, int],
                     h: int, sta_c: np.ndarray, n_iter: int = 4, max_rows: int = 16000, grid: tuple[float, ...] = RIDGE_GRID) -> dict[str, Any]:
    """Rank-1 ridge regression in a crop by alternating exact temporal and spatial solves.

    Temporal step: least squares on the lagged projection of the crop on the spatial profile
    (all training bins). Spatial step: ``s = (A + lam I)^-1 b`` with ``b`` exact (the cropped
    STA contracted with the temporal filter) and ``A``, the covariance of the temporally filtered
    crop, estimated on up to ``max_rows`` training bins (a stimulus statistic: no response noise);
    ``lam`` is chosen from ``grid`` on the validation blocks.
    """
    from ..alignment import mask_ranges

    r0, r1, c0, c1 = box
    H, W = z4.shape[1:]
    T = z4.shape[0]
    zc = np.ascontiguousarray(z4[:, r0:r1, c0:c1].reshape(T, -1), dtype=np.float32)
    p = zc.shape[1]
    yf = y[fit] - y[fit].mean()
    n_fit = int(fit.sum())
    sub = sta_c.reshape(h, H, W)[:, r0:r1, c0:c1].reshape(h, -1)  # (h, p), the cropped cross-covariance
    spatial = sub[int(np.argmax((sub**2).sum(axis=1)))].astype(np.float64)
    if not np.any(spatial):
        spatial = np.ones(p)
    spatial /= np.linalg.norm(spatial)
    a_ranges = _subsample_ranges(fit, max_rows)
    v_ranges = mask_ranges(val)
    yv = np.concatenate([y[a:b] for a, b in v_ranges])
    temporal = np.zeros(h)
    ridge = grid[0]
    for _ in range(n_iter):
        proj = (zc @ spatial.astype(np.float32)).astype(np.float64)
        U = lag_matrix(proj, h, fit_rows)
        Uc = U - U.mean(axis=0)
        temporal = _ridge_solve(_gram(Uc), Uc.T @ yf, 1e-4)
        Vs = _filtered_rows(zc, temporal, a_ranges)
        mu = Vs.mean(axis=0)
        Vs -= mu
        A = _gram(Vs) * (n_fit / max(1, Vs.shape[0]))
        bvec = n_fit * (temporal @ sub)
        Vv = _filtered_rows(zc, temporal, v_ranges) - mu
        with _one_thread():
            ev, evc = torch.linalg.eigh(torch.from_numpy(A))
        evals, evecs = ev.numpy(), evc.numpy()
        proj_b = evecs.T @ bvec
        scale = max(float(evals.mean()), 1e-12)
        best_r, best_s = -np.inf, spatial
        for lam in grid:
            s_l = evecs @ (proj_b / (np.maximum(evals, 0) + lam * scale))
            r = _corr(Vv @ s_l, yv)
            if np.isfinite(r) and r > best_r:
                best_r, best_s, ridge = r, s_l, lam
        norm = float(np.linalg.norm(best_s))
        if norm == 0:
            break
        spatial = best_s / norm
    proj = (zc @ spatial.astype(np.float32)).astype(np.float64)
    U = lag_matrix(proj, h, fit_rows)
    Uc = U - U.mean(axis=0)
    temporal = _ridge_solve(_gram(Uc), Uc.T @ yf, 1e-4)
    g = _rank1_generator(zc, spatial, temporal)
    return {"g": g, "temporal": temporal, "spatial": spatial, "ridge": ridge}


def _install(model: LN, c: int, best: dict[str, Any], rank: int, hw: tuple[int, int]) -> None:
    r0, r1, c0, c1 = best["box"]
    model.set_crop(c, best["box"])
    with torch.no_grad():
        if rank == 1:
            sp = torch.zeros(hw)
            sp[r0:r1, c0:c1] = torch.as_tensor(np.asarray(best["spatial"]).reshape(r1 - r0, c1 - c0), dtype=torch.float32)
            model.spatial[c] = sp
            model.temporal[c] = torch.as_tensor(np.asarray(best["temporal"]), dtype=torch.float32)
        else:
            w = torch.zeros((model.history,) + hw)
            w[:, r0:r1, c0:c1] = torch.as_tensor(np.asarray(best["weight"]).reshape(model.history, r1 - r0, c1 - c0), dtype=torch.float32)
            model.weight[c] = w
        model.bias[c] = 0.0
        model.knots_x[c] = torch.as_tensor(best["kx"])
        model.knots_y[c] = torch.as_tensor(best["ky"])
        if model.nonlinearity == "monotone":
            model.tail_slope[c] = float(best.get("slope", 0.0))


# ----------------------------------------------------------------------------- gradient descent
def init_ln_for_gd(model: LN, data: Any, crop: int | None = None) -> None:
    """Prepare an LN model for end-to-end gradient descent: crop boxes around the STA peaks
    (``crop`` side; ``None``: half the smaller frame side, at least 5), small random filters
    (from the current torch seed), and the bias set so the initial output is the mean count."""
    h = int(data.history)
    z4 = data.z.numpy()
    T, H, W = z4.shape
    y = data.y.numpy().astype(np.float64)
    fit = np.asarray(data.fit_mask, bool)
    sta = cross_covariance(z4.reshape(T, -1), y, fit, h)
    centres = locate_centres(sta, (H, W))
    side = int(crop) if crop is not None else max(5, min(H, W) // 2)
    C = model.n_cells
    with torch.no_grad():
        for c in range(C):
            model.set_crop(c, crop_box(centres[c], side, (H, W)))
        if model.rank == 1:
            model.temporal.normal_(0.0, 0.1)
            model.spatial.normal_(0.0, 0.1)
        else:
            model.weight.normal_(0.0, 0.1 / np.sqrt(h))
        mean = torch.as_tensor(y[fit].mean(axis=0), dtype=torch.float32).clamp_min(1e-4)
        if model.nonlinearity == "softplus":
            model.log_scale.zero_()
            model.bias.copy_(torch.log(torch.expm1(mean)))
    model.geometry_note = (f"LN by gradient descent (Poisson loss): rank {'1' if model.rank == 1 else 'full'}, "
                           f"crop side {side} px around the STA peak, softplus nonlinearity")
