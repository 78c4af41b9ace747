"""Polyak averaging of the CNN's weights (``weight_ema``): the average, the swap, the fit."""

from __future__ import annotations

import torch

from conftest import make_recording
from retinakit.fitting.train import WeightAverage
from retinakit.models.cnn import CNN
from retinakit.pipeline import run_fit

TINY = {"history": 6, "batch_size": 400, "chunk_len": 50, "filters": [4, 4]}


def _cnn() -> CNN:
    torch.manual_seed(0)
    return CNN(history=6, frame_shape=(12, 12), n_cells=3, filters=(4, 4), kernels=(5, 3), batchnorm=True)


def test_average_is_the_exponential_mean_of_the_steps() -> None:
    model = _cnn()
    avg = WeightAverage(model, horizon_steps=4.0)  # decay 0.75 once past the warm-up
    key = avg.keys[0]
    expected = model.state_dict()[key].clone()
    for step in range(1, 30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        avg.update(model, step)
        d = min(0.75, (1.0 + step) / (10.0 + step))
        expected = d * expected + (1 - d) * model.state_dict()[key]
    assert torch.allclose(avg.avg[key], expected, atol=1e-5)
    assert any(k.endswith("running_mean") for k in avg.keys)  # batch-norm statistics are averaged too


def test_swap_gives_the_average_inside_and_the_live_weights_after() -> None:
    model = _cnn()
    avg = WeightAverage(model, horizon_steps=10.0)
    live = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    with avg.swapped_in(model):
        for k in avg.keys:
            assert torch.equal(model.state_dict()[k], live[k])  # the average has not moved yet
    for k, v in model.state_dict().items():
        assert torch.equal(v, moved[k])


def test_fit_with_weight_average_keeps_the_averaged_weights(tmp_path) -> None:  # noqa: ANN001
    rec = make_recording(frame_shape=(8, 8), n_cells=2, train_bins=4000)
    opts = {**TINY, "batch_size": 200, "lr": 0.01, "max_epochs": 6, "patience": 10}
    plain = run_fit(rec, tmp_path / "plain", {**opts, "weight_ema": 0.0}, progress=False, figures=False)
    averaged = run_fit(rec, tmp_path / "ema", {**opts, "weight_ema": 1.0}, progress=False, figures=False)
    ra = [c["r"] for c in averaged["cells"]]
    assert ra != [c["r"] for c in plain["cells"]]  # it changes what is kept
    assert all(r > 0.3 for r in ra)  # and still fits the planted cells (true-rate r ~0.5)


def test_default_averages_the_batch_norm_cnns_not_the_published_one() -> None:
    from retinakit.fitting.config import FitConfig

    assert FitConfig.from_dict({}).resolved_weight_ema() == 1.0
    assert FitConfig.from_dict({"model": "rcnn"}).resolved_weight_ema() == 1.0
    assert FitConfig.from_dict({"model": "cnn"}).resolved_weight_ema() == 0.0
    assert FitConfig.from_saved({"model": "bn-cnn"}).resolved_weight_ema() == 0.0  # a run from before the option: as it was fit
