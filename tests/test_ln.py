"""The LN baseline: same interface as the CNN, causal, recovers planted filters both ways, and the
default recipe beats a full-frame full-rank STA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinakit.errors import ConfigError, ModelError
from retinakit.fitting.config import FitConfig
from retinakit.fitting.train import prepare_data, train
from retinakit.models import build_model, model_from_spec
from retinakit.models.fitted import FittedModel, stimulus_windows
from retinakit.models.ln import LN, apply_binned, crop_box, fit_binned_nonlinearity, fit_ln_revcorr, init_ln_for_gd
from retinakit.recording import Recording, Split

HISTORY = 10


def planted_recording(frame: tuple[int, int] = (8, 8), T: int = 20000, test_T: int = 600, R: int = 6, seed: int = 0,
                      correlated: bool = False) -> tuple[Recording, np.ndarray]:
    """One LN cell with a known separable filter (Gaussian in space, biphasic in time), exponential output."""
    rng = np.random.default_rng(seed)
    H, W = frame
    yy, xx = np.mgrid[0:H, 0:W]
    lags = HISTORY - np.arange(HISTORY)  # lag (frames before the bin) of window position j
    temporal = np.exp(-((lags - 3) ** 2) / 2.0) - 0.5 * np.exp(-((lags - 6) ** 2) / 4.0)
    spatial = np.exp(-((yy - 3) ** 2 + (xx - 4) ** 2) / 2.0)
    filt = temporal[:, None, None] * spatial[None]

    def stim(n: int) -> np.ndarray:
        if correlated:  # spatially correlated, like natural images
            from scipy.ndimage import gaussian_filter

            s = gaussian_filter(rng.standard_normal((n, H, W)), sigma=(0, 1.5, 1.5), mode="wrap")
            return s / s.std()
        return rng.choice([-1.0, 1.0], size=(n, H, W))

    def drive(s: np.ndarray) -> np.ndarray:
        n = s.shape[0]
        flat = s.reshape(n, -1) @ filt.reshape(HISTORY, -1).T  # flat[t, j] = frame t . filter position j
        g = np.zeros(n)
        for j in range(HISTORY):  # bin t sees frames t-HISTORY .. t-1
            g[HISTORY:] += flat[j : j + n - HISTORY, j]
        return g

    s_tr, s_te = stim(T), stim(test_T)
    g_tr, g_te = drive(s_tr), drive(s_te)
    sd = g_tr[HISTORY:].std()
    rate_tr, rate_te = 0.1 * np.exp(0.9 * g_tr / sd), 0.1 * np.exp(0.9 * g_te / sd)
    rep = rng.poisson(np.broadcast_to(rate_te, (R, test_T)))[:, :, None].astype(np.float32)
    rec = Recording(
        train=Split(stimulus=s_tr.astype(np.float32), time=np.arange(T) * 0.01, counts=rng.poisson(rate_tr)[:, None].astype(np.float32)),
        test=Split(stimulus=s_te.astype(np.float32), time=1000 + np.arange(test_T) * 0.01, counts=rep.mean(0), repeats=rep),
        cell_ids=np.array([1]), frame_dt=0.01, stimulus_kind="naturalscene" if correlated else "whitenoise",
    )
    return rec, filt


def filter_corr(model: LN, truth: np.ndarray) -> float:
    return float(np.corrcoef(model.filters()[0].detach().numpy().ravel(), truth.ravel())[0, 1])


@pytest.fixture(scope="module")
def white() -> tuple[Recording, np.ndarray]:
    return planted_recording()


@pytest.fixture(scope="module")
def white_data(white: tuple[Recording, np.ndarray]):  # noqa: ANN201
    return prepare_data(white[0], FitConfig.from_dict({"model": "ln", "history": HISTORY}))


def random_ln(rank: int, nonlinearity: str, seed: int = 0, n_filters: int = 1) -> LN:
    torch.manual_seed(seed)
    m = LN(HISTORY, (6, 7), 3, rank=rank, nonlinearity=nonlinearity, n_knots=8, n_filters=n_filters)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
        m.set_crop(1, (1, 4, 2, 6))
        if nonlinearity != "softplus":
            m.knots_x.copy_(torch.sort(torch.randn(3, 8) * 3, dim=1).values)
            m.knots_y.copy_(torch.rand(3, 8))
        if nonlinearity == "monotone":
            m.knots_y.copy_(torch.sort(m.knots_y, dim=1).values)
            m.tail_slope.copy_(torch.rand(3))
        if n_filters == 2:
            m.set_crop(2, (0, 3, 0, 3), which=2)
            m.knots_x2.copy_(torch.sort(torch.randn(3, 8) * 3, dim=1).values)
            m.knots_y2.copy_(torch.sort(torch.rand(3, 8), dim=1).values)
            m.tail_slope2.copy_(torch.rand(3))
    return m.eval()


@pytest.mark.parametrize("rank,nonlinearity,n_filters", [(1, "binned", 1), (0, "binned", 1), (1, "softplus", 1), (0, "softplus", 1),
                                                         (1, "monotone", 1), (0, "monotone", 1), (1, "monotone", 2)])
def test_forward_chunks_equals_forward_on_every_window(rank: int, nonlinearity: str, n_filters: int) -> None:
    m = random_ln(rank, nonlinearity, n_filters=n_filters)
    z = torch.randn(2, 30 + HISTORY, 6, 7)
    chunks = m.forward_chunks(z)
    for k in range(2):
        ref = m(stimulus_windows(z[k], HISTORY)[:30].contiguous())
        assert torch.allclose(chunks[k], ref, atol=1e-5)


def test_causal_future_frames_do_not_change_the_output() -> None:
    m = random_ln(1, "softplus")
    fm = FittedModel(m, {"model": m.spec(), "history": HISTORY, "frame_shape": [6, 7], "frame_dt": 0.01, "cell_ids": [1, 2, 3],
                         "stim_mean": 0.0, "stim_std": 1.0})
    rng = np.random.default_rng(0)
    s = rng.standard_normal((80, 6, 7)).astype(np.float32)
    p = fm.predict(s)
    t = 50
    s2 = s.copy()
    s2[t:] = rng.standard_normal(s2[t:].shape)  # frames t, t+1, ... change
    p2 = fm.predict(s2)
    assert np.allclose(p[: t + 1], p2[: t + 1], equal_nan=True)  # bin t only sees frames < t
    assert not np.allclose(p[t + 1 :], p2[t + 1 :])
    assert np.all(np.isnan(p[:HISTORY])) and np.all(np.isfinite(p[HISTORY:]))


@pytest.mark.parametrize("nonlinearity,n_filters", [("binned", 1), ("monotone", 1), ("monotone", 2)])
def test_spec_round_trip_and_build_model(nonlinearity: str, n_filters: int) -> None:
    m = random_ln(1, nonlinearity, n_filters=n_filters)
    m2 = model_from_spec(m.spec())
    m2.load_state_dict(m.state_dict())
    x = torch.randn(5, HISTORY, 6, 7)
    assert torch.equal(m(x), m2.eval()(x))
    assert isinstance(build_model("ln", HISTORY, (), 2), LN)
    assert float(m.weight_l2().detach()) > 0
    with pytest.raises(ModelError):
        LN(HISTORY, (4, 4), 1, rank=2)


def test_binned_nonlinearity_matches_numpy_and_is_flat_beyond_the_ends() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal(5000)
    y = rng.poisson(0.2 * np.exp(g)).astype(float)
    kx, ky = fit_binned_nonlinearity(g, y, 10)
    assert np.all(np.diff(kx) > 0) and np.all(ky > 0)
    assert ky[-1] > 3 * ky[0]  # it follows the exponential
    m = LN(1, (), 1, n_knots=10, nonlinearity="binned")
    m.knots_x[0] = torch.as_tensor(kx)
    m.knots_y[0] = torch.as_tensor(ky)
    probe = np.array([-10.0, -1.0, 0.0, 0.7, 10.0])
    out = m.output(torch.as_tensor(probe, dtype=torch.float32)[:, None]).numpy()[:, 0]
    assert np.allclose(out, apply_binned(probe, kx, ky), rtol=1e-5)
    assert out[0] == pytest.approx(ky[0]) and out[-1] == pytest.approx(ky[-1])


def test_crop_box_stays_inside_the_frame() -> None:
    assert crop_box((0, 0), 5, (10, 12)) == (0, 5, 0, 5)
    assert crop_box((9, 11), 5, (10, 12)) == (5, 10, 7, 12)
    assert crop_box((4, 4), 0, (10, 12)) == (0, 10, 0, 12)


def test_sta_recovers_a_planted_filter(white: tuple[Recording, np.ndarray], white_data) -> None:  # noqa: ANN001
    model, details = fit_ln_revcorr(white_data, method="sta")
    assert filter_corr(model, white[1]) > 0.9
    assert details["cells"][0]["val_corr"] > 0.2


def test_gradient_descent_recovers_a_planted_filter(white: tuple[Recording, np.ndarray], white_data, tmp_path) -> None:  # noqa: ANN001
    cfg = FitConfig.from_dict({"model": "ln", "history": HISTORY, "max_epochs": 4, "lr": 0.03, "patience": 4, "ln_method": "gd"})
    torch.manual_seed(0)
    model = build_model("ln", HISTORY, (8, 8), 1, nonlinearity="softplus")
    init_ln_for_gd(model, white_data)
    before = filter_corr(model, white[1])
    train(model, white_data, cfg, torch.device("cpu"), tmp_path / "ck.pt", tmp_path / "log.jsonl", progress=False)
    assert abs(before) < 0.5  # it starts from random filters
    assert filter_corr(model, white[1]) > 0.9


def test_ridge_undoes_stimulus_correlations() -> None:
    rec, filt = planted_recording(correlated=True, T=15000)
    data = prepare_data(rec, FitConfig.from_dict({"model": "ln", "history": HISTORY}))
    sta_model, _ = fit_ln_revcorr(data, method="sta", crop=7)
    ridge_model, details = fit_ln_revcorr(data, method="ridge", crop=7)
    assert filter_corr(ridge_model, filt) > 0.9
    assert filter_corr(ridge_model, filt) > filter_corr(sta_model, filt) + 0.1  # the raw STA is blurred
    with pytest.raises(ConfigError):
        fit_ln_revcorr(data, method="ridge", rank=0)


def test_default_ln_beats_a_full_sta_from_little_data() -> None:
    from retinakit.evaluation.metrics import evaluate

    rec, _ = planted_recording(frame=(12, 12), T=4000, test_T=800, R=8, seed=4)
    data = prepare_data(rec, FitConfig.from_dict({"model": "ln", "history": HISTORY}))
    default, _ = fit_ln_revcorr(data, method="sta")  # cropped, rank 1, binned nonlinearity
    full, _ = fit_ln_revcorr(data, method="sta", rank=0, crop=0)  # the raw 10x12x12 STA
    meta = {"history": HISTORY, "frame_shape": [12, 12], "frame_dt": 0.01, "cell_ids": [1], "stim_mean": 0.0, "stim_std": 1.0}
    r_default = evaluate(FittedModel(default, {**meta, "model": default.spec()}), rec)["r"][0]
    r_full = evaluate(FittedModel(full, {**meta, "model": full.spec()}), rec)["r"][0]
    assert r_default > r_full + 0.05
