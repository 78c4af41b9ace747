"""Fitting: options, checkpoints, the validation split, chunk alignment, resume, run folders."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from conftest import make_recording
from retinakit.errors import CheckpointError, ConfigError, OutputError
from retinakit.fitting import load_run
from retinakit.fitting.checkpoint import load_checkpoint, pack, save_checkpoint, unpack
from retinakit.fitting.config import FitConfig
from retinakit.fitting.device import choose_device
from retinakit.fitting.run_folder import is_finished, next_run_dir, read_log
from retinakit.fitting.train import contiguous_segments, gather_chunks, make_chunks, predict_z, split_masks
from retinakit.models.ln import LN
from retinakit.pipeline import run_fit

TINY = {"history": 6, "max_epochs": 2, "batch_size": 400, "chunk_len": 50, "filters": [4, 4]}


@pytest.fixture(scope="module")
def tiny_rec():  # noqa: ANN201
    return make_recording(frame_shape=(6, 6), n_cells=2, train_bins=1500, test_bins=200, n_repeats=4)


# ----------------------------------------------------------------------------- config
def test_config_defaults_round_trip_and_did_you_mean() -> None:
    cfg = FitConfig.from_dict({})
    assert cfg.model == "bn-cnn" and cfg.history == 40 and cfg.lr == pytest.approx(2e-3)
    assert FitConfig.from_dict({"model": "ln"}).lr == pytest.approx(3e-2)
    assert FitConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())
    with pytest.raises(ConfigError, match="did you mean 'max_epochs'"):
        FitConfig.from_dict({"max_epoch": 3})
    with pytest.raises(ConfigError, match="'history'"):
        FitConfig.from_dict({"history": 0})
    with pytest.raises(ConfigError, match="did you mean 'bn-cnn'"):
        FitConfig.from_dict({"model": "bncnn"})
    with pytest.raises(ConfigError, match="'lr'"):
        FitConfig.from_dict({"lr": "fast"})
    with pytest.raises(ConfigError, match="'cells'"):
        FitConfig.from_dict({"cells": [1, 1]})


def test_device_choice() -> None:
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            choose_device("cuda")
    with pytest.raises(ConfigError):
        choose_device("tpu")


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_round_trip_checksum_and_pickle_refusal(tmp_path) -> None:  # noqa: ANN001
    t = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    save_checkpoint(tmp_path / "c.pt", t, {"x": 1, "arr": np.arange(3)})
    t2, info = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(t2["a"], t["a"]) and info == {"x": 1, "arr": [0, 1, 2]}
    # tampering with a tensor breaks the checksum
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    payload["tensors"]["a"][0, 0] = 99.0
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path / "bad.pt")

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"format": "retinakit-checkpoint", "x": Evil()}, fh)
    torch.save({"obj": Evil()}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_pack_unpack_optimizer_state() -> None:
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors: dict[str, torch.Tensor] = {}
    js = json.loads(json.dumps(pack(opt.state_dict(), "optim", tensors)))
    opt2 = torch.optim.Adam(m.parameters(), lr=0.5)
    opt2.load_state_dict(unpack(js, tensors))
    assert opt2.param_groups[0]["lr"] == 0.1
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


# ----------------------------------------------------------------------------- split and chunks
def test_validation_blocks_are_contiguous_guarded_and_respect_gaps() -> None:
    time = np.concatenate([np.arange(1000), 5000 + np.arange(1000)]) * 0.01
    segs = contiguous_segments(time, 0.01)
    assert segs == [(0, 1000), (1000, 2000)]
    h = 20
    fit, val = split_masks(segs, 2000, h, 0.1, 4)
    assert not np.any(fit & val)
    assert abs(val.sum() - 0.1 * (2000 - 2 * h)) <= 4
    val_runs = np.flatnonzero(np.diff(val.astype(int)) == 1)
    assert len(val_runs) == 4  # 4 contiguous blocks
    for t in np.flatnonzero(fit):  # training bins keep a distance of `history` from validation bins
        lo, hi = max(0, t - h), min(2000, t + h + 1)
        assert not val[lo:hi].any()
    # no predicted bin without a full history inside its own segment
    assert not fit[:h].any() and not fit[1000 : 1000 + h].any() and not val[1000 : 1000 + h].any()


def test_chunks_cover_each_bin_once_and_rows_align_with_bins() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random(500) > 0.3
    mask[:8] = False
    starts, weights, L = make_chunks(mask, 8, 37)
    covered = np.zeros(500)
    for s, w in zip(starts, weights):
        covered[s : s + L] += w
    assert np.array_equal(covered, mask.astype(float))
    # an LN that reads only the newest frame of its window (lag 1) returns frame t-1 for bin t
    m = LN(8, (1, 1), 1, rank=1, nonlinearity="softplus")
    with torch.no_grad():
        m.spatial.fill_(1.0)
        m.temporal.zero_()
        m.temporal[0, -1] = 1.0
    z = torch.arange(500, dtype=torch.float32).reshape(500, 1, 1)
    zc = gather_chunks(z, starts[:3], 8, L)
    g = m.generator_chunks(zc)[..., 0]
    for k, s in enumerate(starts[:3]):
        assert torch.equal(g[k], torch.arange(s - 1, s - 1 + L, dtype=torch.float32))
    pred = predict_z(m, z, torch.device("cpu"), chunk_len=50)
    assert np.all(np.isnan(pred[:8]))


# ----------------------------------------------------------------------------- run_fit
def test_fit_writes_a_complete_run_folder(tiny_rec, tmp_path) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    metrics = run_fit(tiny_rec, run, {**TINY, "model": "bn-cnn"}, progress=False)
    for name in ("config.json", "checkpoint.pt", "model.pt", "metrics.json", "cells.csv", "log.jsonl", "DONE",
                 "figures/training.png", "figures/predictions.png", "figures/filters.png"):
        assert (run / name).is_file(), name
    assert is_finished(run)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["model"] == "bn-cnn" and cfg["versions"]["torch"] and "scaled" in cfg["geometry_note"]
    assert [e["epoch"] for e in read_log(run)] == [1, 2]
    fm = load_run(run)
    assert fm.meta["kind"] == "bn-cnn" and fm.cell_ids == [1, 2] and fm.history == 6
    assert fm.meta["data_sha256"] == cfg["data"]["sha256"]
    # the stored score is the score of the loaded model's own predictions
    from retinakit.evaluation.metrics import score

    s = score(fm.predict(tiny_rec.test.stimulus), tiny_rec.test.repeats)
    assert np.allclose(s["r"], [c["r"] for c in metrics["cells"]], atol=1e-5)
    assert (run / "cells.csv").read_text().splitlines()[0].startswith("cell,r,")
    # a finished folder is never overwritten
    with pytest.raises(OutputError, match="already exists"):
        run_fit(tiny_rec, run, TINY, progress=False)
    # resuming a finished run returns its metrics without fitting
    assert run_fit(tiny_rec, run, {}, resume=True, progress=False)["summary"] == metrics["summary"]


def test_trained_cnn_is_causal(tiny_rec, tmp_path) -> None:  # noqa: ANN001
    run_fit(tiny_rec, tmp_path / "r", {**TINY, "max_epochs": 1}, progress=False, figures=False)
    fm = load_run(tmp_path / "r")
    s = tiny_rec.test.stimulus.astype(np.float32)
    p = fm.predict(s)
    s2 = s.copy()
    s2[100:] = -s2[100:]
    p2 = fm.predict(s2)
    assert np.allclose(p[:101], p2[:101], equal_nan=True) and not np.allclose(p[101:], p2[101:])


@pytest.mark.parametrize("weight_ema", [0.0, 1.0])
def test_interrupted_fit_resumes_at_the_next_epoch_and_matches(tiny_rec, tmp_path, weight_ema) -> None:  # noqa: ANN001
    opts = {**TINY, "max_epochs": 3, "patience": 10, "weight_ema": weight_ema}
    full = run_fit(tiny_rec, tmp_path / "full", opts, progress=False, figures=False)

    class Stop(Exception):
        pass

    def stop_after_2(entry: dict) -> None:
        if entry["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        run_fit(tiny_rec, tmp_path / "cut", opts, progress=False, on_epoch=stop_after_2, figures=False)
    assert not is_finished(tmp_path / "cut") and [e["epoch"] for e in read_log(tmp_path / "cut")] == [1, 2]
    with pytest.raises(ConfigError, match="only device"):  # what is fit cannot change on resume
        run_fit(tiny_rec, tmp_path / "cut", {"history": 7}, resume=True, progress=False)
    seen: list[int] = []
    resumed = run_fit(tiny_rec, tmp_path / "cut", {}, resume=True, progress=False, on_epoch=lambda e: seen.append(e["epoch"]), figures=False)
    assert seen == [3]
    assert [e["epoch"] for e in read_log(tmp_path / "cut")] == [1, 2, 3]
    # same seed, RNG state restored: the resumed fit equals the uninterrupted one
    assert np.allclose([c["r"] for c in resumed["cells"]], [c["r"] for c in full["cells"]], atol=1e-6)


def test_ln_fits_through_run_fit(tiny_rec, tmp_path) -> None:  # noqa: ANN001
    m = run_fit(tiny_rec, tmp_path / "ln", {"model": "ln", "history": 6}, progress=False)
    assert m["fit"]["method"] == "stc" and m["summary"]["mean_r_norm"] > 0.5  # default: two filters where a second helps
    assert (tmp_path / "ln" / "figures" / "filters.png").is_file()
    gd = run_fit(tiny_rec, tmp_path / "gd", {"model": "ln", "history": 6, "ln_method": "gd", "max_epochs": 2}, progress=False, figures=False)
    assert gd["fit"]["epochs"] == 2 and load_run(tmp_path / "gd").meta["model"]["nonlinearity"] == "softplus"


def test_next_run_dir_never_reuses_a_folder(tmp_path) -> None:  # noqa: ANN001
    a = next_run_dir(tmp_path, "cnn", "rec")
    b = next_run_dir(tmp_path, "cnn", "rec")
    assert a.name == "cnn-rec-1" and b.name == "cnn-rec-2"


def test_load_run_errors(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(CheckpointError, match="is an empty folder, not a run"):
        (tmp_path / "r").mkdir()
        load_run(tmp_path / "r")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "nothing.pt")


def test_python_api_mirrors_the_cli(tiny_rec, tmp_path) -> None:  # noqa: ANN001
    import retinakit as rk

    res = rk.fit(tiny_rec, model="ln", out=tmp_path / "api", progress=False, history=6)
    assert res.run_dir == tmp_path / "api" and "r/ceil" in res.table()
    scores = rk.evaluate(res.run_dir, tiny_rec)
    assert np.allclose(scores["r"], [c["r"] for c in res.cells])
    assert res.model.meta["kind"] == "ln" and rk.load_run(res.run_dir).cell_ids == [1, 2]
    with pytest.raises(ConfigError, match="out="):
        rk.fit(tiny_rec, resume=True)
