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
