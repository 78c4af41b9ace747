"""The CNN's space x time separable first layer: rank 1 per channel, the same interface as the full one."""

from __future__ import annotations

import pytest
import torch

from retinakit.errors import ModelError
from retinakit.models import model_from_spec
from retinakit.models.cnn import CNN, SeparableConv2d


def test_separable_kernel_is_rank_one_per_channel_and_convolves_like_conv2d() -> None:
    torch.manual_seed(0)
    layer = SeparableConv2d(7, 3, (4, 5))
    w = layer.weight
    assert tuple(w.shape) == (3, 7, 4, 5)
    for f in range(3):
        s = torch.linalg.svdvals(w[f].reshape(7, 20))
        assert s[1] < 1e-5 * s[0]  # one temporal filter times one spatial filter
    assert sum(p.numel() for p in layer.parameters()) == 3 * (7 + 20) + 3
    x = torch.randn(2, 7, 9, 10)
    assert torch.allclose(layer(x), torch.nn.functional.conv2d(x, w, layer.bias), atol=1e-6)


@pytest.mark.parametrize("readout", ["dense", "factorized"])
def test_separable_cnn_chunks_match_windows_and_round_trip(readout: str) -> None:
    torch.manual_seed(2)
    m = CNN(6, (12, 12), 3, filters=(4, 5), kernels=(5, 3), batchnorm=True, readout=readout, first_layer="separable").eval()
    zc = torch.randn(2, 6 + 9, 12, 12)
    windows = torch.stack([zc[k, l : l + 6] for k in range(2) for l in range(9)])
    assert torch.allclose(m.forward_chunks(zc).reshape(-1, 3), m(windows), atol=1e-4)
    spec = m.spec()
    assert spec["first_layer"] == "separable"
    again = model_from_spec(spec)
    again.load_state_dict(m.state_dict())
    assert torch.allclose(again.eval()(windows), m(windows), atol=1e-6)
    old = dict(spec)
    del old["first_layer"]  # runs written before the option: the full layer
    assert model_from_spec(old).first_layer == "full"


def test_auto_first_layer_per_model() -> None:
    from retinakit.fitting.config import FitConfig

    assert FitConfig().resolved_first_layer() == "separable"  # bn-cnn, the default model
    assert FitConfig.from_dict({"model": "cnn"}).resolved_first_layer() == "full"  # as published
    assert FitConfig.from_dict({"model": "rcnn"}).resolved_first_layer() == "separable"  # the bn-cnn's front end
    assert FitConfig.from_dict({"model": "rcnn"}).resolved_readout() == "factorized"  # and its readout
    assert FitConfig.from_dict({"first_layer": "full"}).resolved_first_layer() == "full"


def test_a_run_saved_before_the_options_existed_keeps_its_network() -> None:
    from retinakit.fitting.config import FitConfig

    old = FitConfig().to_dict()
    del old["first_layer"], old["readout"]  # a config.json written before these options
    cfg = FitConfig.from_saved(old)
    assert (cfg.resolved_first_layer(), cfg.resolved_readout()) == ("full", "dense")
    assert FitConfig.from_saved(FitConfig().to_dict()).resolved_first_layer() == "separable"


def test_unknown_first_layer_is_an_error() -> None:
    from retinakit.errors import ConfigError
    from retinakit.fitting.config import FitConfig

    with pytest.raises(ModelError, match="first_layer"):
        CNN(6, (12, 12), 2, kernels=(5, 3), first_layer="lowrank")
    with pytest.raises(ConfigError, match="first_layer"):
        FitConfig.from_dict({"first_layer": "lowrank"})


def test_a_fit_records_its_first_layer(tmp_path) -> None:  # noqa: ANN001
    from conftest import make_recording
    from retinakit.fitting.run_folder import load_run
    from retinakit.pipeline import run_fit

    rec = make_recording(frame_shape=(6, 6), n_cells=2, train_bins=600, test_bins=100, n_repeats=3)
    opts = {"history": 6, "filters": [2, 2], "kernels": [3, 3], "max_steps": 20}
    run_fit(rec, tmp_path / "sep", {**opts, "first_layer": "separable"}, progress=False, figures=False)
    run_fit(rec, tmp_path / "full", {**opts, "first_layer": "full"}, progress=False, figures=False)
    assert load_run(tmp_path / "sep").meta["model"]["first_layer"] == "separable"
    assert load_run(tmp_path / "full").meta["model"]["first_layer"] == "full"
