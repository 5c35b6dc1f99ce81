"""The inference generator: protocol, gating, skipping, progress, Grad-CAM vs Captum."""

import numpy as np
import pytest
import torch

from equicam.core.inference import Progress, _tumour_maps, cam_volume, run_to_end
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.preprocess import to_input


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    config = ModelConfig(modalities=("t1", "flair"), widths=(4, 8, 8, 8), input_size=32)
    model = MultiModalCAM(config).eval()
    with torch.no_grad():  # a tumour-leaning head so that most slices are called positive
        for net in model.nets.values():
            net.head.weight[1] += 0.5
    return model


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    images = {m: rng.standard_normal((6, 40, 36)).astype(np.float32) for m in ("t1", "flair")}
    for v in images.values():
        v[0] = 0.0  # a slice without brain
    return images


def test_generator_yields_monotone_progress_then_returns_maps(model, volume):
    steps = list(_drain(cam_volume(model, volume, batch_size=2)))
    assert all(isinstance(s, Progress) for s in steps)
    assert [s.done for s in steps] == sorted(s.done for s in steps)
    assert steps[-1].done == steps[-1].total == 2 * 3  # 5 brain slices in batches of 2, x2
    result = run_to_end(cam_volume(model, volume, batch_size=2, fusions=("mean", "max")))
    assert set(result.all_maps()) == {"t1", "flair", "fused_mean", "fused_max"}
    for m in result.all_maps().values():
        assert m.shape == (6, 40, 36) and m.dtype == np.float32
        assert m.min() >= 0 and m.max() <= 1
    assert not result.computed[0] and result.computed[1:].all()
    volume["t1"][2, :5], volume["flair"][2, :5] = 0.0, 0.0  # background rows in slice 2
    outside = run_to_end(cam_volume(model, volume, slices=[2]))
    assert all(not m[2, :5].any() for m in outside.all_maps().values())
    assert not result.maps["t1"][0].any()
    masks = result.masks(0.5)
    assert masks["t1"].dtype == np.uint8 and set(np.unique(masks["t1"])) <= {0, 1}


def test_fused_maps_of_some_slices_are_those_of_the_whole_volume_there(model, volume):
    fusions = ("mean", "max", "geometric", "weighted")
    whole = run_to_end(cam_volume(model, volume, fusions=fusions))
    some = run_to_end(cam_volume(model, volume, slices=[1, 4], fusions=fusions))
    for f in fusions:
        np.testing.assert_allclose(some.fused[f][[1, 4]], whole.fused[f][[1, 4]], atol=1e-5)
        assert not some.fused[f][[0, 2, 3, 5]].any() and whole.fused[f][1:].any()


