"""The test repeats are never seen in training: permuting them changes nothing in a fit except its scores.

A tiny bn-cnn and the LN are fit twice on a small simulated recording, the second time with the
test repeats shuffled (repeat order and time bins; the test counts, rates and true rates follow the
same time shuffle), with ``deterministic=True``. Weights, training logs (timings aside) and the
LN's per-cell choices must be identical; only the test scores may differ.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retinakit.evaluation.compare import compare_runs, format_compare_table
from retinakit.fitting.run_folder import load_run
from retinakit.pipeline.runs import run_fit
from retinakit.recording import Recording, Split
from retinakit.simulate import SimulationSpec, simulate

TIMING_KEYS = {"seconds", "fit_seconds", "wall_seconds"}
OPTIONS = {"history": 8, "max_epochs": 2, "batch_size": 256, "chunk_len": 50, "filters": [2, 2], "seed": 3,
           "deterministic": True, "device": "cpu", "val_blocks": 3}


@pytest.fixture(scope="module")
def recordings() -> tuple[Recording, Recording]:
    spec = SimulationSpec(stimulus="whitenoise", size=(10, 10), n_cells=3, minutes=0.5, test_seconds=2.0, n_repeats=5, seed=11,
                          cell_types=("ON sustained", "OFF sustained", "ON-OFF transient"))
    rec = simulate(spec, progress=False).recording
    rng = np.random.default_rng(0)
    te = rec.test
    order, bins = rng.permutation(te.n_repeats), rng.permutation(te.n_bins)
    test = Split(stimulus=te.stimulus.copy(), time=te.time.copy(), counts=te.counts[bins].copy(),
                 rates={k: v[bins].copy() for k, v in te.rates.items()}, repeats=te.repeats[order][:, bins].copy(),
                 true_rate=None if te.true_rate is None else te.true_rate[bins].copy())
    shuffled = Recording(train=copy.deepcopy(rec.train), test=test, cell_ids=rec.cell_ids.copy(), frame_dt=rec.frame_dt,
                         stimulus_kind=rec.stimulus_kind, provenance=copy.deepcopy(rec.provenance))
    return rec, shuffled


def _log(run: Path) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines if line.strip()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_run(run).model.state_dict()


def _fit_info(run: Path) -> dict:
    fit = json.loads((run / "metrics.json").read_text())["fit"]
    return {k: v for k, v in fit.items() if k not in TIMING_KEYS}


@pytest.mark.parametrize("model", ["bn-cnn", "ln"])
def test_shuffling_the_test_repeats_changes_nothing_in_training(recordings, tmp_path: Path, model: str) -> None:  # noqa: ANN001
    rec, shuffled = recordings
    a, b = tmp_path / "a", tmp_path / "b"
    ma = run_fit(rec, a, {**OPTIONS, "model": model}, progress=False, figures=False)
    mb = run_fit(shuffled, b, {**OPTIONS, "model": model}, progress=False, figures=False)
    wa, wb = _weights(a), _weights(b)
    assert list(wa) == list(wb)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{model}: weight {name} differs"
    assert _log(a) == _log(b) and len(_log(a)) >= 1
    assert _fit_info(a) == _fit_info(b)  # for the LN: method, validation r and every cell's crop/ridge/nonlinearity choice
    if model == "ln":
        assert isinstance(ma["fit"]["cells"], list) and len(ma["fit"]["cells"]) == rec.n_cells
    # the shuffle was real: the scores on the test segment moved
    ra, rb = np.array([c["r"] for c in ma["cells"]], dtype=float), np.array([c["r"] for c in mb["cells"]], dtype=float)
    assert not np.allclose(ra, rb)


def test_compare_reports_estimated_and_true_types(recordings, tmp_path: Path) -> None:  # noqa: ANN001
    rec, _ = recordings
    for model in ("bn-cnn", "ln"):
        run_fit(rec, tmp_path / model, {**OPTIONS, "model": model}, progress=False, figures=False)
    res = compare_runs(rec, tmp_path / "bn-cnn", tmp_path / "ln")
    truth = {c["id"]: c["polarity"] for c in rec.provenance["cells"]}
    assert [r["true_type"] for r in res["cells"]] == [truth[int(c)] for c in rec.cell_ids]
    assert all(r["type"] in ("ON", "OFF", "no STA") for r in res["cells"])
    assert set(res["summary"]["by_true_type"]) == set(truth.values())
    assert sum(g["n_cells"] for g in res["summary"]["by_type"].values()) == rec.n_cells
    text = format_compare_table(res)
    assert "median over reliable cells" in text and "by true type" in text
