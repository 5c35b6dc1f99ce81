"""The per-modality CAM U-Net and the multi-modal container."""

import pytest
import torch

from equicam.core.model import PAPER_WIDTHS, CAMNet, ModelConfig, MultiModalCAM, fold_batchnorm


def test_cam_has_the_input_size_and_logits_are_its_spatial_mean():
    net = CAMNet((4, 8, 8, 8)).eval()
    x = torch.randn(3, 1, 40, 48)
    cam = net(x)
    assert cam.shape == (3, 2, 40, 48)
    torch.testing.assert_close(CAMNet.logits(cam), cam.mean(dim=(2, 3)))
    assert net.features(x).shape == (3, 4, 40, 48)
    assert net.head.bias is None


def test_a_network_needs_four_levels():
    with pytest.raises(ValueError, match="4 levels"):
        CAMNet((4, 8, 8))


def test_any_subset_of_modalities_runs():
    model = MultiModalCAM(ModelConfig(modalities=("t1", "flair"), widths=(4, 8, 8, 8)))
    out = model({"flair": torch.randn(2, 1, 32, 32)})
    assert list(out) == ["flair"]
    assert model.modalities == ("t1", "flair")


def test_networks_share_no_weights():
    model = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8)))
    ids = [{id(p) for p in net.parameters()} for net in model.nets.values()]
    assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1 :])


def test_config_round_trips_and_refuses_unknown_keys():
    config = ModelConfig(modalities=("t2",), widths=(8, 16, 32, 32), input_size=96)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model settings"):
        ModelConfig.from_dict({"depth": 5})


def test_paper_width_network_has_a_few_million_parameters():
    n = sum(p.numel() for p in CAMNet(PAPER_WIDTHS).parameters())
    assert 3e6 < n < 1e7


def test_folding_batchnorm_keeps_the_maps_and_leaves_the_network_alone():
    torch.manual_seed(0)
    net = CAMNet((4, 8, 8, 8))
    net.train()
    for _ in range(3):  # running statistics that differ from the identity
        net(torch.randn(8, 1, 32, 32) * 3 + 1)
    net.eval()
    x = torch.randn(4, 1, 32, 32)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 15
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(folded.features(x), net.features(x), rtol=1e-4, atol=1e-5)


def test_slice_normalisation_makes_a_network_blind_to_each_slice_s_brain_scale_and_shift():
    torch.manual_seed(0)
    net = CAMNet((4, 8, 8, 8), input_norm="slice").eval()
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 4:28, 6:26] = torch.randn(2, 1, 24, 20)
    shifted = torch.where(x != 0, 3.0 * x + torch.tensor([0.5, -2.0]).view(2, 1, 1, 1), x)
    torch.testing.assert_close(net(shifted), net(x), atol=1e-5, rtol=1e-4)


def test_input_normalisation_is_part_of_the_config():
    config = ModelConfig(widths=(4, 8, 8, 8), input_norm="slice")
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert all(net.slice_norm for net in MultiModalCAM(config).nets.values())
    assert ModelConfig.from_dict({"widths": [4, 8, 8, 8]}).input_norm == "case"
    with pytest.raises(ValueError, match="input_norm"):
        ModelConfig(input_norm="volume")
