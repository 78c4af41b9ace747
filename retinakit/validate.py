"""The built-in validation suite: simulated retinas unlike the bundled sample, fit with the defaults.

``retinakit validate`` simulates each case (:data:`CASES`: full-field flicker at 30 Hz with a
population the size of a real MEA recording, a 16x16 white-noise checkerboard, 50x50 natural
scenes, and full-field flicker whose contrast steps every few seconds shown to a retina that also
adapts slowly (seconds, beyond the CNN's window); other seeds and cell mixes than the bundled sample), fits the default CNN and the
default LN on it with :func:`retinakit.pipeline.compare.compare_ln`, and reports per case:

* the mean and median r/ceiling of each model over reliable cells, and on how many cells the
  CNN beats the LN;
* the r/ceiling of the ground truth itself (the simulated rate scored exactly like a model:
  close to 1 when the ceiling is estimated right);
* the CNN's r against the true rate (no spiking noise);
* fit times, and whether the CNN stopped by convergence or by budget;
* the recurrent CNN (``rcnn``, :mod:`retinakit.models.rcnn`; :data:`EXTRA_MODELS`) fit with the
  same options and scored on the same cells and bins as the CNN: its mean r/ceiling, on how many
  reliable cells it beats the CNN, its mean r/ceiling minus the CNN's on the strongly and the
  weakly contrast-adapting cells of the simulated retina (:data:`STRONG_ADAPTATION`), its r
  against the true rate, and its training time per epoch relative to the CNN's.

Everything is written to the output folder (one compare folder per case, ``validate.json``,
``validate.csv``, ``validate.png``); finished fits are reused, so an interrupted run continues.
``--quick`` runs small versions of the cases with a small training budget (for CI: it checks
that the suite runs, not how good the defaults are).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .atomic import write_json, write_text
from .errors import ConfigError


@dataclass(frozen=True)
class ValidationCase:
    """One simulated retina of the suite: simulator settings, and smaller ones for ``--quick``."""

    name: str
    description: str
    spec: dict[str, Any]
    quick: dict[str, Any] = field(default_factory=dict)


CASES: tuple[ValidationCase, ...] = (
    ValidationCase("fullfield-30hz", "full-field Gaussian flicker at 30 Hz, 233 cells, 11 min, 9 repeats of 20 s",
                   dict(stimulus="fullfield", frame_rate=30.0, minutes=11.0, n_cells=233, n_repeats=9, test_seconds=20.0, seed=101),
                   quick=dict(minutes=3.0, n_cells=40)),
    ValidationCase("whitenoise-16", "16x16 white-noise checkerboard at 100 Hz, 12 cells, 10 min, 10 repeats of 20 s",
                   dict(stimulus="whitenoise", size=(16, 16), frame_rate=100.0, minutes=10.0, n_cells=12, n_repeats=10, test_seconds=20.0, seed=102),
                   quick=dict(minutes=2.0, n_cells=6, test_seconds=10.0)),
    ValidationCase("naturalscene-50", "50x50 natural scenes at 100 Hz, 12 cells, 5 min, 10 repeats of 20 s",
                   dict(stimulus="naturalscene", size=(50, 50), frame_rate=100.0, minutes=5.0, n_cells=12, n_repeats=10, test_seconds=20.0, seed=103),
                   quick=dict(size=(24, 24), minutes=1.5, n_cells=6, test_seconds=10.0)),
    ValidationCase("fullfield-steps", "full-field Gaussian flicker at 100 Hz whose contrast steps every 2-8 s, a retina with slow "
                   "contrast adaptation (3 s) besides the fast one, 40 cells, 10 min, 10 repeats of 20 s",
                   dict(stimulus="fullfield", flicker="contrast-steps", slow_adaptation=1.0, frame_rate=100.0, minutes=10.0, n_cells=40, n_repeats=10,
                        test_seconds=20.0, seed=104),
                   quick=dict(minutes=2.0, n_cells=10)),
)

QUICK_FIT = {"max_steps": 150}

#: models fit besides compare-ln's CNN and LN, scored against the CNN on the same cells and bins
EXTRA_MODELS: tuple[str, ...] = ("rcnn",)
#: contrast-adaptation strength (simulator's ``a``) from which a cell counts as strongly adapting
STRONG_ADAPTATION = 20.0


def case_names() -> list[str]:
    """Names of the built-in cases, in order."""
    return [c.name for c in CASES]


def select_cases(names: list[str] | None) -> list[ValidationCase]:
    """The cases named (all when ``names`` is empty); a :class:`ConfigError` for an unknown name."""
    if not names:
        return list(CASES)
    known = {c.name: c for c in CASES}
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"unknown validation case {', '.join(repr(b) for b in bad)}", "--case", f"use one of {', '.join(known)}")
    return [known[n] for n in names]


def simulated_recording(case: ValidationCase, folder: Path, quick: bool, progress: bool) -> Path:
    """Simulate the case's recording into ``folder`` (reused when a file of the same spec exists)."""
    from .simulate.record import SimulationSpec, simulate_to_file

    kwargs = {**case.spec, **(case.quick if quick else {})}
    if "size" in kwargs:
        kwargs["size"] = tuple(kwargs["size"])
    spec = SimulationSpec(**kwargs).validate()
    tag = hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()[:10]
    path = folder / f"{case.name}{'-quick' if quick else ''}-{tag}.h5"
    if not path.is_file():
        simulate_to_file(spec, path, progress=progress)
    return path


