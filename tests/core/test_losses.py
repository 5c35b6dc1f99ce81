"""Loss properties: zero where the method says zero, gates, detached teachers."""

import torch

from equicam.core.losses import (
    LossWeights,
    classification_loss,
    er_loss,
    gated_distance,
    kl_loss,
    method_losses,
    normalise_cam,
)
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.transforms import SpatialTransform, apply_transform


def _blob(n=2, size=16):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    maps = torch.stack([torch.exp(-((yy - 4 - i) ** 2 + (xx - 9) ** 2) / 8.0) for i in range(n)])
    return maps.float()


def test_normalise_cam_is_in_unit_range_and_flat_maps_are_zero():
    cams = torch.randn(3, 8, 8) * 5
    out = normalise_cam(cams)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out.flatten(1).max(dim=1).values, torch.ones(3))
    assert torch.all(normalise_cam(torch.full((1, 4, 4), -2.0)) == 0)


def test_an_exactly_equivariant_map_gives_zero_er():
    """A "network" whose CAM is the image itself is equivariant to every A."""
    x = _blob()
    y = torch.tensor([1, 1])
    for kind in ("hflip", "vflip", "rot90", "rot270"):
        t = SpatialTransform(kind)
        a_cam_x = apply_transform(normalise_cam(x)[:, None], t)[:, 0]
        cam_ax = normalise_cam(apply_transform(x[:, None], t)[:, 0])
        assert er_loss(a_cam_x, cam_ax, y) == 0
    wrong = normalise_cam(x.flip(-1))
    assert er_loss(normalise_cam(x), wrong, y) > 0
    assert er_loss(normalise_cam(x), wrong, torch.tensor([0, 0])) == 0, "negatives must not count"


def test_kl_of_equal_distributions_is_zero_and_positive_otherwise():
    logits = torch.randn(4, 2)
    assert kl_loss(logits, logits.clone(), 10.0).abs() < 1e-4  # float rounding x T^2
    assert kl_loss(logits, logits + torch.tensor([3.0, -3.0]), 10.0) > 1e-2


def test_gated_distance_is_scale_invariant_and_gated():
    p = _blob()
    assert gated_distance(p, 5 * p, torch.tensor([1, 1])).abs() < 1e-7
    q = p.flip(-1)
    assert gated_distance(p, q, torch.tensor([1, 1])) > 0
    assert gated_distance(p, q, torch.tensor([0, 0])) == 0


def test_classification_loss_prefers_correct_confident_logits():
    y = torch.tensor([1, 0])
    right = torch.tensor([[-4.0, 4.0], [4.0, -4.0]])
    assert classification_loss(right, right, y) < classification_loss(-right, -right, y)


def _tiny(modalities=("t1", "t2", "flair")):
    torch.manual_seed(0)
    config = ModelConfig(modalities=modalities, widths=(4, 8, 8, 8), input_size=32)
    return MultiModalCAM(config)


def _forward(model, t):
    x = {m: torch.randn(4, 1, 32, 32) for m in model.modalities}
    ax = {m: apply_transform(v, t) for m, v in x.items()}
    return model(x), model(ax)


def test_baseline_weights_give_the_classification_loss_alone():
    model = _tiny()
    t = SpatialTransform("hflip")
    cams_x, cams_ax = _forward(model, t)
    y = torch.tensor([1, 0, 1, 1])
    losses = method_losses(cams_x, cams_ax, y, t, LossWeights(kl=0, er=0, cmer=0))
    for terms in losses.values():
        assert terms["kl"] == terms["er"] == terms["cmer"] == 0
        assert torch.equal(terms["total"], terms["cls"])


def test_cmer_gates_switch_terms_off_when_the_teacher_says_healthy():
    t = SpatialTransform("rot90")
    y = torch.tensor([1, 1])
    student = torch.randn(2, 2, 16, 16)
    healthy_teacher = torch.zeros(2, 2, 16, 16)
    healthy_teacher[:, 0] = 1.0  # teacher predicts class 0 everywhere
    cams = {"a": student, "b": healthy_teacher}
    losses = method_losses(
        cams, {k: apply_transform(v, t) for k, v in cams.items()}, y, t, LossWeights(kl=0, er=0)
    )
    assert losses["a"]["cmer"] == 0
    tumour_teacher = torch.randn(2, 2, 16, 16)
    tumour_teacher[:, 1] += 5.0
    cams = {"a": student, "b": tumour_teacher}
    losses = method_losses(
        cams, {k: apply_transform(v, t) for k, v in cams.items()}, y, t, LossWeights(kl=0, er=0)
    )
    assert losses["a"]["cmer"] > 0


def test_each_network_gets_gradient_only_from_its_own_loss():
    model = _tiny()
    t = SpatialTransform("translate", shift=(0.1, -0.2))
    cams_x, cams_ax = _forward(model, t)
    y = torch.tensor([1, 0, 1, 1])
    losses = method_losses(cams_x, cams_ax, y, t, LossWeights())
    assert all(terms["kl"] > 0 and terms["cmer"] >= 0 for terms in losses.values())
    losses["t2"]["total"].backward()
    for m, net in model.nets.items():
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        if m == "t2":
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads), f"teacher {m} received a gradient"


def test_one_modality_has_no_cross_terms():
    model = _tiny(("flair",))
    t = SpatialTransform("vflip")
    cams_x, cams_ax = _forward(model, t)
    terms = method_losses(cams_x, cams_ax, torch.tensor([1, 1, 0, 1]), t, LossWeights())["flair"]
    assert terms["kl"] == 0 and terms["cmer"] == 0 and torch.isfinite(terms["total"])
