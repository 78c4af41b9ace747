"""Rank a fitted CNN's hidden channels by their contribution to one cell, and reduce the model.

Protocol (Tanaka et al., NeurIPS 2019), for one cell and one stimulus:

1. integrated gradients (:mod:`.attribution`, baseline = the mean stimulus, completeness within
   1 %) from the cell's output to every channel of both hidden layers, in every bin;
2. the **ranking** of each layer's channels by their total absolute contribution over the
   stimulus, ``sum_t |A_c(t)|`` (``share``: the fraction of the layer's total);
3. the **reduced model**: the top ``K`` channels of the chosen layer(s) (``layer`` 1, 2 or
   ``both``) are kept; every unit of the other channels is fixed at its mean activation over the
   reference movie (the recording's repeated test movie when it is available, else the stimulus
   itself), so the reduced model is the full network with the dropped interneurons clamped;
4. the reduced model's response to the same stimulus (Pearson r with the full model's), and its
   accuracy on the test segment: r with the trial-averaged response, next to the full model's
   r, for ``K = 1 ..`` all channels (the same bins as `retinakit fit` scores);
5. the cell's **polarity** in the full and the reduced model: the response to a bright and a dark
   spot (radius 1/16 of the frame, at least 1 px, at the receptive-field centre; full-field for
   full-field models) stepped on for 0.3 s; ON when the bright spot's peak rise is larger.

The receptive-field centre is the peak of the spatial part of the full model's mean gradient
with respect to the stimulus over the reference movie.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .attribution import DEFAULT_TOLERANCE, Attribution, integrated_gradients
from .circuit import Circuit, filter_polarity, split_filter

LAYER_CHOICES = ("1", "2", "both")
DEFAULT_LAYER = "2"
DEFAULT_TOP = 3
SPOT_SECONDS = 0.3


@dataclass
class ReducedModel:
    """The network with only ``keep[l]`` channels of layer ``l`` free; the other units are clamped
    at ``means[l]`` (per unit). ``predict`` has :meth:`FittedModel.predict`'s contract."""

    circuit: Circuit
    keep: dict[int, list[int]]
    means: dict[int, torch.Tensor]

    def _clamp(self, a: torch.Tensor, layer: int) -> torch.Tensor:
        keep = self.keep.get(layer)
        if keep is None:
            return a
        mask = torch.zeros(a.shape[1], dtype=torch.bool)
        mask[list(keep)] = True
        shape = (1, -1) + (1,) * (a.ndim - 2)
        m = mask.view(shape)
        return torch.where(m, a, self.means[layer].unsqueeze(0).expand_as(a))

    def forward_from_pre1(self, u1: torch.Tensor) -> torch.Tensor:
        """Expected count per bin ``(N, n_cells)`` from first-layer pre-ReLU activity."""
        a1 = self._clamp(torch.relu(u1), 1)
        a2 = self._clamp(self.circuit.layer2(a1), 2)
        return self.circuit.output(a2)

    def predict(self, stimulus: np.ndarray) -> np.ndarray:
        """Expected count per bin ``(T, n_cells)`` for a raw stimulus; NaN before a full history."""
        return _predict(self.circuit, self.forward_from_pre1, stimulus)


def _predict(circuit: Circuit, head: Callable[[torch.Tensor], torch.Tensor], stimulus: np.ndarray) -> np.ndarray:
    fitted = circuit.fitted
    z = fitted.normalise(stimulus)
    H = circuit.history
    out = np.full((z.shape[0], circuit.model.n_cells), np.nan)
    if z.shape[0] <= H:
        return out
    u1 = circuit.pre1(z)
    with torch.no_grad():
        out[H:] = torch.cat([head(u1[s : s + 1024]) for s in range(0, u1.shape[0], 1024)]).numpy()
    return out


