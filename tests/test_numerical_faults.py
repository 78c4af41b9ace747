"""Numerical faults: NaN or inf in the loss or in the weights stops the fit with a clear message
naming the epoch, keeps the last good checkpoint, leaves the run unfinished, and `--resume`
then completes it.

Faults are injected from outside the library: the loss function or the optimiser is wrapped with
``monkeypatch`` for one fit, so nothing in retinakit is a test hook.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from conftest import make_recording

from retinakit.cli import main
from retinakit.errors import ModelError
from retinakit.fitting import train as train_mod
from retinakit.fitting.checkpoint import load_checkpoint
from retinakit.fitting.run_folder import is_finished
from retinakit.io import save_recording
from retinakit.pipeline.runs import run_fit

OPTIONS = {"history": 6, "filters": [2, 2], "kernels": [3, 3], "max_epochs": 3, "patience": 10, "batch_size": 300, "chunk_len": 100,
           "seed": 1, "device": "cpu", "deterministic": True}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: Any) -> Path:
    rec = make_recording(frame_shape=(6, 6), n_cells=2, train_bins=900, test_bins=80, n_repeats=3, seed=11)
    return save_recording(rec, tmp_path_factory.mktemp("nan") / "tiny.h5")


class Epochs:
    """Counts finished epochs through run_fit's on_epoch callback."""

    def __init__(self) -> None:
        self.done = 0

    def __call__(self, entry: dict[str, Any]) -> None:
        self.done = int(entry["epoch"])


def _checkpoint_epoch(run: Path) -> tuple[int, dict[str, torch.Tensor]]:
    tensors, info = load_checkpoint(run / "checkpoint.pt")
    return int(info["state"]["epoch"]), tensors


def _all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for k, t in tensors.items() if t.is_floating_point())


def _assert_stopped_cleanly(run: Path, good_epoch: int) -> None:
    """Not finished, no model.pt, and checkpoint.pt is the last good epoch with finite weights."""
    assert not is_finished(run) and not (run / "model.pt").exists()
    epoch, tensors = _checkpoint_epoch(run)
    assert epoch == good_epoch
    assert _all_finite(tensors)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, good_epoch + 1))
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in log)


def _resume_finishes(run: Path, data_file: Path) -> None:
    metrics = run_fit(data_file, run, dict(OPTIONS), resume=True, progress=False, figures=False)
    assert is_finished(run) and metrics["fit"]["epochs"] == OPTIONS["max_epochs"]
    assert all(math.isfinite(c["r"]) for c in metrics["cells"] if c["r"] is not None)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_loss_stops_naming_the_epoch_and_keeps_the_last_checkpoint(monkeypatch: pytest.MonkeyPatch, data_file: Path, tmp_path: Path, bad: float) -> None:
    epochs = Epochs()
    real = train_mod.poisson_loss

    def loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        out = real(pred, target, weight)
        return out * bad if epochs.done >= 1 else out  # every loss of epoch 2 is non-finite

    monkeypatch.setattr(train_mod, "poisson_loss", loss)
    run = tmp_path / "run"
    with pytest.raises(ModelError) as info:
        run_fit(data_file, run, dict(OPTIONS), progress=False, on_epoch=epochs, figures=False)
    msg = info.value.one_line()
    assert "epoch 2" in msg and ("nan" in msg or "inf" in msg) and "\n" not in msg
    assert "checkpoint.pt keeps epoch 1" in msg
    _assert_stopped_cleanly(run, good_epoch=1)
    monkeypatch.setattr(train_mod, "poisson_loss", real)
    _resume_finishes(run, data_file)


class _BreakWeights:
    """Wraps Adam: after ``after`` finished epochs, the step number ``at_step`` of the epoch fills a weight with ``value``."""

    def __init__(self, epochs: Epochs, after: int, value: float, last_step: bool) -> None:
        self.epochs, self.after, self.value, self.last_step = epochs, after, value, last_step
        self.steps_per_epoch: int | None = None
        self.count = 0
        self.seen_epoch = 0

    def make(self) -> type:
        outer = self

        class Adam(torch.optim.Adam):
            def step(self, closure: Any = None) -> Any:  # noqa: ANN401
                out = super().step(closure)
                if outer.epochs.done != outer.seen_epoch:  # a new epoch started
                    if outer.seen_epoch == 0 and outer.epochs.done == 1:
                        outer.steps_per_epoch = outer.count
                    outer.seen_epoch, outer.count = outer.epochs.done, 0
                outer.count += 1
                target = (outer.steps_per_epoch or 10**9) if outer.last_step else 1
                if outer.epochs.done == outer.after and outer.count == target:
                    with torch.no_grad():
                        self.param_groups[0]["params"][0].fill_(outer.value)
                return out

        return Adam


@pytest.mark.parametrize("last_step", [False, True], ids=["mid-epoch", "last-step-of-epoch"])
def test_nan_weights_stop_the_fit_and_keep_the_last_good_checkpoint(monkeypatch: pytest.MonkeyPatch, data_file: Path, tmp_path: Path, last_step: bool) -> None:
    """Weights that become NaN are caught before they are saved, also when it happens on the epoch's last step
    (then only the validation pass sees it)."""
    epochs = Epochs()
    breaker = _BreakWeights(epochs, after=1, value=float("nan"), last_step=last_step)
    monkeypatch.setattr(torch.optim, "Adam", breaker.make())
    run = tmp_path / "run"
    with pytest.raises(ModelError) as info:
        run_fit(data_file, run, dict(OPTIONS), progress=False, on_epoch=epochs, figures=False)
    msg = info.value.one_line()
    assert "epoch 2" in msg and "checkpoint.pt keeps epoch 1" in msg, msg
    # mid-epoch: the next batch's loss is NaN; on the last step only the check before saving can see it
    assert ("the weights (" in msg and "became NaN or infinite" in msg) if last_step else "the training loss became nan" in msg, msg
    _assert_stopped_cleanly(run, good_epoch=1)
    monkeypatch.undo()
    _resume_finishes(run, data_file)


def test_cli_reports_a_numerical_fault_in_one_line(monkeypatch: pytest.MonkeyPatch, data_file: Path, tmp_path: Path) -> None:
    real = train_mod.poisson_loss
    calls = {"n": 0}

    def loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = real(pred, target, weight)
        return out * float("nan") if calls["n"] > 1 else out  # the second batch of epoch 1 diverges

    monkeypatch.setattr(train_mod, "poisson_loss", loss)
    run = tmp_path / "run"
    args = ["fit", str(data_file), "--out", str(run), "--history", "6", "--filters", "2,2", "--kernels", "3,3", "--batch-size", "300",
            "--chunk-len", "100", "--max-epochs", "1", "--device", "cpu", "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]  # the run folder is announced first, on its own line
    assert len(errors) == 1 and lines[-1] == errors[0] and "epoch 1" in errors[0] and "lower --lr" in errors[0], res.stderr
    assert not any("Traceback" in ln for ln in lines), res.stderr
    assert not is_finished(run) and not (run / "model.pt").exists() and not (run / "checkpoint.pt").exists()
