"""Grad-CAM++ on a layer whose activations can be negative: the closed form's denominator 2 + S_k g can vanish;
those terms are dropped, so the map stays finite, and nothing changes on post-ReLU layers."""

from __future__ import annotations

import torch
import torchvision

from caltech_cam.cam import compute_cams, get_method
from caltech_cam.cam.engine import capture


def test_a_vanishing_denominator_drops_that_term_only():
    # Channel 0: S = Σ A = -2 and g = 1 at one pixel -> 2 + S g = 0 (the unguarded form divides by zero).
    # Channel 1: S = 2, g = 1 at one pixel -> a·g = 1 / (2 + 2) = 0.25, weight w_1 = 0.25.
    acts = torch.zeros(1, 2, 2, 2)
    acts[0, 0] = torch.tensor([[-1.0, -1.0], [0.5, -0.5]])
    acts[0, 1] = torch.tensor([[1.0, 0.5], [0.5, 0.0]])
    grads = torch.zeros(1, 2, 2, 2)
    grads[0, 0, 0, 0] = 1.0
    grads[0, 1, 1, 1] = 1.0
    unguarded = (grads / (2 + acts.sum(dim=(2, 3), keepdim=True) * grads)).sum(dim=(2, 3))
    assert not torch.isfinite(unguarded).all()  # what the closed form alone gives here
    raw = get_method("gradcam++")(acts, grads)
    assert torch.equal(raw, 0.25 * acts[:, 1])  # w_0 = 0 (dropped), w_1 = 0.25, by hand


def test_a_layer_with_negative_activations_gets_a_finite_map_by_hand():
    """conv (no ReLU) -> global average pool -> linear. Channel 0 is -1 everywhere, channel 1 is +1; the target's
    weights are (10, 1), so on a 4x4 map g_0 = 10/16, g_1 = 1/16, S_0 = -16, S_1 = 16.
    2 + S_0 g_0 = -8: dropped. 2 + S_1 g_1 = 3: w_1 = 16 * (1/16) / 3 = 1/3. So M = 1/3 everywhere
    (the unguarded closed form gives w_0 = -1.25 and M = 1.25 + 1/3)."""
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    head = torch.nn.Linear(2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([-1.0, 1.0]))
        head.weight.copy_(torch.tensor([[10.0, 1.0]]))
        head.bias.zero_()
    model = torch.nn.Sequential(conv, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head)
    maps = compute_cams(model, torch.randn(2, 3, 4, 4), ["0"], method="gradcam++", normalize=False)
    torch.testing.assert_close(maps["0"], torch.full((2, 4, 4), 1 / 3))


def test_post_relu_layers_keep_the_exact_closed_form(one_thread):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(4, 3, 64, 64)
    # After a ReLU (the stage outputs) S_k >= 0: the guarded form is the exact closed form.
    seen = capture(model, x, ["layer4"])
    a, g = seen.activations["layer4"], seen.gradients["layer4"]
    positive = g.clamp_min(0)
    weights = (positive / (2 + a.sum(dim=(2, 3), keepdim=True) * positive)).sum(dim=(2, 3))
    torch.testing.assert_close(get_method("gradcampp")(a, g), (weights[..., None, None] * a).sum(1))
