"""`retinakit check`: causality and alignment checks on a fitted model.

Each check feeds the model a random stimulus in its own geometry and units (pixels drawn
uniformly between the training minimum and maximum), perturbs it in a controlled way and
compares predictions. With history ``H``, bin ``t`` must depend on frames ``t - H .. t - 1``
only (:mod:`retinakit.alignment`):

- ``nan_before_history``: bins ``t < H`` are NaN (no full window), all later bins finite and >= 0;
- ``causality``: changing every frame from ``t0`` on leaves bins ``<= t0`` unchanged;
- ``impulse_window``: changing the single frame ``f`` changes only bins ``f + 1 .. f + H``; the
  lag of the largest change per cell is reported;
- ``stimulus_dependence``: the output changes at all when the stimulus does (a model that
  ignores its input fails);
- ``window_alignment``: :meth:`FittedModel.predict` at every bin ``t`` equals the network's
  ``forward`` applied directly to the z-scored frames :func:`retinakit.alignment.window_frames`
  ``(t, H)``;
- ``batch_independence``: predictions do not depend on how many bins go through the network
  at once (no batch-norm in training mode, no cross-talk between windows);
- ``forward_chunks`` (when the network has it): two chunks in one call equal the windowed forward;
- a recurrent network (``model.recurrent``, e.g. ``rcnn``) may let frame ``f`` change every
  later bin, so ``impulse_window`` only requires bins ``<= f`` unchanged; ``window_alignment``
  steps the network window by window (``model.step`` on :func:`retinakit.alignment.window_frames`,
  the state carried from one bin to the next) and ``forward_chunks`` starts its second chunk from
  the state the stepping reached there;
- ``deterministic``: two identical calls give identical predictions.

Differences count as zero when below ``rtol`` times the largest prediction (float32 round-off).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..alignment import window_frames
from .base import stimulus_levels

RTOL = 1e-5


def _chunk_keyword(fitted: Any) -> str | None:
    """The keyword of ``predict`` that sets how many bins go through the network at once."""
    import inspect

    params = inspect.signature(fitted.predict).parameters
    return next((k for k in ("chunk_bins", "batch_size") if k in params), None)


def _stimulus(fitted: Any, T: int, rng: np.random.Generator) -> np.ndarray:
    lv = stimulus_levels(fitted)
    shape = (T,) + tuple(fitted.frame_shape)
    return rng.uniform(lv.low, lv.high, size=shape).astype(np.float32)


def check_model(fitted: Any, seed: int = 0, rtol: float = RTOL) -> dict[str, Any]:
    """Run the causality and alignment checks; returns ``{"passed": bool, "checks": {name: {...}}, ...}``.

    Each check has ``passed`` (bool), ``detail`` (one sentence) and its numbers. Nothing is written.
    """
    import torch

    H = fitted.history
    T = 3 * H + 8
    rng = np.random.default_rng(seed)
    stim = _stimulus(fitted, T, rng)
    base = fitted.predict(stim)
    scale = float(np.nanmax(np.abs(base))) if np.isfinite(base).any() else 1.0
    tol = rtol * max(scale, 1e-12)
    checks: dict[str, dict[str, Any]] = {}

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        d = np.abs(np.nan_to_num(a, nan=0.0) - np.nan_to_num(b, nan=0.0))
        return float(d.max()) if d.size else 0.0

    nan_head = bool(np.isnan(base[:H]).all())
    tail = base[H:]
    finite_tail = bool(np.isfinite(tail).all())
    nonneg = bool((tail >= 0).all()) if finite_tail else False
    checks["nan_before_history"] = {
        "passed": nan_head and finite_tail and nonneg,
        "detail": f"bins 0..{H - 1} NaN: {nan_head}; bins {H}..{T - 1} finite: {finite_tail}, non-negative: {nonneg}",
    }

    t0 = 2 * H
    fut = stim.copy()
    fut[t0:] = _stimulus(fitted, T - t0, rng)
    p_fut = fitted.predict(fut)
    past = diff(p_fut[: t0 + 1], base[: t0 + 1])
    after = diff(p_fut[t0 + 1 :], base[t0 + 1 :])
    checks["causality"] = {
        "passed": past <= tol,
        "detail": f"frames {t0}.. replaced: bins <= {t0} changed by {past:.3g} (tolerance {tol:.3g}); later bins by {after:.3g}",
        "max_change_past": past, "max_change_future": after, "t0": t0,
    }

    recurrent = bool(getattr(fitted.model, "recurrent", False))
    f = 2 * H
    end = T if recurrent else f + H + 1  # a recurrent model may carry the frame to every later bin
    imp = stim.copy()
    imp[f] = _stimulus(fitted, 1, rng)[0]
    p_imp = fitted.predict(imp)
    d = np.abs(np.nan_to_num(p_imp, nan=0.0) - np.nan_to_num(base, nan=0.0))  # (T, cells)
    outside = np.r_[d[: f + 1].ravel(), d[end:].ravel()]
    inside = d[f + 1 : end]
    out_max = float(outside.max()) if outside.size else 0.0
    in_max = float(inside.max()) if inside.size else 0.0
    peak_lag = (np.argmax(inside, 0) + 1).tolist() if inside.size else []
    checks["impulse_window"] = {
        "passed": out_max <= tol,
        "detail": f"frame {f} changed: bins outside {f + 1}..{end - 1}{' (recurrent: every later bin)' if recurrent else ''} changed by {out_max:.3g}, inside by {in_max:.3g} "
                  f"(largest change at lag {min(peak_lag) if peak_lag else '-'}..{max(peak_lag) if peak_lag else '-'} frames)",
        "max_change_outside": out_max, "max_change_inside": in_max, "peak_lag_frames": peak_lag,
    }

    checks["stimulus_dependence"] = {
        "passed": max(after, in_max) > tol,
        "detail": f"the output {'changes' if max(after, in_max) > tol else 'does NOT change'} when the stimulus does (max change {max(after, in_max):.3g})",
        "max_change": max(after, in_max),
    }

    z = torch.from_numpy(np.ascontiguousarray(fitted.normalise(stim)))
    dev = next(fitted.model.parameters()).device
    fitted.model.eval()
    ts = np.arange(H, T)
    states = []
    with torch.no_grad():
        if recurrent:  # one step per bin, the state carried
            rows, st = [], None
            for t in ts:
                states.append(st)
                o, st = fitted.model.step(z[window_frames(int(t), H)].unsqueeze(0).to(dev), st)
                rows.append(o.float().cpu().numpy())
            direct = np.concatenate(rows)
        else:
            direct = np.concatenate([fitted.model(torch.stack([z[window_frames(int(t), H)] for t in ts[i : i + 256]]).to(dev)).float().cpu().numpy()
                                     for i in range(0, len(ts), 256)])
    wa = diff(direct, base[ts])
    how = "step() from bin to bin" if recurrent else "network"
    checks["window_alignment"] = {
        "passed": wa <= tol,
        "detail": f"{how} on frames t-{H}..t-1 (alignment.window_frames) vs predict() at bins {H}..{T - 1}: max difference {wa:.3g}",
        "max_difference": wa,
    }

    key = _chunk_keyword(fitted)
    if key is not None:
        small = fitted.predict(stim, **{key: 7})
        bi = diff(small, base)
        checks["batch_independence"] = {"passed": bi <= tol, "detail": f"predict({key}=7) vs default: max difference {bi:.3g}", "max_difference": bi}

    if hasattr(fitted.model, "forward_chunks"):
        half = (T - H) // 2  # two chunks of the movie in one call
        zc = torch.stack([z[: half + H], z[half : 2 * half + H]])
        with torch.no_grad():
            if recurrent:  # the second chunk continues from the state the stepping reached at its first bin
                s0 = torch.stack([fitted.model.initial_state(1, dev)[0], states[half][0]])
                ch = fitted.model.forward_chunks(zc.to(dev), state=s0).float().cpu().numpy()
            else:
                ch = fitted.model.forward_chunks(zc.to(dev)).float().cpu().numpy()
        fc = max(diff(ch[0], direct[:half]), diff(ch[1], direct[half : 2 * half]))
        what = "(the second from the stepped state) vs step() from bin to bin" if recurrent else "vs windowed forward"
        checks["forward_chunks"] = {"passed": fc <= tol, "detail": f"forward_chunks on 2 chunks of {half} bins {what}: max difference {fc:.3g}", "max_difference": fc}

    again = fitted.predict(stim)
    dd = diff(again, base)
    checks["deterministic"] = {"passed": dd <= tol, "detail": f"two identical calls differ by {dd:.3g}", "max_difference": dd}

    return {"passed": all(c["passed"] for c in checks.values()), "history_frames": H, "n_frames": T, "tolerance": tol, "seed": seed, "checks": checks}


def format_check(result: dict[str, Any]) -> str:
    """The check result as a short table, one line per check."""
    lines = [f"{'PASS' if c['passed'] else 'FAIL'}  {name:<20} {c['detail']}" for name, c in result["checks"].items()]
    verdict = "all checks passed" if result["passed"] else f"{sum(not c['passed'] for c in result['checks'].values())} check(s) FAILED"
    return "\n".join(lines + [f"{verdict} (history {result['history_frames']} frames, tolerance {result['tolerance']:.3g})"])