def _truth_scores(rec: Any, cell_ids: list[int], min_reliability: float) -> dict[str, Any] | None:
    """The simulated true rate scored like a model on the test repeats (None without a true rate)."""
    from .evaluation.metrics import score

    test = rec.test
    if test is None or test.true_rate is None or test.repeats is None:
        return None
    lookup = {int(c): k for k, c in enumerate(rec.cell_ids)}
    cols = np.array([lookup[c] for c in cell_ids])
    return score(test.true_rate[:, cols], test.repeats[:, :, cols], min_reliability=min_reliability, cell_ids=cell_ids)


def _corr_with_truth(run: Path, rec: Any, cell_ids: list[int]) -> float | None:
    """Mean over cells of the model's r against the true rate (no spiking noise) on the test segment."""
    from .evaluation.metrics import predict_test
    from .fitting.run_folder import load_run
    from .spikes import pearson_columns

    if rec.test is None or rec.test.true_rate is None:
        return None
    fm = load_run(run)
    pred = predict_test(fm, rec.test.stimulus)
    lookup = {int(c): k for k, c in enumerate(rec.cell_ids)}
    idx = [fm.cell_ids.index(c) for c in cell_ids]
    truth = rec.test.true_rate[:, [lookup[c] for c in cell_ids]]
    keep = np.all(np.isfinite(pred[:, idx]), axis=1)
    r = pearson_columns(pred[keep][:, idx], truth[keep])
    r = r[np.isfinite(r)]
    return float(r.mean()) if r.size else None


def _adaptation_strength(rec: Any, cell_ids: list[int]) -> list[float] | None:
    """Each cell's contrast-adaptation strength in the simulated retina (``None`` when unknown)."""
    cells = rec.provenance.get("cells") if isinstance(rec.provenance, dict) else None
    if not isinstance(cells, list):
        return None
    by_id = {int(c["id"]): float(c["adaptation"]) for c in cells if isinstance(c, dict) and "id" in c and "adaptation" in c}
    return [by_id[c] for c in cell_ids] if all(c in by_id for c in cell_ids) else None


def _seconds_per_epoch(run: Path) -> float | None:
    """Mean wall time of a run's training epochs (from its log)."""
    from .fitting.run_folder import read_log

    sec = [float(e["seconds"]) for e in read_log(run) if e.get("epoch", 0) > 0 and "seconds" in e]
    return float(np.mean(sec)) if sec else None


