"""The CNN's factorised readout (spatial mask x features per cell): same interface as the dense one."""

from __future__ import annotations

import pytest
import torch

from retinakit.errors import ModelError
from retinakit.models import model_from_spec
from retinakit.models.cnn import CNN


def test_factorised_readout_is_a_mask_times_features_and_round_trips() -> None:
    torch.manual_seed(0)
    m = CNN(6, (12, 12), 3, filters=(4, 5), kernels=(5, 3), batchnorm=True, readout="factorized").eval()
    h2 = w2 = 12 - 5 + 1 - 3 + 1
    assert tuple(m.mask_weight.shape) == (3, h2, w2) and tuple(m.feature_weight.shape) == (3, 5)
    assert sum(p.numel() for n, p in m.named_parameters() if "mask" in n or "feature" in n) == 3 * (h2 * w2 + 5)
    x = torch.randn(7, 6, 12, 12)
    a2 = m.hidden(x)[1]
    drive = torch.stack([(a2 * m.mask_weight[n][None, None] * m.feature_weight[n][None, :, None, None]).sum((1, 2, 3)) for n in range(3)], 1)
    expected = torch.nn.functional.softplus(m.bn_out(drive + m.readout_bias))
    assert torch.allclose(m(x), expected, atol=1e-5)
    # forward_chunks (the training path) gives the same as forward on every window
    zc = torch.randn(2, 6 + 9, 12, 12)
    chunks = m.forward_chunks(zc)
    windows = torch.stack([zc[k, l : l + 6] for k in range(2) for l in range(9)])
    assert torch.allclose(chunks.reshape(-1, 3), m(windows), atol=1e-4)
    # the spec names the readout; a rebuilt model loads the weights
    spec = m.spec()
    assert spec["readout"] == "factorized"
    again = model_from_spec(spec)
    again.load_state_dict(m.state_dict())
    assert torch.allclose(again.eval()(x), m(x), atol=1e-6)
    # an old spec (no readout key) is the dense network
    old = dict(spec)
    del old["readout"]
    assert model_from_spec(old).readout_kind == "dense"


def test_unknown_readout_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="readout"):
        CNN(6, (12, 12), 2, kernels=(5, 3), readout="sparse")


def test_auto_readout_per_model_and_explicit_choice() -> None:
    from retinakit.errors import ConfigError
    from retinakit.fitting.config import FitConfig

    assert FitConfig().resolved_readout() == "factorized"  # bn-cnn, the default model
    assert FitConfig.from_dict({"model": "cnn"}).resolved_readout() == "dense"  # as published
    assert FitConfig.from_dict({"readout": "dense"}).resolved_readout() == "dense"
    with pytest.raises(ConfigError, match="readout"):
        FitConfig.from_dict({"readout": "sparse"})


def test_a_fit_records_its_readout(tmp_path) -> None:  # noqa: ANN001
    from conftest import make_recording
    from retinakit.fitting.run_folder import load_run
    from retinakit.pipeline import run_fit

    tiny_rec = make_recording(frame_shape=(6, 6), n_cells=2, train_bins=600, test_bins=100, n_repeats=3)

    opts = {"history": 6, "filters": [2, 2], "kernels": [3, 3], "max_steps": 20}
    run_fit(tiny_rec, tmp_path / "auto", opts, progress=False, figures=False)
    run_fit(tiny_rec, tmp_path / "dense", {**opts, "readout": "dense"}, progress=False, figures=False)
    assert load_run(tmp_path / "auto").meta["model"]["readout"] == "factorized"
    assert load_run(tmp_path / "dense").meta["model"]["readout"] == "dense"