def unit_means(circuit: Circuit, z: np.ndarray) -> dict[int, torch.Tensor]:
    """Mean activation of every unit of both hidden layers over the windows of the z-scored movie ``z``."""
    u1 = circuit.pre1(z)
    s1 = s2 = None
    with torch.no_grad():
        for s in range(0, u1.shape[0], 1024):
            a1 = torch.relu(u1[s : s + 1024])
            a2 = circuit.layer2(a1)
            s1 = a1.sum(0) if s1 is None else s1 + a1.sum(0)
            s2 = a2.sum(0) if s2 is None else s2 + a2.sum(0)
    n = float(u1.shape[0])
    return {1: s1 / n, 2: s2 / n}  # type: ignore[operator]


def rank_channels(att: Attribution, layer: int, frame_dt: float = 1.0) -> list[dict[str, Any]]:
    """Channels of ``layer`` ranked by ``sum_t |A_c(t)|``; ``mean_abs_hz`` / ``mean_net_hz``: the
    mean over bins of the absolute / signed contribution, in Hz when ``frame_dt`` is the bin width."""
    A = att.channels[layer]
    mag = np.abs(A).sum(0)
    total = float(mag.sum())
    n = max(A.shape[0], 1)
    order = np.argsort(-mag, kind="stable")
    return [{"rank": i + 1, "layer": layer, "channel": int(c), "share": float(mag[c] / total) if total > 0 else 0.0,
             "mean_abs_hz": float(mag[c] / n / frame_dt), "mean_net_hz": float(A[:, c].sum() / n / frame_dt)} for i, c in enumerate(order)]


def keep_sets(ranking: dict[int, list[dict[str, Any]]], layer: str, k: int) -> dict[int, list[int]]:
    """The channels kept per layer for ``layer`` ("1", "2" or "both") and top ``k``."""
    layers = (1, 2) if layer == "both" else (int(layer),)
    return {lay: [row["channel"] for row in ranking[lay][:k]] for lay in layers}


def receptive_field(circuit: Circuit, z: np.ndarray, cell: int, max_windows: int = 256) -> dict[str, Any]:
    """The full model's mean gradient (cell ``cell`` w.r.t. the stimulus window) over the movie
    ``z``, split into temporal and spatial parts; ``center`` (row, col) of the spatial peak."""
    zt = torch.as_tensor(np.asarray(z, dtype=np.float32))
    H = circuit.history
    N = int(zt.shape[0]) - H
    idx = np.unique(np.linspace(0, N - 1, min(N, max_windows)).round().astype(int))
    m = circuit.model
    shape = (H, *m.input_hw) if circuit.kind == "cnn" else (H,)
    x = torch.stack([zt[i : i + H].reshape(shape) for i in idx]).requires_grad_(True)
    f = circuit.forward_from_pre1(circuit.pre1_windows(x))[:, cell]
    (g,) = torch.autograd.grad(f.mean(), x)
    filt = g.sum(0).detach().numpy()
    temporal, spatial, energy = split_filter(filt)
    center = None
    if circuit.kind == "cnn":
        r, c = np.unravel_index(int(np.argmax(spatial)), spatial.shape)
        center = (int(r), int(c))
    return {"temporal": temporal, "spatial": spatial, "center": center, "rank1_energy": energy, "polarity": filter_polarity(temporal)}


