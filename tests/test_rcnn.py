"""The recurrent CNN (``--model rcnn``): causal, stateful, bypassing, resumable, and better than
the CNN on a cell whose gain adapts over seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_recording
from retinakit.errors import ConfigError, ModelError
from retinakit.fitting import load_run
from retinakit.fitting.run_folder import is_finished, read_log
from retinakit.fitting.train import gather_recurrent, predictable_bins
from retinakit.models import build_model, model_from_spec
from retinakit.models.cnn import CNN
from retinakit.models.rcnn import RCNN
from retinakit.pipeline import run_fit
from retinakit.probes.check import check_model
from retinakit.recording import Recording, Split
from retinakit.spikes import pearson_columns


def _net(seed: int = 0, frame_shape: tuple[int, ...] = (12, 12), **options: str) -> RCNN:
    """A small RCNN in eval mode with recurrent weights large enough that the state matters."""
    torch.manual_seed(seed)
    net = build_model("rcnn", 6, frame_shape, 3, filters=(4, 5), noise_std=0.05, frame_rate=50.0, **options)
    with torch.no_grad():
        net.state_zv.normal_(0.0, 0.5)
        net.state_omega.normal_(0.0, 1.0)
        net.gate_in.bias[: net.filters[1]] = -1.0  # fast enough to matter over a few dozen bins
    return net.eval().requires_grad_(False)


def test_build_and_spec_round_trip_and_full_field_channels() -> None:
    net = _net()
    assert isinstance(net, RCNN) and net.recurrent and net.burn_in == 25  # 0.5 s at 50 Hz
    again = model_from_spec(net.spec())
    again.load_state_dict(net.state_dict())
    again.eval()
    z = torch.randn(2, 40 + 6, 12, 12)
    assert torch.allclose(again.forward_chunks(z), net.forward_chunks(z), atol=1e-6)
    ff = build_model("rcnn", 20, (), 233, filters=(8, 8), noise_std=0.05, frame_rate=30.0)
    assert ff.filters[0] > 8 and ff.map_hw == (1, 1)  # channels grow with the population, as the temporal CNN's
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("rnn", 6, (12, 12), 3)


def test_the_cell_learns_faster_than_the_rest() -> None:
    """Adam's groups: the recurrent cell's gates and state weights at CELL_LR_SCALE x the base rate,
    every other parameter once at the base rate; a feed-forward CNN has one group."""
    from retinakit.fitting.train import param_groups
    from retinakit.models.rcnn import CELL_LR_SCALE

    net = build_model("rcnn", 6, (12, 12), 3, filters=(4, 5), noise_std=0.05, frame_rate=50.0)
    groups = param_groups(net, 2e-3)
    assert [g["lr"] for g in groups] == [2e-3, pytest.approx(2e-3 * CELL_LR_SCALE)]
    fast = {id(p) for p in groups[1]["params"]}
    assert fast == {id(net.gate_in.weight), id(net.gate_in.bias), id(net.state_zv), id(net.state_omega)}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    cnn = build_model("bn-cnn", 6, (12, 12), 3, filters=(4, 5), noise_std=0.05)
    (only,) = param_groups(cnn, 2e-3)
    assert only["lr"] == 2e-3 and len(only["params"]) == len(list(cnn.parameters()))


def test_resuming_a_checkpoint_with_another_optimiser_layout_is_a_clear_error(tmp_path) -> None:  # noqa: ANN001
    """A training checkpoint written when the whole rcnn was one Adam group (before the cell had its
    own rate) does not fit today's two groups: a CheckpointError that says to start again."""
    from retinakit.errors import CheckpointError
    from retinakit.fitting.train import TrainState, load_training_checkpoint, param_groups, save_training_checkpoint

    net = build_model("rcnn", 6, (12, 12), 3, filters=(4, 5), noise_std=0.05, frame_rate=50.0)
    old = torch.optim.Adam(net.parameters(), lr=2e-3)
    save_training_checkpoint(tmp_path / "checkpoint.pt", net, {}, old, torch.optim.lr_scheduler.ReduceLROnPlateau(old), TrainState(), {})
    new = torch.optim.Adam(param_groups(net, 2e-3), lr=2e-3)
    with pytest.raises(CheckpointError, match="optimiser state does not fit") as err:
        load_training_checkpoint(tmp_path / "checkpoint.pt", net, new, torch.optim.lr_scheduler.ReduceLROnPlateau(new))
    assert "without --resume" in str(err.value)
    same = torch.optim.Adam(net.parameters(), lr=2e-3)  # the layout it was written with still loads
    state, _, _ = load_training_checkpoint(tmp_path / "checkpoint.pt", net, same, torch.optim.lr_scheduler.ReduceLROnPlateau(same))
    assert state.epoch == 0


