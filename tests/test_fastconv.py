"""The fast training path computes exactly the reference function: first layer over whole chunks
(FFT or conv3d) vs ``Conv2d`` with time as channels on every window; outputs and gradients,
CNN and BN-CNN in train and eval mode, hidden noise on, full-field and non-square frames; no
window is ever materialised; ``retinakit bench`` end to end on a tiny problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from retinakit.errors import ConfigError, ModelError
from retinakit.models import build_model
from retinakit.models.fastconv import ChunkSource, chunk_conv, choose_method, good_fft_size
from retinakit.models.fitted import stimulus_windows


def reference_windows(zc: torch.Tensor, history: int) -> torch.Tensor:
    """All windows of all chunks, materialised, in (chunk, row) order: the naive batch."""
    return torch.cat([stimulus_windows(zc[k], history) for k in range(zc.shape[0])]).contiguous()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max().clamp_min(1e-300))


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


class MaxTensor(TorchDispatchMode):
    """Records the largest tensor (number of elements) any operation produces inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


# ----------------------------------------------------------------------------- helpers
def test_good_fft_size_is_the_smallest_5_smooth_number() -> None:
    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 400):
        g = good_fft_size(n)
        assert g >= n and smooth(g)
        assert not any(smooth(m) for m in range(n, g))
    assert good_fft_size(103) == 108 and good_fft_size(289) == 300


def test_auto_method_uses_fft_for_the_reference_geometry_and_direct_for_full_field() -> None:
    assert choose_method(40, (15, 15), (50, 50), 8, 64) == "fft"
    assert choose_method(40, (1, 1), (1, 1), 8, 64) == "direct"


# ----------------------------------------------------------------------------- first layer
@pytest.mark.parametrize("method", ["fft", "direct"])
@pytest.mark.parametrize(
    "history,hw,kernel,L",
    [(7, (12, 9), (5, 4), 13), (10, (1, 1), (1, 1), 20), (4, (6, 11), (6, 3), 1), (1, (5, 5), (3, 3), 6)],
)
def test_chunk_conv_equals_window_conv2d_with_gradients(method: str, history: int, hw: tuple[int, int], kernel: tuple[int, int], L: int) -> None:
    torch.manual_seed(0)
    K = 3
    conv = torch.nn.Conv2d(history, 4, kernel).double()
    zc = torch.randn(K, L + history, *hw, dtype=torch.float64)
    gy = torch.randn(K * L, 4, hw[0] - kernel[0] + 1, hw[1] - kernel[1] + 1, dtype=torch.float64)

    ref = conv(reference_windows(zc, history))
    (ref * gy).sum().backward()
    g_ref = (conv.weight.grad.clone(), conv.bias.grad.clone())
    conv.zero_grad()
    out = chunk_conv(zc, conv.weight, conv.bias, L, method)
    assert out.shape == (K, L) + ref.shape[1:]
    out = out.reshape(ref.shape)
    (out * gy).sum().backward()
    assert rel(out, ref) < 1e-12
    assert rel(conv.weight.grad, g_ref[0]) < 1e-12 and rel(conv.bias.grad, g_ref[1]) < 1e-12


def test_impulse_comes_back_as_the_flipped_filter_at_the_right_rows() -> None:
    """One bright pixel at frame t0 is seen by window l at position t0 - l (known answer)."""
    history, L = 5, 12
    w = torch.randn(1, history, 3, 3, dtype=torch.float64)
    zc = torch.zeros(1, L + history, 7, 7, dtype=torch.float64)
    t0, y0, x0 = 8, 3, 4
    zc[0, t0, y0, x0] = 1.0
    out = chunk_conv(zc, w, None, L, "fft")[0, :, 0]  # (L, 5, 5)
    for l in range(L):
        j = t0 - l
        expect = torch.zeros(5, 5, dtype=torch.float64)
        if 0 <= j < history:  # output (p, q) sees pixel (p + a, q + b): the filter flipped in space
            for a in range(3):
                for b in range(3):
                    p, q = y0 - a, x0 - b
                    if 0 <= p < 5 and 0 <= q < 5:
                        expect[p, q] = w[0, j, a, b]
        assert torch.allclose(out[l], expect, atol=1e-12), l