def extra_model_scores(model: str, rec: Any, data: Path, folder: Path, opts: dict[str, Any], compare: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Fit ``model`` (reused when finished) into ``folder`` with the CNN's shared options and score it
    on the CNN's cells and bins; the ``<model>_*`` columns of a case row (see the module docstring)."""
    from .evaluation.compare import compare_runs
    from .fitting.run_folder import METRICS, is_finished, read_json
    from .pipeline import run_fit

    run = folder / model
    if not is_finished(run):
        run_fit(data, run, {**opts, "model": model}, resume=run.is_dir() and any(run.iterdir()), progress=progress)
    res = compare_runs(rec, run, Path(compare["ln_run"]))
    cnn_rows = {int(c["cell"]): c for c in compare["cells"]}
    rows = [r for r in res["cells"] if int(r["cell"]) in cnn_rows]
    ids = [int(r["cell"]) for r in rows]
    ok = np.array([bool(cnn_rows[c]["reliable"]) for c in ids], dtype=bool)
    new = np.array([r["cnn_r_norm"] if r["cnn_r_norm"] is not None else np.nan for r in rows], dtype=float)
    old = np.array([cnn_rows[c]["cnn_r_norm"] if cnn_rows[c]["cnn_r_norm"] is not None else np.nan for c in ids], dtype=float)
    both = ok & np.isfinite(new) & np.isfinite(old)
    strength = _adaptation_strength(rec, ids)

    def mean(v: np.ndarray, sel: np.ndarray) -> float | None:
        return float(np.mean(v[sel])) if bool(sel.any()) else None

    strong = both & (np.array(strength) >= STRONG_ADAPTATION) if strength is not None else np.zeros_like(both)
    weak = both & ~strong if strength is not None else np.zeros_like(both)
    fit = read_json(run / METRICS, "metrics").get("fit", {})
    per_epoch, cnn_per_epoch = _seconds_per_epoch(run), _seconds_per_epoch(Path(compare["cnn_run"]))
    return {
        f"{model}_r_norm": mean(new, both), f"{model}_cnn_r_norm": mean(old, both),
        f"{model}_r_norm_median": float(np.median(new[both])) if bool(both.any()) else None,
        f"n_{model}_better": int(np.sum(new[both] > old[both])), f"n_{model}_scored": int(both.sum()),
        f"{model}_minus_cnn_strong": mean(new - old, strong), f"n_{model}_strong": int(strong.sum()),
        f"{model}_minus_cnn_weak": mean(new - old, weak), f"n_{model}_weak": int(weak.sum()),
        f"{model}_r_true": _corr_with_truth(run, rec, ids),
        f"{model}_epochs": fit.get("epochs"), f"{model}_converged": bool(str(fit.get("stopped", "")).startswith("converged")),
        f"{model}_fit_s": fit.get("fit_seconds"), f"{model}_epoch_s": per_epoch,
        f"{model}_epoch_cost": per_epoch / cnn_per_epoch if per_epoch and cnn_per_epoch else None,
        f"{model}_run": str(run),
    }


def run_case(case: ValidationCase, out: Path, quick: bool = False, options: dict[str, Any] | None = None, progress: bool = True,
             models: tuple[str, ...] = EXTRA_MODELS) -> dict[str, Any]:
    """Simulate, fit the CNN and the LN (and ``models``) with the defaults (plus ``options``) and score one case."""
    from .fitting.run_folder import METRICS, read_json
    from .pipeline.compare import compare_ln
    from .io import load_recording

    t0 = time.perf_counter()
    data = simulated_recording(case, out / "data", quick, progress)
    opts = {**(QUICK_FIT if quick else {}), **(options or {})}
    result = compare_ln(data, out=out / case.name, options=opts, progress=progress)
    rec = load_recording(data)
    s = result["summary"]
    cells = result["cells"]
    ids = [int(c["cell"]) for c in cells]
    ok = np.array([c["reliable"] for c in cells], dtype=bool)

    def med(key: str) -> float | None:
        v = np.array([c[key] if c[key] is not None else np.nan for c in cells], dtype=float)[ok]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if v.size else None

    truth = _truth_scores(rec, ids, float(result.get("min_reliability", 0.3)))
    cnn_m = read_json(Path(result["cnn_run"]) / METRICS, "metrics")
    ln_m = read_json(Path(result["ln_run"]) / METRICS, "metrics")
    cnn_fit = cnn_m.get("fit", {})
    row = {
        "case": case.name + ("-quick" if quick else ""), "description": case.description, "data": str(data),
        "stimulus": rec.stimulus_kind, "frame_shape": list(rec.frame_shape), "frame_rate": round(1.0 / float(rec.frame_dt), 3),  # type: ignore[arg-type]
        "n_cells": s["n_cells"], "n_reliable": s["n_reliable"], "n_repeats": s["n_repeats"],
        "cnn_r_norm": s["mean_cnn_r_norm"], "ln_r_norm": s["mean_ln_r_norm"],
        "cnn_r_norm_median": med("cnn_r_norm"), "ln_r_norm_median": med("ln_r_norm"),
        "n_cnn_better": s["n_cnn_better"],
        "truth_r_norm": truth["summary"]["mean_r_norm"] if truth else None,
        "cnn_r_true": _corr_with_truth(Path(result["cnn_run"]), rec, ids),
        "cnn_model": cnn_m.get("model"), "cnn_geometry": cnn_m.get("geometry_note"),
        "cnn_epochs": cnn_fit.get("epochs"), "cnn_stopped": cnn_fit.get("stopped"),
        "cnn_converged": bool(str(cnn_fit.get("stopped", "")).startswith("converged")),
        "cnn_fit_s": cnn_fit.get("fit_seconds"), "ln_fit_s": ln_m.get("fit", {}).get("fit_seconds"),
        "compare": result["out"],
    }
    for model in models:
        shared = {k: v for k, v in opts.items() if k != "model"}
        row.update(extra_model_scores(model, rec, data, out / case.name, shared, result, progress))
    row["seconds"] = time.perf_counter() - t0
    return row


def run_validation(out: str | os.PathLike[str], cases: list[str] | None = None, quick: bool = False, options: dict[str, Any] | None = None,
                   progress: bool = True, on_case: Callable[[dict[str, Any]], None] | None = None,
                   models: tuple[str, ...] = EXTRA_MODELS) -> dict[str, Any]:
    """Run the suite (see the module docstring) into ``out``; write ``validate.json``/``.csv``/``.png``.
    ``models``: the models fit besides the CNN and the LN (default :data:`EXTRA_MODELS`; ``()`` for none)."""
    import platform

    import torch

    from ._version import __version__
    from .fitting.config import MODELS

    bad = [m for m in models if m not in MODELS or m in ("ln", "bn-cnn")]
    if bad:
        raise ConfigError(f"unknown extra validation model {', '.join(repr(b) for b in bad)}", "--models", "use rcnn, cnn or none")

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in select_cases(cases):
        row = run_case(case, folder, quick=quick, options=options, progress=progress, models=tuple(models))
        rows.append(row)
        if on_case is not None:
            on_case(row)
    doc = {"quick": quick, "options": options or {}, "models": list(models), "cases": rows, "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "cuda": torch.cuda.is_available(), "python": platform.python_version()}, "versions": {"retinakit": __version__, "torch": torch.__version__}}
    write_json(folder / "validate.json", doc)
    keys = ["case", "n_cells", "n_reliable", "n_repeats", "cnn_r_norm", "ln_r_norm", "cnn_r_norm_median", "ln_r_norm_median", "n_cnn_better",
            "truth_r_norm", "cnn_r_true", "cnn_epochs", "cnn_converged", "cnn_fit_s", "ln_fit_s", "seconds"]
    keys += [k for k in rows[0] if any(k.startswith(p) for p in [f"{m}_" for m in models] + [f"n_{m}_" for m in models]) and not k.endswith("_run")] if rows else []
    write_text(folder / "validate.csv", ",".join(keys) + "\n" + "".join(",".join("" if r[k] is None else str(r[k]) for k in keys) + "\n" for r in rows))
    validation_figure(rows, folder / "validate.png")
    doc["out"] = str(folder)
    return doc


def format_validation_table(rows: list[dict[str, Any]]) -> str:
    """The terminal table: one line per case."""
    def f(v: Any, w: int = 6) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, (int, float)) and v == v else f"{'-':>{w}}"

    lines = [f"{'case':<22} {'cells':>7} {'CNN r/c':>8} {'LN r/c':>7} {'CNN>LN':>7} {'truth r/c':>9} {'CNN r(true)':>11} "
             f"{'CNN fit':>8} {'LN fit':>7}  CNN stopped by"]
    for r in rows:
        cells = f"{r['n_reliable']}/{r['n_cells']}"
        lines.append(f"{r['case']:<22} {cells:>7} {f(r['cnn_r_norm'], 8)} {f(r['ln_r_norm'], 7)} {r['n_cnn_better']:>4}/{r['n_reliable']:<2} "
                     f"{f(r['truth_r_norm'], 9)} {f(r['cnn_r_true'], 11)} {r['cnn_fit_s'] or 0:>7.0f}s {r['ln_fit_s'] or 0:>6.0f}s  "
                     f"{'convergence' if r['cnn_converged'] else 'budget'} ({r['cnn_epochs']} epochs)")
    lines.append("r/c: mean r/ceiling over reliable cells; truth r/c: the simulated rate scored as a model (1 = the ceiling is right); "
                 "CNN r(true): r against the noise-free rate")
    models = sorted({k[: -len("_r_norm")] for r in rows for k in r if k.endswith("_r_norm") and k[: -len("_r_norm")] not in ("cnn", "ln", "truth")
                     and f"{k[: -len('_r_norm')]}_cnn_r_norm" in r})
    for m in models:
        lines.append("")
        lines.append(f"{'case':<22} {m + ' r/c':>9} {'CNN r/c':>8} {m + '>CNN':>9} {'d strong':>9} {'d weak':>8} {m + ' r(true)':>13} "
                     f"{'epoch cost':>10} {m + ' fit':>9}  {m} stopped by")
        for r in rows:
            better = f"{r[f'n_{m}_better']}/{r[f'n_{m}_scored']}"
            cost = f"{r[f'{m}_epoch_cost']:.1f}x" if r[f"{m}_epoch_cost"] else "-"
            lines.append(f"{r['case']:<22} {f(r[f'{m}_r_norm'], 9)} {f(r[f'{m}_cnn_r_norm'], 8)} {better:>9} {f(r[f'{m}_minus_cnn_strong'], 9)} "
                         f"{f(r[f'{m}_minus_cnn_weak'], 8)} {f(r[f'{m}_r_true'], 13)} {cost:>10} {r[f'{m}_fit_s'] or 0:>8.0f}s  "
                         f"{'convergence' if r[f'{m}_converged'] else 'budget'} ({r[f'{m}_epochs']} epochs)")
        lines.append(f"{m}: r/c over the cells reliable for both; d strong / d weak: mean r/c of {m} minus the CNN's on the strongly "
                     f"(a >= {STRONG_ADAPTATION:g}) / weakly contrast-adapting cells of the simulated retina; epoch cost: training time per epoch relative to the CNN")
    return "\n".join(lines)


def validation_figure(rows: list[dict[str, Any]], path: Path) -> Path:
    """Bars of CNN, LN and ground-truth r/ceiling per case."""
    from .atomic import save_figure
    from .figures import new_figure

    fig, ax = new_figure(1, 1, size=(1.6 + 1.5 * len(rows), 3.6))
    x = np.arange(len(rows))
    for k, (key, label, color) in enumerate((("ln_r_norm", "LN", "C0"), ("cnn_r_norm", "CNN", "C3"), ("truth_r_norm", "ground truth", "0.6"))):
        vals = [r[key] if r[key] is not None else np.nan for r in rows]
        ax.bar(x + (k - 1) * 0.27, vals, width=0.25, color=color, label=label)
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels([r["case"] for r in rows], fontsize=8)
    ax.set_ylabel("mean r / ceiling (reliable cells)")
    ax.set_ylim(0, 1.15)
    ax.set_title("retinakit validate: default models on simulated retinas", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    return path