def test_causal_rows_depend_only_on_earlier_frames() -> None:
    net = _net()
    z = torch.randn(2, 60 + 6, 12, 12)
    out = net.forward_chunks(z)
    z2 = z.clone()
    z2[:, 30:] += torch.randn_like(z2[:, 30:])
    out2 = net.forward_chunks(z2)
    # row l uses frames l .. l + 5: rows 0..24 end before frame 30
    assert torch.equal(out[:, :25], out2[:, :25])
    assert not torch.allclose(out[:, 25:], out2[:, 25:])
    # a frame keeps acting past the window: the recurrent state carries it
    z3 = z.clone()
    z3[:, 10] += 3.0
    d = (net.forward_chunks(z3) - out).abs().amax(dim=(0, 2))
    assert float(d[:5].max()) == 0.0 and float(d[20:].max()) > 0.0  # rows 5..10 see frame 10 directly, rows >= 11 only through the state


@pytest.mark.parametrize("options", [{}, {"readout": "factorized", "first_layer": "separable"}], ids=["dense-full", "factorized-separable"])
def test_state_carried_across_chunks_equals_one_long_pass(options: dict[str, str]) -> None:
    net = _net(**options)
    assert model_from_spec(net.spec()).spec() == net.spec()
    z = torch.randn(3, 90 + 6, 12, 12)
    full, last = net.forward_chunks(z, return_state=True)
    pieces, state = [], None
    for a, b in ((0, 25), (25, 26), (26, 70), (70, 90)):  # windows a..b-1 need frames a .. b + history - 1
        p, state = net.forward_chunks(z[:, a : b + 6], state=state, return_state=True)
        pieces.append(p)
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-6, rtol=1e-5)
    assert torch.allclose(state, last, atol=1e-6, rtol=1e-5)
    # the states just before rows 25 and 70, asked for in one pass, are the ones the pieces handed on
    _, at = net.forward_chunks(z, states_at=torch.tensor([0, 25, 70]))
    _, s25 = net.forward_chunks(z[:, : 25 + 6], return_state=True)
    assert float(at[:, 0].abs().max()) == 0.0 and torch.allclose(at[:, 1], s25, atol=1e-6)
    # stepping window by window (direct first layer, no chunked convolution) gives the same
    st, rows = None, []
    for t in range(90):
        o, st = net.step(z[:, t : t + 6], st)
        rows.append(o)
    assert torch.allclose(torch.stack(rows, 1), full, atol=1e-6, rtol=1e-5)


def test_predict_is_one_pass_whatever_the_stretch_length() -> None:
    from retinakit.models.fitted import FittedModel

    net = _net()
    meta = {"history": 6, "frame_shape": [12, 12], "frame_dt": 0.02, "cell_ids": [1, 2, 3], "stim_mean": 0.0, "stim_std": 1.0}
    fm = FittedModel(model=net, meta=meta)
    stim = np.random.default_rng(0).standard_normal((150, 12, 12)).astype(np.float32)
    a, b = fm.predict(stim), fm.predict(stim, chunk_bins=7)
    assert np.all(np.isnan(a[:6])) and np.all(np.isfinite(a[6:]))
    assert np.allclose(a, b, equal_nan=True, atol=1e-6)