def test_chunk_conv_rejects_bad_input() -> None:
    w = torch.zeros(2, 4, 3, 3)
    with pytest.raises(ModelError):
        chunk_conv(torch.zeros(1, 5, 8, 8), w, None, 4)  # needs 4 + 4 - 1 = 7 frames
    with pytest.raises(ConfigError):
        chunk_conv(torch.zeros(1, 9, 8, 8), w, None, 4, "fast")


# ----------------------------------------------------------------------------- whole models
CASES = [
    ("cnn", (12, 10), 8, {"kernels": ((5, 4), (3, 3))}),
    ("bn-cnn", (9, 14), 6, {"kernels": ((4, 5), (3, 2))}),
    ("cnn", (), 10, {}),
    ("bn-cnn", (), 5, {}),
]


@pytest.mark.parametrize("kind,frame,history,opts", CASES)
@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("method", ["fft", "direct"])
def test_forward_chunks_equals_forward_outputs_and_gradients(kind: str, frame: tuple[int, ...], history: int, opts: dict, train_mode: bool, method: str) -> None:
    """Float64, hidden noise ON: with the same random state the noise is the same in both paths."""
    torch.manual_seed(1)
    model = build_model(kind, history, frame, 3, noise_std=0.1, **opts).double()
    model.train(train_mode)
    hw = model.input_hw
    K, L = 3, 11
    zc = torch.randn(K, L + history, *hw, dtype=torch.float64)
    target = torch.rand(K * L, 3, dtype=torch.float64)

    def loss(pred: torch.Tensor) -> torch.Tensor:
        return (pred - target * torch.log(pred)).mean()

    torch.manual_seed(7)
    ref = model(reference_windows(zc, history))
    loss(ref).backward()
    g_ref = grads(model)
    model.zero_grad()
    torch.manual_seed(7)
    out = model.forward_chunks(zc, method=method)
    assert out.shape == (K, L, 3)
    loss(out.reshape(K * L, 3)).backward()
    assert rel(out.reshape(K * L, 3), ref) < 1e-10
    g = grads(model)
    gmax = max(float(v.abs().max()) for v in g_ref.values())
    for name, v in g_ref.items():
        # a bias just before batch norm has a zero gradient: compare it in absolute terms
        assert float((g[name] - v).abs().max()) <= 1e-10 * max(float(v.abs().max()), 1e-3 * gmax), name


@pytest.mark.parametrize("kind", ["cnn", "bn-cnn"])
def test_float32_at_reference_size_agrees_within_1e4(kind: str) -> None:
    """The McIntosh geometry (50x50, history 40, 15/11 kernels) in float32 with hidden noise on,
    through the bench's check (which aligns the rare ReLU units that float32 rounding puts on
    opposite sides of 0: see :func:`retinakit.bench.check_equal`)."""
    from retinakit.bench import _Fast, _Naive, check_equal, simulate

    movie, counts = simulate(300, 50, 4, seed=0)
    torch.manual_seed(0)
    a = build_model(kind, 40, (50, 50), 4)
    b = build_model(kind, 40, (50, 50), 4)
    b.load_state_dict(a.state_dict())
    cpu = torch.device("cpu")
    res = check_equal(a, b, _Naive(movie, counts, 40, cpu), _Fast(movie, counts, 40, cpu), np.array([3, 150]), 8)
    assert res["passed"], res
    assert res["max_rel_err_output"] < 1e-5 and res["max_rel_err_grad"] < 1e-4


def test_bench_check_catches_a_real_difference() -> None:
    """A perturbed fast model must fail the check (alignment only touches units near 0)."""
    from retinakit.bench import _Fast, _Naive, check_equal, simulate

    movie, counts = simulate(200, 12, 2, seed=1)
    torch.manual_seed(0)
    a = build_model("cnn", 8, (12, 12), 2)
    b = build_model("cnn", 8, (12, 12), 2)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.conv1.weight[0, 0, 0, 0] += 1e-3
    cpu = torch.device("cpu")
    res = check_equal(a, b, _Naive(movie, counts, 8, cpu), _Fast(movie, counts, 8, cpu), np.array([0, 90]), 16)
    assert not res["passed"]


