"""Figures of `retinakit reduce` (matplotlib on Agg, imported lazily, files written atomically).

* ``channels.png``: one row per top channel (layer 1 then layer 2): its spatial filter, its
  temporal filter (time before the response), and its contribution to the cell's rate over time
  around the event (dashed line);
* ``reduced.png``: the stimulus, the full and the reduced model's response to it, and every
  channel's contribution (top channels coloured); the test segment (recorded, full, reduced) and
  the reduced model's test r against the number of kept channels, when the recording is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import save_figure
from ..figures import new_figure

WINDOW_S = (-0.4, 0.6)
TEST_SHOWN_S = 5.0  # test-segment panel: this many seconds (the r values are over the whole segment)  # contribution panels: this stretch around the event (the whole trace when shorter)


def _around(t: np.ndarray) -> np.ndarray:
    sel = (t >= WINDOW_S[0]) & (t <= WINDOW_S[1])
    return sel if sel.sum() >= 5 else np.ones_like(t, dtype=bool)


def channels_figure(result: dict[str, Any], out: Path) -> str:
    """``channels.png`` (see module docstring)."""
    a = result["_arrays"]
    rows = a["top"]
    dt = float(result["frame_dt_s"])
    t = a["t"]
    sel = _around(t)
    spatial_model = bool(rows) and np.asarray(rows[0]["_spatial"]).ndim == 2
    ncols = 3 if spatial_model else 2
    fig, axes = new_figure(len(rows), ncols, size=(3.3 * ncols, 2.1 * max(len(rows), 1)), squeeze=False)
    H = len(rows[0]["_temporal"]) if rows else 0
    for i, row in enumerate(rows):
        ax_row = axes[i]
        c = 0
        if spatial_model:
            sp = np.asarray(row["_spatial"])
            lim = float(np.abs(sp).max()) or 1.0
            ax_row[0].imshow(sp, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax_row[0].set_xticks([])
            ax_row[0].set_yticks([])
            ax_row[0].set_ylabel(f"L{row['layer']} ch {row['channel']}\n#{row['rank']} ({row['share']:.0%})")
            c = 1
        temporal = np.asarray(row["_temporal"])
        lags = (H - np.arange(H)) * dt  # position j is H - j frames before the response
        ax = ax_row[c]
        ax.plot(-lags, temporal, color="C0")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_title(f"temporal filter ({row['polarity']})", fontsize=8)
        if not spatial_model:
            ax.set_ylabel(f"L{row['layer']} ch {row['channel']}\n#{row['rank']} ({row['share']:.0%})")
        ax = ax_row[c + 1]
        contrib = a[f"contrib{row['layer']}"][:, row["channel"]]
        ax.plot(t[sel], contrib[sel], color="C3")
        ax.axvline(0, color="k", ls="--", lw=0.8)
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_title(f"contribution (Hz) around {result['event_label']}", fontsize=8)
    axes[-1][ncols - 2].set_xlabel("time before response (s)")
    axes[-1][ncols - 1].set_xlabel("time from event (s)")
    fig.suptitle(f"cell {result['cell']}: top channels for the {result['stimulus']} stimulus", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "channels.png")
    return "channels.png"


def reduced_figure(result: dict[str, Any], out: Path) -> str:
    """``reduced.png`` (see module docstring)."""
    a = result["_arrays"]
    t = a["t"]
    test = a["test"]
    nrows = 3 + (1 if test is not None else 0)
    fig, axes = new_figure(nrows, 1, size=(8.0, 2.0 * nrows + 0.5), squeeze=False)
    ax = axes[0][0]
    ax.plot(t, a["contrast"], color="k", lw=1)
    ax.set_ylabel(a["contrast_label"], fontsize=8)
    ax.axvline(0, color="k", ls="--", lw=0.8)
    ax.set_title(f"cell {result['cell']}, {result['stimulus']} stimulus; event at 0: {result['event_label']}", fontsize=9)
    ax = axes[1][0]
    ax.plot(t, a["full"], label="full model", color="k")
    kept = ", ".join(f"L{k[-1]} {v}" for k, v in result["kept"].items())
    r = result["stimulus_response"]["r_reduced_vs_full"]
    ax.plot(t, a["reduced"], label=f"reduced ({kept}); r = {r:.3f}" if r is not None else f"reduced ({kept})", color="C1")
    ax.axvline(0, color="k", ls="--", lw=0.8)
    ax.set_ylabel("rate (Hz)")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[2][0]
    layer = 2 if result["layer"] in ("2", "both") else 1
    contrib = a[f"contrib{layer}"]
    kept_ch = set(result["kept"].get(f"layer{layer}", []))
    for ch in range(contrib.shape[1]):
        if ch in kept_ch:
            ax.plot(t, contrib[:, ch], lw=1.3, label=f"L{layer} ch {ch}")
        else:
            ax.plot(t, contrib[:, ch], lw=0.7, color="0.7")
    ax.axvline(0, color="k", ls="--", lw=0.8)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_ylabel("contribution (Hz)")
    ax.set_xlabel("time from event (s)")
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    if test is not None:
        ax = axes[3][0]
        tt = np.asarray(test["time_s"])
        ok = np.isfinite(np.asarray(test["full_hz"]))
        t0 = float(tt[ok][0]) if ok.any() else 0.0
        show = (tt >= t0) & (tt <= t0 + TEST_SHOWN_S)
        tr = result["test"]
        ax.plot(tt[show], np.asarray(test["recorded_hz"])[show], color="0.6", lw=0.8, label="recorded (trial average)")
        ax.plot(tt[show], np.asarray(test["full_hz"])[show], color="k", lw=1, label=f"full, test r = {tr['r_full']:.3f}")
        ax.plot(tt[show], np.asarray(test["reduced_hz"])[show], color="C1", lw=1, label=f"reduced, test r = {tr['r_reduced']:.3f}")
        ax.set_xlabel(f"test segment time (s; first {TEST_SHOWN_S:g} s shown, r over all of it)")
        ax.set_ylabel("rate (Hz)")
        ax.legend(fontsize=7, loc="upper left")
        ins = ax.inset_axes([0.82, 0.55, 0.17, 0.42])
        ks = [s["top"] for s in tr["by_top"]]
        ins.plot(ks, [s["r_reduced"] for s in tr["by_top"]], "o-", ms=3, color="C1")
        ins.axhline(tr["r_full"], color="k", lw=0.8)
        ins.set_xlabel("K kept", fontsize=6)
        ins.set_ylabel("test r", fontsize=6)
        ins.tick_params(labelsize=6)
    fig.tight_layout()
    save_figure(fig, out / "reduced.png")
    return "reduced.png"


def write_figures(result: dict[str, Any], out: Path) -> list[str]:
    """Write every figure into ``out``; returns the file names."""
    return [channels_figure(result, out), reduced_figure(result, out)]