def spot_polarity(predict: Callable[[np.ndarray], np.ndarray], fitted: Any, cell: int, center: tuple[int, int] | None) -> dict[str, Any]:
    """ON/OFF from the response to a bright and a dark spot step at ``center`` (see module docstring)."""
    from ..probes.base import stimulus_levels
    from ..probes.stimuli import pulses, to_raw

    levels = stimulus_levels(fitted)
    H, dt = fitted.history, fitted.frame_dt
    D = max(2, int(round(SPOT_SECONDS / dt)))
    lead = H + 5
    T = lead + D + 1
    fs = fitted.frame_shape
    rises = {}
    for name, sign in (("bright", 1.0), ("dark", -1.0)):
        trace = pulses(T, [lead], D, sign)
        if len(fs) == 2 and center is not None:
            Hh, W = fs
            rad = max(1.0, W / 16.0)
            yy, xx = np.mgrid[0:Hh, 0:W]
            spot = ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= rad**2).astype(np.float64)
            movie = trace[:, None, None] * spot[None]
            raw = to_raw(movie, levels, fs)
        else:
            raw = to_raw(trace, levels, fs)
        r = predict(raw)[:, cell] / dt
        rises[name] = float(np.nanmax(r[lead + 1 :]) - np.nanmean(r[H : lead + 1]))
    b, d = rises["bright"], rises["dark"]
    pol = "none" if max(b, d) <= 0 else ("ON" if b > d else "OFF")
    denom = abs(b) + abs(d)
    return {"polarity": pol, "bright_rise_hz": b, "dark_rise_hz": d, "index": (b - d) / denom if denom > 0 else 0.0}


def test_scores(preds: dict[str, np.ndarray], repeats: np.ndarray, cell: int) -> dict[str, float]:
    """Pearson r of each prediction ``(T, n_cells)`` with the trial average of ``repeats``
    ``(R, T, n_cells)`` for column ``cell``, on the bins that have a prediction."""
    from ..evaluation.metrics import score

    out = {}
    for name, p in preds.items():
        s = score(p[:, [cell]], repeats[:, :, [cell]], min_reliability=0.0)
        out[name] = float(s["r"][0])
    return out


def load_test(fitted: Any, data: Any) -> tuple[Any, str | None]:
    """The recording to score on (``data``: a Recording, a path, or None for the run's own) and a
    note when it cannot be had (then ``None``)."""
    from ..recording import Recording

    if isinstance(data, Recording):
        rec = data
    else:
        source = data if data is not None else fitted.meta.get("data_source")
        if not source or str(source).startswith("<"):
            return None, "the run was fit on an in-memory recording; pass --data to score the reduced model on its test segment"
        try:
            from ..io import load_recording
            from ..sample import resolve_sample

            rec = load_recording(resolve_sample(str(source)))
        except (DataError, OSError) as exc:
            if data is not None:
                raise
            return None, f"the run's recording '{source}' cannot be read ({exc}); pass --data"
    if rec.test is None:
        return None, "the recording has no repeated test segment"
    ids = [int(c) for c in rec.cell_ids]
    missing = [c for c in fitted.cell_ids if c not in ids]
    if missing:
        raise DataError(f"the model's cells {missing} are not in the recording", str(rec.provenance.get("source", "<memory>")), "pass the recording the model was fit on")
    return rec, None


def cell_index(fitted: Any, cell: int | None) -> int:
    """Output index of cell id ``cell`` (the only cell when the model has one)."""
    ids = fitted.cell_ids
    if cell is None:
        if len(ids) == 1:
            return 0
        raise ConfigError("no --cell given", "retinakit reduce", f"choose one of the model's cells: {', '.join(map(str, ids))}")
    if int(cell) not in ids:
        raise ConfigError(f"cell {cell} is not in the model", "--cell", f"the model's cells are {', '.join(map(str, ids))}")
    return ids.index(int(cell))


