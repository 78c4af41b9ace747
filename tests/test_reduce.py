"""`retinakit reduce`: integrated gradients to model interneurons and the reduced model.

Known answers: attributions are complete (they sum to the output change) on a fitted model;
a planted network whose output depends on two known channels per layer ranks them first and is
reproduced by its 2-channel reduced model; the LN model is refused with a clear message.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_recording
from test_probes_models import meta_for

from retinakit.cli import main
from retinakit.errors import ConfigError, ModelError
from retinakit.mechanisms import reduce
from retinakit.mechanisms.attribution import integrated_gradients
from retinakit.mechanisms.circuit import Circuit
from retinakit.models.fitted import FittedModel

torch.set_num_threads(1)

RELEVANT_1 = (1, 4)  # first-layer channels the planted output depends on
RELEVANT_2 = (2, 5)  # second-layer channels the readout reads


def planted_cnn(seed: int = 0) -> FittedModel:
    """A 6+6-channel CNN on 8x8 frames whose output reads only second-layer channels 2 and 5,
    which in turn take input only from first-layer channels 1 and 4. Every other channel is
    active (positive biases) but irrelevant to the output."""
    from retinakit.models.cnn import CNN

    torch.manual_seed(seed)
    m = CNN(10, (8, 8), 1, filters=(6, 6), kernels=((3, 3), (3, 3))).eval()
    with torch.no_grad():
        m.conv1.weight.mul_(3.0)
        m.conv1.bias.fill_(0.2)
        m.conv2.bias.fill_(0.1)
        for j in range(6):
            if j not in RELEVANT_1:
                m.conv2.weight[list(RELEVANT_2), j] = 0.0
        h2 = m.dense.weight.shape[1] // 6
        w = m.dense.weight.view(1, 6, h2)
        for c in range(6):
            if c not in RELEVANT_2:
                w[:, c] = 0.0
            else:
                w[:, c] = w[:, c].abs() * 4.0
    return FittedModel(m, meta_for(10, (8, 8), 1, "cnn", m.spec()))


def planted_tcnn(seed: int = 0) -> FittedModel:
    """The same planting in the temporal CNN (full-field): readout from layer-2 channels 2 and 5,
    which read only layer-1 channels 1 and 4."""
    from retinakit.models.temporal_cnn import TemporalCNN

    torch.manual_seed(seed)
    m = TemporalCNN(20, 1, (6, 6), (6, 5), batchnorm=False).eval()
    with torch.no_grad():
        m.conv1.weight.mul_(3.0)
        m.conv1.bias.fill_(0.2)
        m.conv2.bias.fill_(0.1)
        for j in range(6):
            if j not in RELEVANT_1:
                m.conv2.weight[list(RELEVANT_2), j] = 0.0
        for c in range(6):
            if c not in RELEVANT_2:
                m.dense.weight[:, c] = 0.0
            else:
                m.dense.weight[:, c] = m.dense.weight[:, c].abs() * 4.0
    return FittedModel(m, meta_for(20, (), 1, "tcnn", m.spec()))


@pytest.mark.parametrize("make", [planted_cnn, planted_tcnn], ids=["cnn", "temporal-cnn"])
def test_planted_network_ranks_its_two_channels_first_and_two_reproduce_it(make, tmp_path: Path) -> None:
    fitted = make()
    shape = fitted.frame_shape
    rec = make_recording(frame_shape=shape, n_cells=1, train_bins=50, test_bins=400, n_repeats=4, seed=3)
    res = reduce(fitted, stimulus="natural", cell=1, top=2, layer="both", data=rec, out=tmp_path)
    assert {r["channel"] for r in res["ranking"]["layer1"][:2]} == set(RELEVANT_1)
    assert {r["channel"] for r in res["ranking"]["layer2"][:2]} == set(RELEVANT_2)
    for r in res["ranking"]["layer2"][2:]:
        assert r["share"] == 0.0  # no gradient reaches an unread channel
    assert res["stimulus_response"]["r_reduced_vs_full"] > 0.99
    assert res["test"]["r_reduced_vs_full"] > 0.99
    # the reduced model IS the full model here: same responses, to float precision
    full = np.asarray(res["contributions"]["full_hz"])
    red = np.asarray(res["contributions"]["reduced_hz"])
    assert np.allclose(full, red, rtol=1e-4, atol=1e-6)
    # keeping one wrong channel instead changes the response
    res1 = reduce(fitted, stimulus="natural", cell=1, top=1, layer="2", data=rec, out=tmp_path / "k1")
    assert res1["test"]["r_reduced_vs_full"] < 0.999
    # every output file is there and strict JSON
    doc = json.loads((tmp_path / "result.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert doc["kept"] == {"layer1": res["kept"]["layer1"], "layer2": res["kept"]["layer2"]}
    for f in doc["figures"]:
        assert (tmp_path / f).stat().st_size > 1000


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNN (bn-cnn, 4+4 filters, history 10, 2 epochs) fit by `run_fit` to an 8x8 white-noise recording."""
    from retinakit.pipeline import run_fit
    from retinakit.io import save_recording

    root = tmp_path_factory.mktemp("reduce_run")
    data = root / "tiny.h5"
    save_recording(make_recording(frame_shape=(8, 8), n_cells=2, train_bins=1500, test_bins=200, n_repeats=4), data)
    run_fit(data, root / "run", {"model": "bn-cnn", "history": 10, "max_epochs": 2, "filters": [4, 4]}, progress=False)
    return root / "run"