def test_row_l_uses_frames_l_to_l_plus_history_minus_1_only() -> None:
    """Causality and alignment: changing frame f changes exactly rows f-history+1 .. f."""
    torch.manual_seed(0)
    history, L = 6, 10
    model = build_model("cnn", history, (8, 8), 2, kernels=(3, 3)).double().eval()
    zc = torch.randn(1, L + history, 8, 8, dtype=torch.float64)
    base = model.forward_chunks(zc)[0]
    for f in (0, 7, L + history - 2, L + history - 1):
        z2 = zc.clone()
        z2[0, f] += 3.0
        changed = (model.forward_chunks(z2)[0] - base).abs().amax(dim=1) > 1e-12
        expect = torch.zeros(L, dtype=torch.bool)
        expect[max(0, f - history + 1) : min(L, f + 1)] = True
        assert torch.equal(changed, expect), f


def test_forward_chunks_edge_cases() -> None:
    model = build_model("cnn", 4, (6, 6), 2, kernels=(3, 2))
    assert model.forward_chunks(torch.zeros(0, 9, 6, 6)).shape == (0, 5, 2)
    with pytest.raises(ModelError):
        model.forward_chunks(torch.zeros(2, 4, 6, 6))  # no row has a full history and a target
    with pytest.raises(ModelError):
        model.forward_chunks(torch.zeros(2, 9, 5, 6))  # wrong frame geometry


@pytest.mark.parametrize("kind", ["cnn", "ln"])
def test_forward_chunks_never_materialises_windows(kind: str) -> None:
    """No tensor inside forward + backward is anywhere near the size of the stacked windows."""
    torch.manual_seed(0)
    history, K, L, side = 40, 2, 200, 16
    model = build_model(kind, history, (side, side), 3, **({"kernels": (5, 3)} if kind == "cnn" else {"nonlinearity": "softplus"}))
    model.train()
    zc = torch.randn(K, L + history, side, side)
    windows = K * L * history * side * side
    with MaxTensor() as probe:
        out = model.forward_chunks(zc)
        out.sum().backward()
    assert probe.max_numel < windows / 3, (probe.max_numel, windows)


# ----------------------------------------------------------------------------- data path
def test_chunk_source_keeps_the_movie_compact_and_serves_zscored_chunks() -> None:
    rng = np.random.default_rng(0)
    movie = rng.integers(0, 256, size=(50, 4, 3), dtype=np.uint8)
    src = ChunkSource(movie, history=5, mean=100.0, std=20.0)
    assert src.movie.dtype == torch.uint8 and src.n_frames == 50
    zc = src.chunks(torch.tensor([0, 17]), 8)
    assert zc.shape == (2, 13, 4, 3) and zc.dtype == torch.float32
    np.testing.assert_allclose(zc[1].numpy(), (movie[17:30].astype(np.float32) - 100.0) / 20.0, rtol=1e-6)
    full = ChunkSource(np.arange(30, dtype=np.float32), history=3, mean=0.0, std=1.0)
    assert full.chunks(torch.tensor([2]), 4).shape == (1, 7, 1, 1)
    with pytest.raises(ModelError):
        ChunkSource(movie, 5, 0.0, 0.0)


# ----------------------------------------------------------------------------- bench
def test_bench_runs_end_to_end_and_the_equality_check_passes() -> None:
    from retinakit.bench import format_bench, run_bench

    res = run_bench(frames=400, size=12, history=8, cells=3, samples=64, batch=32, chunk=16, progress=False)
    assert res["check"]["passed"], res["check"]
    assert res["check"]["max_rel_err_output"] < 1e-4
    for kind in ("naive", "fast"):
        assert res[kind]["samples"] == 64 and res[kind]["samples_per_s"] > 0 and res[kind]["peak_rss_mb"] > 0
    assert res["speedup"] > 0 and res["matmul_gflops"] > 0
    text = format_bench(res)
    assert "PASS" in text and "speedup" in text


def test_bench_cli_json_and_bad_options() -> None:
    from click.testing import CliRunner

    from retinakit.cli import main

    r = CliRunner().invoke(main, ["bench", "--frames", "300", "--size", "10", "--history", "6", "--cells", "2", "--samples", "32", "--batch", "16", "--chunk", "8", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["check"]["passed"] and res["config"]["threads"] == 1 and res["config"]["chunk"] == 8
    r = CliRunner().invoke(main, ["bench", "--frames", "20", "--history", "40"])
    assert r.exit_code == 2 and "error:" in r.output