def _drain(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration:
            return


def test_cam_is_the_gated_normalised_tumour_channel(model, volume):
    result = run_to_end(cam_volume(model, volume, slices=[3]))
    net = model.nets["flair"]
    x = to_input(torch.from_numpy(volume["flair"][3:4, None]), 32)
    with torch.no_grad():
        cam = net(x)
    positive = bool(cam.mean(dim=(2, 3)).argmax(dim=1) == 1)
    computed = result.maps["flair"][3]
    assert result.computed.sum() == 1 and not result.maps["flair"][2].any()
    if positive:
        assert computed.max() == pytest.approx(1.0) and computed.min() == pytest.approx(0.0)
        # Same ranking of pixels as the raw tumour channel (resized back).
        raw = torch.nn.functional.interpolate(
            torch.relu(cam[:, 1:2]), size=(40, 40), mode="bilinear"
        )
        raw = raw[0, 0, :, 2:38].numpy()
        assert np.corrcoef(raw.ravel(), computed.ravel())[0, 1] > 0.99
    else:
        assert not computed.any()


def test_a_slice_called_healthy_gets_a_zero_map(volume):
    torch.manual_seed(0)
    config = ModelConfig(modalities=("flair",), widths=(4, 8, 8, 8), input_size=32)
    healthy = MultiModalCAM(config).eval()
    with torch.no_grad():
        healthy.nets["flair"].head.weight[1] = -healthy.nets["flair"].head.weight[1].abs() - 1
        healthy.nets["flair"].head.weight[0] = healthy.nets["flair"].head.weight[0].abs() + 1
    result = run_to_end(cam_volume(healthy, volume))
    assert (result.slice_prob["flair"] < 0.5).all()
    assert not result.maps["flair"].any()


def test_gradcam_equals_cam_up_to_scale_and_gradcampp_differs(model):
    x = torch.randn(3, 1, 32, 32)
    net = model.nets["t1"]
    cam, _ = _tumour_maps(net, x, "cam")
    gradcam, _ = _tumour_maps(net, x, "gradcam")
    gradcampp, _ = _tumour_maps(net, x, "gradcampp")
    for a, b in zip(cam, gradcam, strict=True):
        if a.max() > 0:
            torch.testing.assert_close(a / a.max(), b / b.max(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(
        gradcampp / gradcampp.amax(dim=(1, 2), keepdim=True),
        cam / cam.amax(dim=(1, 2), keepdim=True),
    )


def test_cam_is_exactly_the_relu_of_the_tumour_channel(model):
    net = model.nets["t1"]
    x = torch.randn(3, 1, 32, 32)
    cam, probs = _tumour_maps(net, x, "cam")
    with torch.no_grad():
        out = net(x)
    torch.testing.assert_close(cam, torch.relu(out[:, 1]), rtol=0, atol=0)
    torch.testing.assert_close(probs, torch.softmax(out.mean(dim=(2, 3)), dim=1)[:, 1])


def test_gradcampp_matches_its_closed_form_for_a_linear_score(model):
    # The tumour logit is linear in the features: sum_k w_k mean(A_k), so every gradient is
    # g_k = w_k / (H W) everywhere, and Grad-CAM++ reduces to weights H W relu(g_k) / (2 + S_k g_k)
    # with S_k the sum of A_k over the slice.
    net = model.nets["flair"]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = net.features(x)
    g = (net.head.weight[1, :, 0, 0] / (32 * 32)).detach()[None, :, None, None]
    sums = features.sum(dim=(2, 3), keepdim=True)
    weights = 32 * 32 * torch.relu(g) / (2 + sums * g)
    expected = torch.relu((weights * features).sum(dim=1))
    ours, _ = _tumour_maps(net, x, "gradcampp")
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


def test_our_gradcam_agrees_with_captum(model):
    from captum.attr import LayerGradCam

    net = model.nets["flair"]
    x = torch.randn(4, 1, 32, 32)

    def logits(inputs):
        return net(inputs).mean(dim=(2, 3))

    theirs = LayerGradCam(logits, net.last).attribute(x, target=1, relu_attributions=True)
    ours, _ = _tumour_maps(net, x, "gradcam")
    torch.testing.assert_close(ours, theirs[:, 0].detach(), atol=1e-6, rtol=1e-4)


def test_unknown_method_or_modalities_are_refused(model, volume):
    with pytest.raises(ValueError, match="unknown method"):
        run_to_end(cam_volume(model, volume, method="lime"))
    with pytest.raises(ValueError, match="none of them was given"):
        run_to_end(cam_volume(model, {"t2": volume["t1"]}))
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        run_to_end(cam_volume(model, volume, precision="fp16"))


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcampp"])
def test_bf16_maps_agree_with_fp32_maps(model, volume, method):
    fp32 = run_to_end(cam_volume(model, volume, method=method, precision="fp32"))
    bf16 = run_to_end(cam_volume(model, volume, method=method, precision="bf16"))
    np.testing.assert_array_equal(fp32.computed, bf16.computed)
    for name, exact in fp32.all_maps().items():
        approx = bf16.all_maps()[name]
        assert approx.dtype == np.float32
        assert np.abs(approx - exact).max() < 0.05, name
        a, b = exact >= 0.5, approx >= 0.5
        assert 2 * (a & b).sum() / max(a.sum() + b.sum(), 1) > 0.95, name


def test_auto_precision_is_bf16_only_where_the_device_computes_it():
    from equicam.core.device import supports_bf16
    from equicam.core.inference import resolve_precision

    assert resolve_precision("auto", "cpu") == ("bf16" if supports_bf16("cpu") else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_the_command_line_offers_what_inference_accepts():
    from equicam import cli
    from equicam.core import inference

    assert cli.METHODS == inference.METHODS
    assert cli.PRECISIONS == inference.PRECISIONS


def test_inference_copies_are_made_once_and_again_after_the_weights_change(volume):
    from equicam.core.inference import inference_copy

    torch.manual_seed(3)
    model = MultiModalCAM(
        ModelConfig(modalities=("t1", "flair"), widths=(4, 8, 8, 8), input_size=32)
    )
    model.eval()
    first = inference_copy(model.nets["t1"], "cpu")
    assert inference_copy(model.nets["t1"], "cpu") is first
    before = run_to_end(cam_volume(model, volume, precision="fp32"))
    assert inference_copy(model.nets["t1"], "cpu") is first  # cam_volume reused it
    with torch.no_grad():  # an optimiser step changes weights in place
        model.nets["t1"].head.weight.mul_(-1.0)
    again = inference_copy(model.nets["t1"], "cpu")
    assert again is not first
    assert torch.equal(again.head.weight, model.nets["t1"].head.weight)
    after = run_to_end(cam_volume(model, volume, precision="fp32"))
    assert not np.array_equal(after.maps["t1"], before.maps["t1"])
    np.testing.assert_array_equal(after.maps["flair"], before.maps["flair"])
    model.nets["t1"].train()(torch.zeros(2, 1, 32, 32))  # BatchNorm statistics move too
    model.eval()
    assert inference_copy(model.nets["t1"], "cpu") is not again