def test_bypass_cell_with_zero_state_returns_its_input() -> None:
    net = _net()
    u = torch.randn(4, net.filters[1], *net.map_hw)
    _, w_out = net._state_weights()
    assert torch.equal(net._output(u, torch.zeros_like(u), w_out), u)
    # the gates are in [0, 1]: the update gate in (0, 1), the gain gate in (0, 1] (1 at a zero state)
    s = torch.rand_like(u) * 5
    w_z, _ = net._state_weights()
    gz = torch.randn_like(u) * 3
    z = torch.sigmoid(gz + torch.nn.functional.conv2d(s, w_z, padding=net._pad))
    C = net.filters[1]
    g = 1.0 / (1.0 + torch.nn.functional.conv2d(s, w_out, padding=net._pad)[:, C:])
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0 and float(g.min()) > 0.0 and float(g.max()) <= 1.0
    # a whole network from a zero state is exactly the batch-norm CNN with the same weights
    cnn = CNN(6, (12, 12), 3, filters=(4, 5), kernels=net.kernel_sizes, batchnorm=True).eval()
    missing, _ = cnn.load_state_dict(net.state_dict(), strict=False)
    assert not missing
    x = torch.randn(5, 6, 12, 12)
    assert torch.allclose(net(x), cnn(x), atol=1e-6)


def test_rows_that_are_not_real_reset_the_state() -> None:
    net = _net()
    z = torch.randn(1, 80 + 6, 12, 12)
    rows = torch.ones(1, 80, dtype=torch.bool)
    rows[0, 30:36] = False  # a gap between two recorded blocks
    out = net.forward_chunks(z, rows=rows)
    assert float(out[0, 30:36].abs().max()) == 0.0
    fresh = net.forward_chunks(z[:, 36:])  # the second block alone, from the resting state
    assert torch.allclose(out[:, 36:], fresh, atol=1e-6)
    # the resting state (the mean state over the training movie) is where every block starts
    net.set_rest(torch.rand(10, net.filters[1], *net.map_hw))
    assert float(net.rest.abs().max()) > 0
    out = net.forward_chunks(z, rows=rows)
    assert torch.allclose(out[:, 36:], net.forward_chunks(z[:, 36:]), atol=1e-6)
    assert not torch.allclose(out[:, 36:], fresh)
    st, rows_ = None, []
    for t in range(10):
        o, st = net.step(z[:, t : t + 6], st)
        rows_.append(o)
    assert torch.allclose(torch.stack(rows_, 1), out[:, :10], atol=1e-6)
    with pytest.raises(ModelError, match="state has shape"):
        net.forward_chunks(z, state=torch.zeros(2, 1, 1, 1))


def test_training_chunks_burn_in_and_block_boundaries() -> None:
    z = torch.arange(100, dtype=torch.float32).reshape(100, 1, 1) + 1.0
    pred = predictable_bins([(0, 40), (40, 100)], 100, 5)
    assert pred[5:40].all() and not pred[:5].any() and not pred[40:45].any() and pred[45:].all()
    zc, rows = gather_recurrent(z, np.array([8, 60]), history=5, L=10, burn_in=20, predictable=pred)
    assert zc.shape == (2, 20 + 10 + 5, 1, 1) and rows.shape == (2, 30)
    # chunk 0: bins -12 .. 17; frames before the movie are zeros, the real frames end at frame 17
    assert float(zc[0, :17].abs().max()) == 0.0 and zc[0, -1, 0, 0] == 18.0
    assert not rows[0, :17].any() and rows[0, 17:].all()  # bins < 5 have no full window
    # chunk 1: bins 40 .. 69; bins 40..44 straddle the gap: the state restarts at bin 45
    assert not rows[1, :5].any() and rows[1, 5:].all()
    assert zc[1, 0, 0, 0] == 36.0  # frame 35 (bin 40 - 5)


@pytest.fixture(scope="module")
def rcnn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recording, object]:
    rec = make_recording(frame_shape=(8, 8), n_cells=2, train_bins=1500, test_bins=200, n_repeats=4)
    run = tmp_path_factory.mktemp("rcnn") / "run"
    metrics = run_fit(rec, run, {"model": "rcnn", "history": 6, "chunk_len": 40, "max_epochs": 2, "patience": 10}, progress=False, figures=False)
    return rec, (run, metrics)


