"""Training to convergence: the step budget, the stop reason, batch norm over real rows, L1 per cell."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import make_recording
from retinakit.cli import main
from retinakit.pipeline import run_fit
from retinakit.fitting.config import FitConfig
from retinakit.fitting.train import activity_l1, budget_epochs
from retinakit.models.cnn import CNN
from retinakit.models.temporal_cnn import TemporalCNN

TINY = {"history": 6, "batch_size": 400, "chunk_len": 50, "filters": [4, 4]}


def test_budget_follows_the_data() -> None:
    cfg = FitConfig.from_dict({"max_steps": 1000})
    assert budget_epochs(cfg, 10) == 100  # a short recording: many epochs
    assert budget_epochs(cfg, 500) == 2  # a long one: few
    assert budget_epochs(FitConfig.from_dict({"max_steps": 1000, "max_epochs": 7}), 10) == 7


def test_fit_stopped_by_budget_says_so(tmp_path) -> None:  # noqa: ANN001
    rec = make_recording(n_cells=2, train_bins=2000)
    m = run_fit(rec, tmp_path / "run", {**TINY, "max_steps": 3}, progress=False, figures=False)
    assert m["fit"]["stopped"].startswith("budget: reached max_steps=3")
    assert "not converged" in m["fit"]["stopped"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["steps"] >= 3


def test_fit_stopped_by_convergence_says_so(tmp_path) -> None:  # noqa: ANN001
    rec = make_recording(n_cells=2, train_bins=2000)
    m = run_fit(rec, tmp_path / "run", {**TINY, "patience": 1, "lr": 0.2, "max_steps": 100_000}, progress=False, figures=False)
    assert m["fit"]["stopped"].startswith("converged: no lower validation loss for 1 epochs")


def test_cli_fit_prints_the_stop_reason(tmp_path) -> None:  # noqa: ANN001
    from retinakit.io import save_recording

    path = tmp_path / "rec.h5"
    save_recording(make_recording(n_cells=2, train_bins=2000), path)
    res = CliRunner().invoke(main, ["fit", str(path), "--out", str(tmp_path / "run"), "--history", "6", "--filters", "4,4",
                                    "--max-steps", "3", "-q"])
    assert res.exit_code == 0, res.output
    assert "budget" in res.output and "not converged" in res.output


def test_activity_l1_does_not_grow_with_the_population() -> None:
    pred = torch.rand(3, 20, 5)
    w = torch.ones(3, 20)
    doubled = torch.cat([pred, pred], dim=-1)  # the same cells recorded twice
    assert torch.allclose(activity_l1(pred, w), activity_l1(doubled, w))
    w0 = w.clone()
    w0[:, 10:] = 0  # rows that are not fit do not count
    assert torch.allclose(activity_l1(pred, w0), pred[:, :10].abs().mean())


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_batch_norm_statistics_use_only_the_rows_that_are_fit(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "spatial":
        net = CNN(6, (8, 8), 3, filters=(3, 3), kernels=(3, 3), batchnorm=True, noise_std=0.0)
        zc = torch.randn(2, 20 + 6, 8, 8)
    else:
        net = TemporalCNN(6, 3, channels=(3, 3), kernels=(3, 2), batchnorm=True, noise_std=0.0)
        zc = torch.randn(2, 20 + 6, 1, 1)
    net.train()
    rows = torch.zeros(2, 20, dtype=torch.bool)
    rows[0] = True  # chunk 1 is not fit at all
    out_a = net.forward_chunks(zc, rows=rows)
    zc_b = zc.clone()
    zc_b[1] = 50.0 * torch.randn_like(zc_b[1])  # wild values in the chunk that is not fit
    out_b = net.forward_chunks(zc_b, rows=rows)
    assert torch.allclose(out_a[0], out_b[0], atol=1e-5)
    # and without the mask the wild chunk does move the statistics
    assert not torch.allclose(net.forward_chunks(zc)[0], net.forward_chunks(zc_b)[0], atol=1e-3)


def test_spatial_rows_equal_a_batch_of_those_windows() -> None:
    """With a row mask the batch-norm statistics are those of a batch made of the kept windows."""
    from retinakit.fitting.train import gather_chunks  # noqa: F401  (same data path as training)

    torch.manual_seed(1)
    net = CNN(6, (8, 8), 2, filters=(3, 3), kernels=(3, 3), batchnorm=True, noise_std=0.0)
    net.train()
    zc = torch.randn(1, 12 + 6, 8, 8)
    rows = torch.zeros(1, 12, dtype=torch.bool)
    rows[0, 2:9] = True
    out = net.forward_chunks(zc, rows=rows)[0, 2:9]
    windows = torch.stack([zc[0, l : l + 6] for l in range(2, 9)])
    assert torch.allclose(out, net(windows), atol=1e-5)
