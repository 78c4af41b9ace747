"""The temporal CNN for full-field stimuli: kernels in seconds, channels that scale, same function in every path."""

from __future__ import annotations

import numpy as np
import torch

from conftest import make_recording
from retinakit.fitting import load_run
from retinakit.models import build_model, model_from_spec
from retinakit.models.temporal_cnn import TemporalCNN, temporal_channels, temporal_kernels
from retinakit.pipeline import run_fit


def test_kernels_are_set_in_seconds_and_fit_the_history() -> None:
    assert temporal_kernels(40, 30.0) == (15, 11)
    k30, k100 = temporal_kernels(40, 30.0), temporal_kernels(40, 100.0)
    assert sum(k100) <= 40 - 10 + 2  # shrunk to leave a quarter of the history to the readout
    assert k100[0] >= k30[0]  # more frames per second: at least as many frames per kernel
    for h in (5, 12, 40, 200):
        for rate in (10.0, 30.0, 60.0, 100.0, 1000.0):
            k1, k2 = temporal_kernels(h, rate)
            assert k1 >= 1 and k2 >= 1 and h - k1 - k2 + 2 >= 1


def test_channels_grow_with_the_population() -> None:
    assert temporal_channels(8) == (8, 8)
    assert temporal_channels(233)[0] > 8
    assert temporal_channels(100_000) == (64, 64)


def test_full_field_cnn_is_temporal_and_records_the_choice() -> None:
    m = build_model("bn-cnn", 40, (), 233, filters=(8, 8), noise_std=0.05, frame_rate=30.0)
    assert isinstance(m, TemporalCNN)
    assert m.kernel_lengths == (15, 11) and m.filters[0] > 8
    assert "temporal CNN" in m.geometry_note and "233 cells" in m.geometry_note
    m2 = model_from_spec(m.spec())
    m2.load_state_dict(m.state_dict())
    x = torch.randn(4, 40)
    m.eval()
    m2.eval()
    assert torch.allclose(m(x), m2(x))


def test_forward_chunks_equals_windows_and_is_causal() -> None:
    torch.manual_seed(0)
    net = TemporalCNN(10, 4, channels=(3, 5), kernels=(4, 3), batchnorm=True)
    net.eval()
    z = torch.randn(2, 30 + 10, 1, 1)
    fast = net.forward_chunks(z)
    windows = torch.stack([z[:, l : l + 10, 0, 0] for l in range(30)], dim=1)  # (2, 30, 10)
    slow = net(windows.reshape(-1, 10)).reshape(2, 30, 4)
    assert torch.allclose(fast, slow, atol=1e-5)
    z2 = z.clone()
    z2[:, 25:] += 3.0  # frames from 25 on: bins <= 25 - 10 + ... must not change
    out2 = net.forward_chunks(z2)
    # row l uses frames l .. l + 9: rows 0..15 end before frame 25
    assert torch.allclose(fast[:, :16], out2[:, :16])
    assert not torch.allclose(fast[:, 16:], out2[:, 16:])


def test_fit_on_full_field_uses_the_temporal_cnn(tmp_path) -> None:  # noqa: ANN001
    rec = make_recording(frame_shape=(), n_cells=3, train_bins=3000, frame_dt=1 / 30, kind="fullfield")
    m = run_fit(rec, tmp_path / "run", {"history": 20, "max_steps": 60}, progress=False, figures=True)
    assert "temporal CNN" in m["geometry_note"]
    assert m["checks"]["passed"]
    fm = load_run(tmp_path / "run")
    assert isinstance(fm.model, TemporalCNN)
    pred = fm.predict(rec.test.stimulus)
    assert np.all(np.isnan(pred[:20])) and np.all(np.isfinite(pred[20:]))
    assert (tmp_path / "run" / "figures" / "filters.png").is_file()