def test_fit_checks_and_checkpoint(rcnn_run) -> None:  # noqa: ANN001
    rec, (run, metrics) = rcnn_run
    assert is_finished(run) and metrics["model"] == "rcnn"
    assert metrics["checks"]["passed"], metrics["checks"]
    checks = metrics["checks"]["checks"]
    for name in ("causality", "impulse_window", "window_alignment", "batch_independence", "forward_chunks"):
        assert checks[name]["passed"], name
    fm = load_run(run)
    assert isinstance(fm.model, RCNN) and fm.meta["model"]["family"] == "rcnn"
    assert "gated bypass cell" in fm.meta["model"]["geometry_note"]
    assert float(fm.model.rest.abs().sum()) > 0  # the resting state was set from the training movie
    again = check_model(fm, seed=3)
    assert again["passed"]
    pred = fm.predict(rec.test.stimulus)
    assert np.all(np.isnan(pred[:6])) and np.all(np.isfinite(pred[6:])) and np.all(pred[6:] >= 0)


def test_the_cells_faster_rate_is_reached_by_a_ramp(rcnn_run) -> None:  # noqa: ANN001
    """The cell's rate rises linearly from the base rate to CELL_LR_SCALE x it over the first
    CELL_LR_WARMUP_STEPS steps; the fit's checkpoint holds the rate of its last step."""
    from retinakit.fitting.train import load_training_checkpoint, param_groups, warmed_lr
    from retinakit.models.rcnn import CELL_LR_SCALE, CELL_LR_WARMUP_STEPS

    assert warmed_lr(1e-3, 10.0, 0, 100) == pytest.approx(1e-3)
    assert warmed_lr(1e-3, 10.0, 50, 100) == pytest.approx(5.5e-3)
    assert warmed_lr(1e-3, 10.0, 100, 100) == pytest.approx(1e-2) == warmed_lr(1e-3, 10.0, 5000, 100) == warmed_lr(1e-3, 10.0, 0, 0)
    run = rcnn_run[1][0]
    net = load_run(run).model
    opt = torch.optim.Adam(param_groups(net, 2e-3), lr=2e-3)
    state, _, _ = load_training_checkpoint(run / "checkpoint.pt", net, opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt))
    base, cell = (g["lr"] for g in opt.param_groups)
    assert state.steps > 1 and cell == pytest.approx(warmed_lr(base, CELL_LR_SCALE, state.steps - 1, CELL_LR_WARMUP_STEPS))
    assert base < cell <= base * CELL_LR_SCALE


def test_interrupted_rcnn_fit_resumes_and_matches(tmp_path) -> None:  # noqa: ANN001
    rec = make_recording(frame_shape=(6, 6), n_cells=2, train_bins=1200, test_bins=150, n_repeats=4)
    opts = {"model": "rcnn", "history": 5, "chunk_len": 40, "max_epochs": 2, "patience": 10}
    full = run_fit(rec, tmp_path / "full", opts, progress=False, figures=False)

    def interrupt(entry: dict) -> None:  # after the first epoch's checkpoint
        raise InterruptedError(entry["epoch"])

    with pytest.raises(InterruptedError):
        run_fit(rec, tmp_path / "cut", opts, progress=False, on_epoch=interrupt, figures=False)
    assert [e["epoch"] for e in read_log(tmp_path / "cut")] == [1]
    resumed = run_fit(rec, tmp_path / "cut", {}, resume=True, progress=False, figures=False)
    assert [e["epoch"] for e in read_log(tmp_path / "cut")] == [1, 2]
    assert np.allclose([c["r"] for c in resumed["cells"]], [c["r"] for c in full["cells"]], atol=1e-6)


