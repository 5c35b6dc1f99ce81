"""Loss properties: zero where the method says zero, gates, detached teachers."""

import pytest
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
from equicam.core.transforms import KINDS, SpatialTransform, apply_transform, sample_transform


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


def test_kl_sends_no_gradient_to_the_teacher():
    student = torch.randn(4, 2, requires_grad=True)
    teacher = torch.randn(4, 2, requires_grad=True)
    kl_loss(student, teacher, 10.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


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


@pytest.mark.parametrize("kind", ["hflip", "vflip", "rot90", "rot180", "rot270"])
def test_equivariant_modalities_that_agree_give_zero_er_and_cmer(kind):
    """CAMs that follow A exactly and agree across modalities up to scale: ER = CMER = 0."""
    t = SpatialTransform(kind)
    tumour = 4 * _blob(n=3) - 1  # partly negative: ReLU and min-max matter
    cam = torch.stack([torch.full_like(tumour, -2.0), tumour], dim=1)  # tumour logit wins
    cams_x = {"a": cam, "b": 3 * cam}
    cams_ax = {m: apply_transform(v, t) for m, v in cams_x.items()}
    y = torch.tensor([1, 1, 0])
    losses = method_losses(cams_x, cams_ax, y, t, LossWeights())
    for terms in losses.values():
        assert terms["er"] == 0
        assert terms["cmer"].abs() < 1e-9
        assert terms["kl"] > 0, "the logits differ by a factor 3"
    cams_ax["b"] = cams_ax["b"].flip(-1).flip(-2)  # b no longer follows A
    losses = method_losses(cams_x, cams_ax, y, t, LossWeights())
    assert losses["a"]["er"] == 0 and losses["b"]["er"] > 0
    assert losses["a"]["cmer"] > 0 and losses["b"]["cmer"] > 0


def test_summed_totals_give_each_network_exactly_its_own_gradient():
    """One backward of sum_m L_m equals, per network, the gradient of its own L_m alone."""
    model = _tiny()
    with torch.no_grad():  # every network calls every slice tumour: all CMER gates open
        for net in model.nets.values():
            net.head.weight[1] = net.head.weight[1].abs()
            net.head.weight[0] = -net.head.weight[0].abs()
    t = SpatialTransform("rot90")
    cams_x, cams_ax = _forward(model, t)
    y = torch.tensor([1, 0, 1, 1])
    losses = method_losses(cams_x, cams_ax, y, t, LossWeights())
    assert all(terms["kl"] > 0 and terms["cmer"] > 0 for terms in losses.values())
    own = {
        m: torch.autograd.grad(
            losses[m]["total"], list(net.parameters()), retain_graph=True, allow_unused=True
        )
        for m, net in model.nets.items()
    }
    sum(terms["total"] for terms in losses.values()).backward()
    for m, net in model.nets.items():
        for p, g in zip(net.parameters(), own[m], strict=True):
            assert g is not None
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_a_trains_through_the_losses(kind):
    """Including rescale, where Ax and its CAM have another size than x."""
    model = _tiny(("t1", "t2"))
    t = SpatialTransform(kind, shift=(-0.25, 0.3), size=40)
    cams_x, cams_ax = _forward(model, t)
    assert cams_ax["t1"].shape[-1] == (40 if kind == "rescale" else 32)
    losses = method_losses(cams_x, cams_ax, torch.tensor([1, 1, 0, 1]), t, LossWeights())
    total = sum(terms["total"] for terms in losses.values())
    assert torch.isfinite(total) and losses["t1"]["er"] > 0
    total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_low_precision_cams_give_float32_losses():
    t = sample_transform(torch.Generator().manual_seed(1), 16)
    cams_x = {m: torch.randn(4, 2, 16, 16) for m in ("a", "b")}
    cams_ax = {
        m: apply_transform(v, t) + 0.3 * torch.randn(4, 2, 16, 16) for m, v in cams_x.items()
    }
    y = torch.tensor([1, 0, 1, 1])
    full = method_losses(cams_x, cams_ax, y, t, LossWeights())
    half = method_losses(
        {m: v.bfloat16() for m, v in cams_x.items()},
        {m: v.bfloat16() for m, v in cams_ax.items()},
        y,
        t,
        LossWeights(),
    )
    for m in full:
        for name, value in half[m].items():
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, full[m][name], rtol=0.05, atol=1e-6)


def test_summed_cmer_is_a_bounded_cosine_distance():
    p = torch.zeros(2, 8, 8)
    q = torch.zeros(2, 8, 8)
    p[:, :4], q[:, 4:] = 1.0, 1.0  # disjoint supports: cosine 0
    gate = torch.tensor([1, 1])
    assert float(gated_distance(p, q, gate, "sum")) == pytest.approx(2.0)
    assert float(gated_distance(p, 3 * p, gate, "sum")) == pytest.approx(0.0, abs=1e-6)
    assert float(gated_distance(p, q, gate, "mean")) == pytest.approx(2.0 / 64)


def _term_gradient(term: str, reduction: str) -> float:
    """Gradient norm reaching one modality's CAM from one loss term on a toy batch."""
    generator = torch.Generator().manual_seed(0)
    t = SpatialTransform("rot90")
    cams_x, cams_ax = {}, {}
    for m in ("t1", "flair"):
        base = torch.rand(8, 2, 32, 32, generator=generator)
        base[:, 1] += 0.5  # every teacher calls its slices tumour: every gate open
        cams_x[m] = base.clone().requires_grad_(True)
        cams_ax[m] = apply_transform(base, t) + 0.3 * torch.rand(8, 2, 32, 32, generator=generator)
        cams_ax[m].requires_grad_(True)
    weights = LossWeights(kl=0.0, er=1.0, cmer=1.0, cmer_reduction=reduction)
    terms = method_losses(cams_x, cams_ax, torch.ones(8, dtype=torch.long), t, weights)["t1"]
    terms[term].backward()
    return float(cams_x["t1"].grad.norm())


def test_summed_cmer_acts_as_strongly_as_er_and_the_published_mean_does_not():
    er = _term_gradient("er", "sum")
    summed = _term_gradient("cmer", "sum")
    mean = _term_gradient("cmer", "mean")
    assert 0.1 < summed / er < 10, (summed, er)
    assert mean / er < 0.01, (mean, er)
