"""`retinakit probe` and `retinakit check` end to end on models fit by `run_fit` to a tiny recording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_recording
from test_probes_run import FAST, strict_json

from retinakit.cli import main
from retinakit.probes import probe_names


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny CNN and LN fit (8x8 white noise, history 10, 1 epoch) with `run_fit`."""
    from retinakit.pipeline import run_fit
    from retinakit.io import save_recording

    root = tmp_path_factory.mktemp("probe_runs")
    data = root / "tiny.h5"
    save_recording(make_recording(frame_shape=(8, 8), n_cells=3, train_bins=1200, test_bins=150, n_repeats=4), data)
    out = {}
    for model in ("cnn", "ln"):
        run_fit(data, root / model, {"model": model, "history": 10, "max_epochs": 1, "filters": [4, 4]} if model == "cnn" else {"model": model, "history": 10},
                progress=False)
        out[model] = root / model
    return out


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


@pytest.mark.parametrize("name", probe_names())
def test_probe_command_runs_every_stimulus_on_a_fitted_cnn(runs: dict[str, Path], name: str) -> None:
    args = ["probe", str(runs["cnn"]), "--stimulus", name, "-q"]
    for k, v in FAST[name].items():
        args += ["--param", f"{k}={v}"]
    code, out = invoke(*args)
    assert code == 0, out
    res_file = runs["cnn"] / "probes" / name / "result.json"
    doc = strict_json(res_file)  # no NaN/Infinity
    assert doc["probe"] == name and doc["source"] == str(runs["cnn"]) and doc["model"]["kind"] == "cnn"
    assert doc["model"]["cell_ids"] == [1, 2, 3] and len(doc["cells"]) == 3
    assert "results: " in out
    for fig in doc["figures"]:
        assert (res_file.parent / fig).stat().st_size > 1000


def test_probe_works_on_an_ln_run_and_a_model_file(runs: dict[str, Path], tmp_path: Path) -> None:
    code, out = invoke("probe", str(runs["ln"] / "model.pt"), "-s", "osr", "-p", "periods=0.05,0.1,0.15", "--out", str(tmp_path / "o"), "--json", "-q")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["model"]["kind"] == "ln" and len(doc["periods"]) == 3
    assert (tmp_path / "o" / "result.json").is_file()


def test_check_command_and_fit_records_the_checks(runs: dict[str, Path], tmp_path: Path) -> None:
    code, out = invoke("check", str(runs["cnn"]), "--out", str(tmp_path / "check.json"))
    assert code == 0, out
    assert "all checks passed" in out and "PASS  causality" in out
    assert json.loads((tmp_path / "check.json").read_text())["passed"] is True
    metrics = json.loads((runs["cnn"] / "metrics.json").read_text())
    assert metrics["checks"]["passed"] is True  # `retinakit fit` runs check_model at the end


def test_probe_list_and_bad_input_exit_2(runs: dict[str, Path], tmp_path: Path) -> None:
    code, out = invoke("probe", "--list")
    assert code == 0 and "osr: " in out and "motion-anticipation: " in out
    code, out = invoke("probe", "--list", "-s", "step")
    assert code == 0 and out.startswith("step: ") and "osr" not in out
    for args, msg in [
        (["probe", str(runs["cnn"])], "no --stimulus"),
        (["probe", "-s", "osr"], "no RUN"),
        (["probe", str(runs["cnn"]), "-s", "omitted"], "unknown probe stimulus"),
        (["probe", str(runs["cnn"]), "-s", "osr", "-p", "contrast"], "is not KEY=VALUE"),
        (["probe", str(runs["cnn"]), "-s", "osr", "-p", "windw=0.2"], "did you mean 'window'"),
        (["probe", str(tmp_path / "nope"), "-s", "osr"], "does not exist"),
        (["probe", str(tmp_path), "-s", "step"], "is an empty folder, not a run"),
        (["check", str(tmp_path)], "is an empty folder, not a run"),
    ]:
        code, out = invoke(*args)
        assert code == 2, (args, out)
        assert out.startswith("error: ") and msg in out and len(out.strip().splitlines()) == 1, out


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CNN (history 10, 2+2 filters, 1 epoch, 2 cells) fit to the bundled natural-scene sample."""
    from retinakit.pipeline import run_fit
    from retinakit.sample import sample_path

    out = tmp_path_factory.mktemp("sample_run") / "cnn"
    run_fit(sample_path(), out, {"model": "cnn", "history": 10, "filters": [2, 2], "max_epochs": 1, "cells": [1, 2]}, progress=False)
    return out


def test_every_probe_runs_on_a_cnn_fit_to_the_bundled_sample(sample_run: Path) -> None:
    for name in probe_names():
        args = ["probe", str(sample_run), "--stimulus", name, "-q"]
        for k, v in FAST[name].items():
            args += ["--param", f"{k}={v}"]
        code, out = invoke(*args)
        assert code == 0, (name, out)
        doc = strict_json(sample_run / "probes" / name / "result.json")
        assert doc["probe"] == name and doc["model"]["cell_ids"] == [1, 2]
        assert doc["model"]["frame_shape"] == [32, 32]


def test_probe_compare_prints_model_vs_truth_for_every_probe_on_the_bundled_sample(sample_run: Path) -> None:
    """`probe SAMPLE --stimulus all --compare RUN`: every probe, model | truth per modelled cell; the
    truth's step classes are the simulated cells' own polarities."""
    from retinakit.sample import sample_path
    from retinakit.simulate.truth import simulation_provenance

    sample = sample_path()
    code, out = invoke("probe", "sample", "--stimulus", "all", "--compare", str(sample_run), "-q")  # `sample` names the bundled recording
    assert code == 0, out
    for name in probe_names():
        assert f"{name}: model | truth per cell" in out
    truth = {c["id"]: c["polarity"] for c in simulation_provenance(sample)["cells"]}
    step = strict_json(sample_run / "probes" / "step" / "vs-truth" / "truth" / "result.json")
    assert [c["class"] for c in step["cells"]] == [truth[1], truth[2]]
    assert step["model"]["kind"] == "truth" and step["model"]["history_frames"] == 10  # the model's protocol
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert len(rows) == 2 * len(probe_names())


def test_probe_on_a_simulation_and_bad_compare_pairs(runs: dict[str, Path], tmp_path: Path) -> None:
    from retinakit.simulate import SimulationSpec, simulate_to_file

    sim = tmp_path / "sim.h5"
    simulate_to_file(SimulationSpec(stimulus="fullfield", n_cells=3, minutes=0.5, test_seconds=2.0, n_repeats=2), sim, progress=False)
    code, out = invoke("probe", str(sim), "-s", "step", "-q", "-p", "duration=0.2")
    assert code == 0, out
    assert "ground truth" in out and (tmp_path / "probes-sim" / "step" / "result.json").is_file()
    code, out = invoke("probe", str(runs["cnn"]), "-s", "step", "--compare", str(runs["ln"]), "-q")
    assert code == 2 and "one run and one simulated recording" in out
    code, out = invoke("probe", str(sim), "-s", "step", "--compare", str(runs["cnn"]), "-q")
    assert code == 2 and "was not fit to this simulation" in out
