"""Figures of a run: training curves, predicted vs recorded responses, learned filters; LN vs CNN scatter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..alignment import lag_of_position
from ..atomic import save_figure
from ..figures import new_figure


def write_run_figures(folder: Path, fitted: Any, rec: Any, pred: np.ndarray, scores: dict[str, Any], log: list[dict[str, Any]]) -> list[Path]:
    """Write every figure of a run into ``folder`` (``RUN/figures``); each names its run and model. Return their paths."""
    caption = run_caption(Path(folder).parent, fitted)
    paths = []
    if any("train_loss" in e for e in log):
        paths.append(training_curves(log, folder / "training.png", caption=caption))
    if rec.test is not None:
        paths.append(predictions_figure(fitted, rec, pred, scores, folder / "predictions.png", caption=caption))
    paths.append(filters_figure(fitted, folder / "filters.png", caption=caption))
    return paths


def run_caption(run_dir: Path, fitted: Any) -> str:
    """``run bn-cnn-sample-1: bn-cnn on sample`` (the line that names a figure's run, model and data)."""
    from ..sample import data_label

    meta = getattr(fitted, "meta", {}) or {}
    src = str(meta.get("data_source") or "")
    data = data_label(src) if src and not src.startswith("<") else "an in-memory recording"
    return f"run {Path(run_dir).name}: {meta.get('kind', 'model')} on {data}"


def _caption(fig: Any, caption: str) -> None:
    """The run/model line at the bottom left of a figure."""
    if caption:
        fig.text(0.01, 0.0, caption, fontsize=7, color="0.35", ha="left", va="top")


def training_curves(log: list[dict[str, Any]], path: Path, caption: str = "") -> Path:
    """Training and validation loss, and validation correlation, per epoch."""
    ep = [e["epoch"] for e in log if "train_loss" in e]
    fig, (a, b) = new_figure(1, 2, size=(9, 3.4))
    a.plot(ep, [e["train_loss"] for e in log if "train_loss" in e], "o-", label="train")
    a.plot(ep, [e["val_loss"] for e in log if "train_loss" in e], "o-", label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("Poisson loss (per bin, per cell)")
    a.legend(frameon=False)
    b.plot(ep, [e["val_corr"] for e in log if "train_loss" in e], "o-", color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel("validation r (mean over cells)")
    from matplotlib.ticker import MaxNLocator

    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("training curves")
    fig.tight_layout()
    _caption(fig, caption)
    save_figure(fig, path)
    return path


def predictions_figure(fitted: Any, rec: Any, pred: np.ndarray, scores: dict[str, Any], path: Path, max_cells: int = 8, seconds: float = 5.0,
                       caption: str = "") -> Path:
    """Predicted (model) and recorded (repeat average) rates on the first ``seconds`` of the test
    segment (the title says how much of it is shown), for up to ``max_cells`` cells."""
    test = rec.test
    dt = float(rec.frame_dt)
    ids = fitted.cell_ids
    lookup = {int(c): k for k, c in enumerate(rec.cell_ids)}
    reps = test.repeats if test.repeats is not None else test.counts[None]
    first = fitted.history
    n_show = min(len(ids), max_cells)
    T = reps.shape[1]
    end = min(T, first + max(10, int(round(seconds / dt))))
    t = np.arange(first, end) * dt
    fig, axes = new_figure(n_show, 1, size=(9, 1.5 * n_show + 0.6), squeeze=False, sharex=True)
    for i in range(n_show):
        ax = axes[i, 0]
        col = lookup[int(ids[i])]
        ax.plot(t, reps[:, first:end, col].mean(axis=0) / dt, color="0.4", lw=1, label="recorded (repeat mean)")
        ax.plot(t, pred[first:end, i] / dt, color="C3", lw=1.2, label="model")
        r, rn = scores["r"][i], scores["r_norm"][i]
        ax.set_ylabel("Hz")
        ax.set_title(f"cell {ids[i]}: r = {r:.2f}, r/ceiling = {rn:.2f}" + ("" if scores["reliable"][i] else " (unreliable)"), fontsize=9, loc="left")
    axes[0, 0].legend(frameon=False, fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2)
    axes[-1, 0].set_xlabel("time in test segment (s)")
    shown, total = (end - first) * dt, T * dt
    cells = f"{n_show} of {len(ids)} cells" if n_show < len(ids) else f"{n_show} cells"
    fig.suptitle(f"test segment: {shown:.1f} s of {total:.1f} s shown (from {first * dt:.2f} s, the first predicted bin), {cells}; "
                 "scores use the whole segment", fontsize=9)
    fig.tight_layout()
    _caption(fig, caption)
    save_figure(fig, path)
    return path


def filters_figure(fitted: Any, path: Path, max_filters: int = 16, caption: str = "") -> Path:
    """Learned filters. LN: each cell's filter; CNN: the first-layer filters. Left: the spatial
    profile at each filter's peak lag, tiled (each scaled to its own maximum, red = positive);
    right: the temporal profile at the peak pixel against the lag before the bin."""
    import torch

    m = fitted.model
    with torch.no_grad():
        if m.spec().get("family") == "ln":
            filt = m.filters().cpu().numpy()  # (C, h, H, W)
            names = [f"cell {c}" for c in fitted.cell_ids]
        else:
            w = m.first_layer_filters() if hasattr(m, "first_layer_filters") else m.conv1.weight.detach()
            filt = w.cpu().numpy()  # (F, h, kh, kw); the temporal CNN's kernels are shorter than the history
            names = [f"conv1 #{i + 1}" for i in range(filt.shape[0])]
    h = filt.shape[1]  # the history, or a temporal kernel's length (its lags are then relative)
    lags_ms = np.asarray(lag_of_position(np.arange(h), h)) * fitted.frame_dt * 1000
    n = min(filt.shape[0], max_filters)
    kh, kw = filt.shape[2], filt.shape[3]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    pad = 1
    tile = np.full((rows * (kh + pad) - pad, cols * (kw + pad) - pad), np.nan)
    fig, (a, b) = new_figure(1, 2, size=(9, 3.8))
    for i in range(n):
        f = filt[i]
        j, r, c = np.unravel_index(int(np.argmax(np.abs(f))), f.shape)
        lim = float(np.abs(f[j]).max()) or 1.0
        rr, cc = divmod(i, cols)
        tile[rr * (kh + pad) : rr * (kh + pad) + kh, cc * (kw + pad) : cc * (kw + pad) + kw] = f[j] / lim
        a.text(cc * (kw + pad), rr * (kh + pad) - 0.1, names[i], fontsize=6, va="bottom")
        b.plot(lags_ms, f[:, r, c] / (float(np.abs(f[:, r, c]).max()) or 1.0), lw=1, label=names[i])
    im = a.imshow(tile, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    a.set_xticks([])
    a.set_yticks([])
    a.set_title("space at the peak lag", fontsize=9, pad=12)
    cb = fig.colorbar(im, ax=a, shrink=0.8, ticks=[-1, 0, 1])
    cb.ax.set_yticklabels(["-max", "0", "+max"], fontsize=7)
    cb.set_label("weight / own max\nred +: brighter raises the output\nblue -: darker raises it", fontsize=7)
    b.axhline(0, color="0.7", lw=0.8)
    b.invert_xaxis()
    b.set_xlabel("lag before the bin (ms)")
    b.set_ylabel("weight / own max")
    b.set_title("time at the peak pixel", fontsize=9)
    if n <= 16:
        b.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    what = "LN filter of each cell" if names and names[0].startswith("cell") else "first-layer filters of the CNN"
    fig.suptitle(what + (f" (first {n} of {filt.shape[0]})" if n < filt.shape[0] else ""), fontsize=10)
    fig.tight_layout()
    _caption(fig, caption)
    save_figure(fig, path)
    return path


def compare_scatter(ln_norm: np.ndarray, cnn_norm: np.ndarray, reliable: np.ndarray, path: Path, title: str = "",
                    labels: list[Any] | None = None, caption: str = "") -> Path:
    """LN vs CNN r/ceiling per cell, each point labelled with its cell id (``labels``); the ceiling
    (1) and the diagonal marked; unreliable cells hollow."""
    fig, ax = new_figure(1, 1, size=(4.6, 4.4))
    ln_norm, cnn_norm, reliable = np.asarray(ln_norm, float), np.asarray(cnn_norm, float), np.asarray(reliable, bool)
    finite = np.isfinite(ln_norm) & np.isfinite(cnn_norm)
    hi = max(1.1, float(np.nanmax(np.concatenate([ln_norm[finite], cnn_norm[finite], [1.0]]))) + 0.05) if finite.any() else 1.1
    lo = min(0.0, float(np.nanmin(np.concatenate([ln_norm[finite], cnn_norm[finite], [0.0]]))) - 0.05) if finite.any() else 0.0
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, ls="--", label="equal")
    ax.axhline(1.0, color="C3", lw=0.8, label="ceiling")
    ax.axvline(1.0, color="C3", lw=0.8)
    ok = reliable & finite
    ax.scatter(ln_norm[ok], cnn_norm[ok], color="C0", s=28, label="reliable cells")
    bad = ~reliable & finite
    if bad.any():
        ax.scatter(ln_norm[bad], cnn_norm[bad], facecolors="none", edgecolors="0.5", s=28, label="unreliable")
    if labels is not None and len(labels) <= 60:
        for x, y, lab in zip(ln_norm[finite], cnn_norm[finite], np.asarray(labels, dtype=object)[finite]):
            ax.annotate(str(lab), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7, color="0.25")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("LN r / ceiling")
    ax.set_ylabel("CNN r / ceiling")
    ax.set_title(title or "LN vs CNN, per cell", fontsize=10)
    ax.text(0.03, 0.97, "above the diagonal: CNN better" + ("\nnumbers: cell ids" if labels is not None else ""), transform=ax.transAxes,
            fontsize=7, color="0.35", va="top")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    _caption(fig, caption)
    save_figure(fig, path)
    return path