def check_layer(layer: str) -> str:
    """``layer`` if it is one of :data:`LAYER_CHOICES`."""
    if str(layer) not in LAYER_CHOICES:
        raise ConfigError(f"unknown layer '{layer}'", "--layer", f"use one of {', '.join(LAYER_CHOICES)}")
    return str(layer)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r over the finite bins of both (None when either is constant)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def analyse(fitted: Any, stimulus: str = "natural", cell: int | None = None, top: int = DEFAULT_TOP, layer: str = DEFAULT_LAYER,
            params: dict[str, Any] | None = None, data: Any = None, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Attribution, ranking, reduced model and scores (see module docstring). Returns the result
    dictionary (JSON-ready except for ``_arrays``, the traces the figures need)."""
    with torch.enable_grad():  # the attribution and the filters need autograd, whatever the caller's mode
        return _analyse(fitted, stimulus, cell, top, layer, params, data, tolerance)


def _analyse(fitted: Any, stimulus: str, cell: int | None, top: int, layer: str, params: dict[str, Any] | None, data: Any, tolerance: float) -> dict[str, Any]:
    from . import stimuli as S

    circuit = Circuit(fitted)
    S.check_name(stimulus)
    layer = check_layer(layer)
    k = cell_index(fitted, cell)
    top = int(top)
    C1, C2 = circuit.channels
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}", "--top", "e.g. --top 3")
    max_c = min(C1, C2) if layer == "both" else (C1 if layer == "1" else C2)
    if top > max_c:
        raise ConfigError(f"--top {top} is more than the {max_c} channels of layer {layer}", "--top", f"use at most {max_c}")
    p = S.resolve(params)
    rec, note = load_test(fitted, data)
    if stimulus == "natural" and rec is None:
        raise ConfigError(f"stimulus 'natural' needs the recording's test movie: {note}", "--stimulus natural", "pass --data REC or choose a synthetic stimulus")
    notes = [note] if note else []
    test_raw = None if rec is None else np.asarray(rec.test.stimulus)
    dt, H = fitted.frame_dt, fitted.history

    # the reference movie: clamping values, receptive field (test movie, else the stimulus)
    first = S.build(stimulus, fitted, p, "ON", None, test_raw) if test_raw is None else None
    ref_raw = test_raw if test_raw is not None else first.raw  # type: ignore[union-attr]
    ref_z = fitted.normalise(ref_raw)
    rf = receptive_field(circuit, ref_z, k)
    full_pol = spot_polarity(fitted.predict, fitted, k, rf["center"])
    stim = S.build(stimulus, fitted, p, full_pol["polarity"], rf["center"], test_raw)
    z = fitted.normalise(stim.raw)

    att = integrated_gradients(circuit, z, k, tolerance=tolerance)
    out_full = att.output / dt  # Hz per window
    if stim.event < 0:
        stim.event = int(np.argmax(out_full)) + H
    ranking = {lay: rank_channels(att, lay, dt) for lay in (1, 2)}
    means = unit_means(circuit, ref_z)
    keep = keep_sets(ranking, layer, top)
    reduced = ReducedModel(circuit, keep, means)
    resp_full = fitted.predict(stim.raw)[:, k] / dt
    resp_red = reduced.predict(stim.raw)[:, k] / dt
    result: dict[str, Any] = {
        "cell": fitted.cell_ids[k], "stimulus": stimulus, "stimulus_params": p, "stimulus_info": stim.info, "event_frame": stim.event,
        "event_label": stim.event_label, "event_time_s": (stim.event - H) * dt, "layer": layer, "top": top, "frame_dt_s": dt, "channels": {"layer1": C1, "layer2": C2},
        "model_kind": circuit.kind,
        "attribution": {"method": "integrated gradients (path in stimulus space from the mean stimulus; trapezoid rule)", "baseline": "mean stimulus",
                        "tolerance": tolerance, "max_completeness_error": att.max_error, "steps_min": int(att.steps.min()), "steps_max": int(att.steps.max()),
                        "baseline_rate_hz": att.baseline / dt},
        "ranking": {"layer1": ranking[1], "layer2": ranking[2]},
        "kept": {f"layer{lay}": ch for lay, ch in keep.items()},
        "clamp_reference": "test movie" if test_raw is not None else f"the {stimulus} stimulus (no recording)",
        "receptive_field": {"center": rf["center"], "polarity_of_filter": rf["polarity"]},
        "polarity": {"full": full_pol},
        "stimulus_response": {"r_reduced_vs_full": pearson(resp_full, resp_red)},
        "notes": notes,
    }
    red_pol = spot_polarity(reduced.predict, fitted, k, rf["center"])
    result["polarity"]["reduced"] = red_pol
    result["polarity"]["kept"] = bool(red_pol["polarity"] == full_pol["polarity"])

    sweep: list[dict[str, Any]] = []
    if rec is not None:
        cols = [int(c) for c in rec.cell_ids]
        sel = [cols.index(c) for c in fitted.cell_ids]
        reps = rec.test.repeats if rec.test.repeats is not None else rec.test.counts[None]
        reps = np.asarray(reps)[:, :, sel]
        full_test = fitted.predict(test_raw)
        red_test = reduced.predict(test_raw)
        sc = test_scores({"full": full_test, "reduced": red_test}, reps, k)
        result["test"] = {"r_full": sc["full"], "r_reduced": sc["reduced"], "fraction_of_full_r": sc["reduced"] / sc["full"] if sc["full"] else None,
                          "r_reduced_vs_full": pearson(full_test[:, k], red_test[:, k]), "bins": int(np.isfinite(full_test[:, k]).sum())}
        for kk in range(1, max_c + 1):
            rm = ReducedModel(circuit, keep_sets(ranking, layer, kk), means)
            s = test_scores({"r": rm.predict(test_raw)}, reps, k)["r"]
            sweep.append({"top": kk, "r_reduced": s, "fraction_of_full_r": s / sc["full"] if sc["full"] else None})
        result["test"]["by_top"] = sweep
        mean_resp = reps[:, :, k].mean(0) / dt
        arrays_test = {"time_s": np.arange(test_raw.shape[0]) * dt, "recorded_hz": mean_resp, "full_hz": full_test[:, k] / dt, "reduced_hz": red_test[:, k] / dt}
    else:
        result["test"] = None
        arrays_test = None

    # filters of the top channels (at the unit that matters most for this cell)
    top_rows = []
    for lay in (1, 2):
        rows = ranking[lay][:top]
        units = []
        for row in rows:
            um = att.units[lay][row["channel"]]
            pos = tuple(int(i) for i in np.unravel_index(int(np.argmax(um)), um.shape))
            units.append((row["channel"], pos))
        filt = circuit.effective_filters(lay, units, ref_z)
        for row, (ch, pos), f in zip(rows, units, filt):
            temporal, spatial, energy = split_filter(f)
            entry = dict(row, position=list(pos), polarity=filter_polarity(temporal), rank1_energy=energy)
            entry["_temporal"], entry["_spatial"] = temporal, spatial
            top_rows.append(entry)
    result["top_channels"] = [{kk: v for kk, v in r.items() if not kk.startswith("_")} for r in top_rows]
    t = (np.arange(H, z.shape[0]) - stim.event) * dt
    result["_arrays"] = {"t": t, "contrib1": att.channels[1] / dt, "contrib2": att.channels[2] / dt, "full": resp_full[H:], "reduced": resp_red[H:],
                         "contrast": _stimulus_trace(stim, z, rf["center"])[H:], "contrast_label": "contrast" if stim.contrast is not None else "stimulus at RF centre (z)",
                         "top": top_rows, "test": arrays_test,
                         "rf_temporal": rf["temporal"], "completeness_error": att.error}
    return result


def _stimulus_trace(stim: Any, z: np.ndarray, center: tuple[int, int] | None) -> np.ndarray:
    """What the stimulus panel shows: the full-field contrast trace, else the z-scored stimulus at
    the receptive-field centre pixel (the frame mean without a centre)."""
    if stim.contrast is not None:
        return np.asarray(stim.contrast, dtype=np.float64)
    zz = np.asarray(z, dtype=np.float64).reshape(z.shape[0], -1) if center is None else np.asarray(z, dtype=np.float64)[:, center[0], center[1]][:, None]
    return zz.mean(1)


def json_ready(result: dict[str, Any]) -> dict[str, Any]:
    """The result without the figure arrays, with the contributions over time of every channel."""
    out = {k: v for k, v in result.items() if not k.startswith("_")}
    a = result["_arrays"]
    out["contributions"] = {"time_s": a["t"].tolist(), "unit": "Hz (contribution to the cell's rate)", "layer1": a["contrib1"].T.tolist(), "layer2": a["contrib2"].T.tolist(),
                            "full_hz": a["full"].tolist(), "reduced_hz": a["reduced"].tolist(), "completeness_error": a["completeness_error"].tolist()}
    return out


def run_reduce(fitted: Any, out_dir: str | Path, stimulus: str = "natural", cell: int | None = None, top: int = DEFAULT_TOP, layer: str = DEFAULT_LAYER,
               params: dict[str, Any] | None = None, data: Any = None, source: str | None = None) -> dict[str, Any]:
    """:func:`analyse`, then write ``result.json`` and the figures into ``out_dir``; returns the JSON result."""
    from .._version import __version__
    from ..atomic import ensure_dir, write_json
    from ..probes.base import model_info
    from .figures import write_figures

    result = analyse(fitted, stimulus=stimulus, cell=cell, top=top, layer=layer, params=params, data=data)
    out = ensure_dir(out_dir)
    figs = write_figures(result, out)
    body = json_ready(result)
    body = {"retinakit_version": __version__, "source": source, "model": model_info(fitted), **body, "figures": figs}
    write_json(out / "result.json", body)
    body["out_dir"] = str(out)
    return body


def format_summary(result: dict[str, Any]) -> str:
    """One screen of text: ranking, kept channels, reduced vs full."""
    lines = [f"cell {result['cell']}  stimulus {result['stimulus']}  ({result['model_kind']}, layers of {result['channels']['layer1']} and {result['channels']['layer2']} channels)"]
    a = result["attribution"]
    lines.append(f"integrated gradients: completeness error {a['max_completeness_error']:.2%} at most (tolerance {a['tolerance']:.0%}), {a['steps_min']}-{a['steps_max']} path steps")
    top_ids = {(r["layer"], r["channel"]): r for r in result.get("top_channels", [])}
    for lay in (1, 2):
        rows = result["ranking"][f"layer{lay}"]
        lines.append(f"layer {lay} ranking (share of the layer's |contribution|; mean |contribution| and mean net contribution in Hz):")
        for r in rows:
            extra = top_ids.get((lay, r["channel"]))
            pol = f"  filter {extra['polarity']}" if extra else ""
            lines.append(f"  #{r['rank']}  channel {r['channel']:>2}  {r['share']:6.1%}  |c| {r['mean_abs_hz']:7.3f}  net {r['mean_net_hz']:+8.3f}{pol}")
    kept = ", ".join(f"layer {k[-1]}: {v}" for k, v in result["kept"].items())
    lines.append(f"reduced model: top {result['top']} of layer {result['layer']} kept ({kept}); others clamped at their mean over the {result['clamp_reference']}")
    rs = result["stimulus_response"]["r_reduced_vs_full"]
    lines.append(f"  response to the stimulus: r(reduced, full) = {rs:.3f}" if rs is not None else "  response to the stimulus: constant")
    pf, pr = result["polarity"]["full"], result["polarity"]["reduced"]
    lines.append(f"  polarity (spot steps): full {pf['polarity']} (index {pf['index']:+.2f}), reduced {pr['polarity']} (index {pr['index']:+.2f})")
    t = result.get("test")
    if t:
        lines.append(f"  test segment: r full {t['r_full']:.3f}, reduced {t['r_reduced']:.3f} ({t['fraction_of_full_r']:.2f} of full); r(reduced, full) {t['r_reduced_vs_full']:.3f}")
        lines.append("  reduced r by top K: " + "  ".join(f"K={s['top']}: {s['r_reduced']:.3f}" for s in t["by_top"]))
    for n in result.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)