def test_attributions_of_a_fitted_model_sum_to_the_output_change(fitted_run: Path) -> None:
    from retinakit.fitting.run_folder import load_run

    fitted = load_run(fitted_run)
    circuit = Circuit(fitted)
    rng = np.random.default_rng(1)
    raw = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(150, 8, 8))
    z = fitted.normalise(raw)
    for cell in range(2):
        att = integrated_gradients(circuit, z, cell, tolerance=0.01)
        delta = att.output - att.baseline
        # the output itself is the model's (same function as predict)
        assert np.allclose(att.output, fitted.predict(raw)[10:, cell], rtol=1e-4, atol=1e-6)
        floor = 0.05 * np.abs(delta).max()
        for layer in (1, 2):
            err = np.abs(att.channels[layer].sum(1) - delta)
            assert np.all(err <= 0.01 * np.maximum(np.abs(delta), floor) + 1e-9)
        # in aggregate, well inside 1 %
        assert np.abs(att.channels[1].sum(1) - delta).sum() <= 0.01 * np.abs(delta).sum()


def test_reduce_command_on_a_fitted_run_and_refuses_the_ln(fitted_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["reduce", str(fitted_run), "--cell", "1", "-s", "osr", "--top", "2", "-q"])
    assert res.exit_code == 0, res.output
    assert "layer 1 ranking" in res.output and "test segment: r full" in res.output
    doc = json.loads((fitted_run / "mechanisms" / "osr-cell1" / "result.json").read_text())
    assert doc["attribution"]["max_completeness_error"] <= 0.01
    assert doc["event_label"] == "omitted flash" and doc["test"]["bins"] > 0
    assert len(doc["contributions"]["layer1"]) == 4 and len(doc["contributions"]["layer1"][0]) == len(doc["contributions"]["time_s"])
    # bad input: one line, exit 2
    for args, msg in ((["--cell", "9"], "cell 9 is not in the model"), (["--cell", "1", "-s", "flicker"], "unknown stimulus"),
                      (["--cell", "1", "--top", "5"], "--top 5"), (["--cell", "1", "-p", "period=-1"], "out of range")):
        r = runner.invoke(main, ["reduce", str(fitted_run), *args, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and r.output.startswith("error: ") and msg in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)


def test_ln_model_has_nothing_to_reduce(tmp_path: Path) -> None:
    from retinakit.models.ln import LN

    m = LN(10, (8, 8), 1).eval()
    fitted = FittedModel(m, meta_for(10, (8, 8), 1, "ln", m.spec()))
    with pytest.raises(ModelError, match="LN model.*no hidden layer.*nothing to reduce"):
        reduce(fitted, stimulus="step", cell=1, out=tmp_path)


def test_natural_stimulus_needs_the_recording(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs the recording's test movie"):
        reduce(planted_cnn(), stimulus="natural", cell=1, out=tmp_path)


@pytest.mark.parametrize("stimulus", ["osr", "step", "paired-flash", "reversing-grating", "motion", "contrast"])
def test_every_probe_stimulus_runs_with_its_event(stimulus: str, tmp_path: Path) -> None:
    with torch.no_grad():  # the caller's autograd mode does not matter
        res = reduce(planted_cnn(), stimulus=stimulus, cell=1, top=2, layer="both", out=tmp_path)
    t = np.asarray(res["contributions"]["time_s"])
    assert t.min() < 0 <= t.max() or math.isclose(t.min(), 0.0)  # the event lies inside the attributed stretch
    assert res["attribution"]["max_completeness_error"] <= 0.01
    assert res["test"] is None and any("in-memory" in n for n in res["notes"])