def slow_adapting_recording(seed: int = 0, rate_hz: float = 50.0, train_s: float = 360.0, test_s: float = 40.0, n_repeats: int = 4,
                            tau_s: float = 2.0, strength: float = 30.0) -> Recording:
    """One full-field cell whose gain adapts to contrast over seconds.

    The flicker's s.d. alternates between high (0.6-1.0) and low (0.1-0.2) in blocks of 3-8 s. The
    cell filters the stimulus (biphasic, 240 ms), divides the result by ``1 + a sigma(t)``, where
    ``sigma`` is the square root of a running mean of its squared filter output with time
    constant ``tau_s``, and fires through a softplus. After each switch the gain takes seconds to
    settle, which a window of a fraction of a second cannot see.
    """
    rng = np.random.default_rng(seed)
    dt = 1.0 / rate_hz

    def stimulus(T: int) -> np.ndarray:
        sd = np.empty(T)
        t, high = 0, bool(rng.integers(2))
        while t < T:
            n = int(rng.uniform(3.0, 8.0) * rate_hz)
            sd[t : t + n] = rng.uniform(0.6, 1.0) if high else rng.uniform(0.1, 0.2)
            high, t = not high, t + n
        return (rng.standard_normal(T) * sd).astype(np.float32)

    lags = np.arange(12) * dt
    f = np.exp(-lags / 0.04) * np.sin(2 * np.pi * lags / 0.2)
    f /= np.abs(f).sum()

    def rate(s: np.ndarray) -> np.ndarray:
        x = np.r_[0.0, np.convolve(s, f)[: s.size - 1]]  # bin t sees frames before t
        v = np.empty_like(x)
        acc, alpha = 0.1, dt / tau_s
        for i, xi in enumerate(x):
            acc += alpha * (xi * xi - acc)
            v[i] = acc
        gain = 1.0 / (1.0 + strength * np.sqrt(v))
        return 0.4 * np.log1p(np.exp(6.0 * (1 + 0.1 * strength) / 2.2 * gain * x / 0.3))[:, None]

    Ttr, Tte = int(train_s * rate_hz), int(test_s * rate_hz)
    s_tr, s_te = stimulus(Ttr), stimulus(Tte)
    r_tr, r_te = rate(s_tr), rate(s_te)
    reps = rng.poisson(np.repeat(r_te[None], n_repeats, 0)).astype(np.float32)
    return Recording(
        train=Split(stimulus=s_tr, time=np.arange(Ttr) * dt, counts=rng.poisson(r_tr).astype(np.float32), true_rate=r_tr),
        test=Split(stimulus=s_te, time=np.arange(Tte) * dt + 1e4, counts=reps.mean(0), repeats=reps, true_rate=r_te),
        cell_ids=np.array([1]), frame_dt=dt, stimulus_kind="fullfield", provenance={"source": "<test>", "generator": "tests.test_rcnn"},
    )


def test_slow_adaptation_is_fit_better_by_rcnn_than_by_the_cnn(tmp_path) -> None:  # noqa: ANN001
    rec = slow_adapting_recording()
    r, r_true = {}, {}
    for model in ("bn-cnn", "rcnn"):
        m = run_fit(rec, tmp_path / model, {"model": model, "history": 10, "chunk_len": 50, "max_steps": 600}, progress=False, figures=False)
        r[model] = m["cells"][0]["r"]  # against the trial average of the test repeats
        pred = load_run(tmp_path / model).predict(rec.test.stimulus)
        ok = np.isfinite(pred[:, 0])
        r_true[model] = float(pearson_columns(pred[ok], rec.test.true_rate[ok])[0])
    assert r["rcnn"] > r["bn-cnn"], (r, r_true)
    assert r_true["rcnn"] > r_true["bn-cnn"] + 0.01, (r, r_true)


def test_probes_run_on_rcnn_and_reduce_says_it_cannot(rcnn_run, tmp_path) -> None:  # noqa: ANN001
    from retinakit.mechanisms.circuit import Circuit
    from retinakit.probes import run_probe

    _, (run, _) = rcnn_run
    fm = load_run(run)
    res = run_probe(fm, "step", None, tmp_path / "step", progress=False)
    assert res["model"]["kind"] == "rcnn" and len(res["cells"]) == 2
    with pytest.raises(ModelError, match="'rcnn' model"):
        Circuit(fm)


def test_a_sweep_can_grid_over_rcnn(tmp_path) -> None:  # noqa: ANN001
    from retinakit.batch.sweep import parse_sweep

    sweep = parse_sweep({"fit": {"data": "sample"}, "grid": {"model": ["bn-cnn", "rcnn"]}}, tmp_path / "s.toml", check_data=False)
    assert sorted(p.params["model"] for p in sweep.points) == ["bn-cnn", "rcnn"]
    with pytest.raises(ConfigError, match="model"):
        parse_sweep({"fit": {"data": "sample"}, "grid": {"model": ["rnn"]}}, tmp_path / "s.toml", check_data=False)
