"""Values the maps must take by construction: head identities, one pass = many, scaling, sanity check."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from caltech_cam.cam import METHODS, capture, compute_cams, minmax, postprocess
from caltech_cam.cam.methods import gradcam_weights, hirescam

# Other jobs may share these 2 cores: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 96, 64, generator=torch.Generator().manual_seed(1))


TARGETS = torch.tensor([5, 123, 999])


def test_gradcam_weights_at_last_stage_are_fc_weights_over_area(resnet, images):
    seen = capture(resnet, images, ["layer4"], targets=TARGETS)
    acts, grads = seen.activations["layer4"], seen.gradients["layer4"]
    h, w = acts.shape[-2:]
    assert (h, w) == (3, 2)
    torch.testing.assert_close(
        gradcam_weights(acts, grads), resnet.fc.weight[TARGETS] / (h * w), rtol=1e-5, atol=1e-9
    )


def test_hirescam_raw_map_sums_to_logit_minus_bias(resnet, images):
    seen = capture(resnet, images, ["layer4"], targets=TARGETS)
    raw = hirescam(seen.activations["layer4"], seen.gradients["layer4"])
    logit = seen.logits.gather(1, TARGETS[:, None])[:, 0]
    with torch.no_grad():
        direct = resnet(images)[torch.arange(3), TARGETS]
    torch.testing.assert_close(seen.logits.gather(1, TARGETS[:, None])[:, 0], direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        raw.sum(dim=(1, 2)), logit - resnet.fc.bias[TARGETS].detach(), rtol=1e-4, atol=1e-4
    )
    assert (raw < 0).any() and (raw > 0).any()  # truly raw: before the ReLU


def test_gradients_are_those_of_the_target_logit(resnet, images):
    # Independent check of the single autograd.grad: differentiate image 1's logit alone, by hand.
    seen = capture(resnet, images, ["layer3"], targets=TARGETS)
    kept = []
    handle = resnet.layer3.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = resnet(images)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[1, TARGETS[1]], kept[0])
    torch.testing.assert_close(seen.gradients["layer3"][1], grad[1], rtol=1e-5, atol=1e-8)
    assert grad[0].abs().max() == 0  # eval mode: images do not interact, so summing scores is per-image


def test_one_pass_equals_one_layer_at_a_time_and_one_image_at_a_time(resnet, images):
    layers = ["layer1", "layer2", "layer3", "layer4"]
    together = compute_cams(resnet, images, layers, method="layercam", targets=TARGETS)
    for layer in layers:
        alone = compute_cams(resnet, images, [layer], method="layercam", targets=TARGETS)[layer]
        torch.testing.assert_close(together[layer], alone, rtol=0, atol=1e-6)
        single = compute_cams(resnet, images[2:], [layer], method="layercam", targets=TARGETS[2:])[layer]
        # CPU convolutions pick batch-size-dependent kernels: plain autograd gives layer1/2 gradients that differ
        # by ~1.5e-3 (relative to their max) between batch 3 and batch 1, so this bound is looser.
        torch.testing.assert_close(together[layer][2:], single, rtol=0, atol=3e-3)


def test_default_target_is_the_predicted_class(resnet, images):
    predicted = capture(resnet, images, ["layer4"]).targets
    with torch.no_grad():
        assert torch.equal(predicted, resnet(images).argmax(dim=1))
    default = compute_cams(resnet, images, ["layer4"], method="gradcam")["layer4"]
    explicit = compute_cams(resnet, images, ["layer4"], method="gradcam", targets=predicted.tolist())[
        "layer4"
    ]
    assert torch.equal(default, explicit)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_maps_are_upsampled_relu_of_the_raw_map_scaled_to_unit_range(resnet, images, method):
    seen = capture(resnet, images, ["layer3"], targets=TARGETS, gradients=METHODS[method].uses_gradients)
    grads = seen.gradients["layer3"] if seen.gradients is not None else None
    raw = METHODS[method](seen.activations["layer3"], grads)
    assert raw.shape == (3, 6, 4)
    plain = compute_cams(resnet, images, ["layer3"], method=method, targets=TARGETS, normalize=False)[
        "layer3"
    ]
    upsampled = nn.functional.interpolate(raw.clamp_min(0)[:, None], size=(96, 64), mode="bilinear")[:, 0]
    torch.testing.assert_close(plain, upsampled, rtol=1e-5, atol=1e-6)
    scaled = compute_cams(resnet, images, ["layer3"], method=method, targets=TARGETS, size=(20, 30))["layer3"]
    assert scaled.shape == (3, 20, 30) and scaled.dtype == torch.float32
    # Each image spans [0, 1] exactly, unless ReLU left nothing (Grad-CAM of a random net often does): then 0.
    assert torch.equal(scaled.amin(dim=(1, 2)), torch.zeros(3))
    assert set(scaled.amax(dim=(1, 2)).tolist()) <= {0.0, 1.0} and scaled.amax() == 1


def test_minmax_by_hand_and_never_nan():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]], [[7.0, 7.0], [7.0, 7.0]]])
    expected = torch.tensor([[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert torch.equal(minmax(maps), expected)
    # A 1x1 layer (constant map) stays exactly zero after upsampling, not round-off stretched to [0, 1].
    assert torch.equal(postprocess(torch.full((2, 1, 1), 3.7e8), (33, 47)), torch.zeros(2, 33, 47))
    assert torch.equal(postprocess(-torch.ones(1, 3, 3), (9, 9)), torch.zeros(1, 9, 9))  # all negative -> 0


def test_float32_under_autocast(resnet, images):
    plain = compute_cams(resnet, images, ["layer2", "layer4"], targets=TARGETS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = compute_cams(resnet, images, ["layer2", "layer4"], targets=TARGETS)
    for layer in plain:
        assert cast[layer].dtype == torch.float32
        torch.testing.assert_close(cast[layer], plain[layer], rtol=0, atol=1e-6)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's ρ per image: Pearson correlation of the pixel ranks."""
    ranks = [x.flatten(1).argsort(dim=1).argsort(dim=1).double() for x in (a, b)]
    ra, rb = (r - r.mean(dim=1, keepdim=True) for r in ranks)
    return (ra * rb).sum(dim=1) / (ra.norm(dim=1) * rb.norm(dim=1))


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "xgradcam"])
def test_sanity_check_maps_change_when_weights_are_randomized(resnet, images, method):
    # Adebayo et al. (NeurIPS 2018): a map that survives re-randomizing the model explains nothing about it.
    # Cascading randomization from the head: the logit layer, then the last stage too. (On a random-weight net
    # with noise input, LayerCAM, Grad-CAM++ and EigenCAM follow the input's local energy and stay correlated
    # (ρ ≈ 0.6-0.99) even after re-randomizing everything: a property of those methods, tested for none.)
    layers = ["layer2", "layer3"]
    before = compute_cams(resnet, images, layers, method=method, targets=TARGETS)
    again = compute_cams(resnet, images, layers, method=method, targets=TARGETS)
    torch.manual_seed(42)
    randomized = torchvision.models.resnet50().eval()
    randomized.load_state_dict(resnet.state_dict())
    randomized.fc.reset_parameters()
    after_head = compute_cams(randomized, images, layers, method=method, targets=TARGETS)
    for module in randomized.layer4.modules():
        if hasattr(module, "reset_parameters") and module is not randomized.layer4:
            module.reset_parameters()
    after_stage = compute_cams(randomized, images, layers, method=method, targets=TARGETS)
    for layer in layers:
        assert torch.equal(before[layer], again[layer])  # the control: same weights, same maps
        for after in (after_head, after_stage):
            assert rank_correlation(before[layer], after[layer]).abs().max() < 0.6
            assert (before[layer] - after[layer]).abs().mean() > 0.1
