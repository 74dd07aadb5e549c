"""Faithfulness metrics against values computed by hand, one image and one step at a time."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from torch import nn

from caltech_cam.cam import (
    average_drop,
    compute_cams,
    confidence_change,
    deletion_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_auc,
    insertion_curve,
    target_probabilities,
)


class PoolLinear(nn.Module):
    """logits = W · mean_ij(x) + b: masked scores are easy to compute by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[2.0, 0, 0], [0, 3.0, 0], [0, 0, -1.0], [1.0, 1.0, 1.0]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class QuadrantDetector(nn.Module):
    """Class 0's logit is 8 × the energy of the top-left quadrant of channel 0 (which a blur removes from a
    checkerboard); class 1's is a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        evidence = 8 * x[:, 0, : h // 2, : w // 2].square().mean(dim=(1, 2))
        return torch.stack([evidence, torch.ones_like(evidence)], dim=1)


def by_hand(model: nn.Module, image: torch.Tensor, c: int) -> float:
    with torch.no_grad():
        return model(image[None]).softmax(dim=1)[0, c].item()


def test_average_drop_and_increase_in_confidence_by_hand():
    base, masked = torch.tensor([0.5, 0.4, 0.2, 0.8]), torch.tensor([0.25, 0.6, 0.2, 0.0])
    # drops: 0.25/0.5 = 50 %, 0 (an increase), 0, 100 % -> mean 37.5 %; increases: 1 of 4.
    assert average_drop(base, masked).item() == pytest.approx(37.5)
    assert increase_in_confidence(base, masked).item() == 25.0


def test_confidence_change_by_hand():
    torch.manual_seed(0)
    model = PoolLinear()
    images = torch.rand(3, 3, 6, 5)
    maps = {"a": torch.rand(3, 6, 5), "ones": torch.ones(3, 6, 5), "zeros": torch.zeros(3, 6, 5)}
    targets = torch.tensor([0, 1, 3])
    scores = confidence_change(model, images, maps, targets, chunk_size=2)
    for name, m in maps.items():
        y = [by_hand(model, images[i], int(targets[i])) for i in range(3)]
        o = [by_hand(model, images[i] * m[i], int(targets[i])) for i in range(3)]
        drop = 100 * sum(max(0.0, yi - oi) / yi for yi, oi in zip(y, o, strict=True)) / 3
        increase = 100 * sum(oi > yi for yi, oi in zip(y, o, strict=True)) / 3
        assert scores[name]["average_drop"].item() == pytest.approx(drop, rel=1e-5, abs=1e-4), name
        assert scores[name]["increase_in_confidence"].item() == pytest.approx(increase), name
    assert scores["ones"]["average_drop"].item() == 0 and scores["ones"]["increase_in_confidence"].item() == 0


def test_default_targets_are_the_predicted_classes():
    model = PoolLinear()
    images = torch.rand(4, 3, 5, 5)
    probabilities, classes = target_probabilities(model, images)
    with torch.no_grad():
        soft = model(images).softmax(dim=1)
    assert torch.equal(classes, soft.argmax(dim=1))
    torch.testing.assert_close(probabilities, soft.max(dim=1).values)


def rise_by_hand(model, image, saliency, c, steps, deletion):
    """The RISE curve one step at a time: top-k pixels by torch.topk, replaced, scored, trapezoid rule."""
    _, h, w = image.shape
    blurred = TF.gaussian_blur(image[None], kernel_size=[11, 11], sigma=[5.0, 5.0])[0]
    start, end = (image, torch.zeros_like(image)) if deletion else (blurred, image)
    curve = []
    for s in range(steps + 1):
        k = s * h * w // steps
        mask = torch.zeros(h * w, dtype=torch.bool)
        mask[saliency.flatten().topk(k).indices] = True
        curve.append(by_hand(model, torch.where(mask.view(1, h, w), end, start), c))
    return sum((a + b) / 2 for a, b in itertools.pairwise(curve)) / steps


@pytest.mark.parametrize("deletion", [True, False])
def test_deletion_and_insertion_auc_by_hand(deletion):
    torch.manual_seed(1)
    model = PoolLinear()
    images, saliency = torch.rand(3, 3, 12, 10), torch.rand(3, 12, 10)  # distinct values: a unique order
    targets = torch.tensor([0, 1, 3])
    metric = deletion_auc if deletion else insertion_auc
    ours = metric(model, images, saliency, targets, steps=5, chunk_size=4)
    assert ours.shape == (3,)
    for i in range(3):
        expected = rise_by_hand(model, images[i], saliency[i], int(targets[i]), 5, deletion)
        assert ours[i].item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(metric(model, images, saliency, targets, steps=5, chunk_size=64), ours)


def test_rise_curves_are_what_the_aucs_integrate():
    torch.manual_seed(2)
    model = PoolLinear()
    images, saliency = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
    targets = torch.tensor([1, 2])
    for curve, auc in ((deletion_curve, deletion_auc), (insertion_curve, insertion_auc)):
        points = curve(model, images, saliency, targets, steps=4)
        assert points.shape == (2, 5)
        torch.testing.assert_close(
            torch.trapezoid(points, dx=0.25, dim=1), auc(model, images, saliency, targets, steps=4)
        )
    # Deletion starts at the unmasked image's p_c; insertion ends there.
    with torch.no_grad():
        full = model(images).softmax(dim=1).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(deletion_curve(model, images, saliency, targets, steps=4)[:, 0], full)
    torch.testing.assert_close(insertion_curve(model, images, saliency, targets, steps=4)[:, -1], full)


def test_rise_rewards_the_right_map():
    model = QuadrantDetector()
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    images = ((rows + cols) % 2 * 2 - 1).float().expand(2, 3, 16, 16)  # ±1 checkerboard
    right = torch.zeros(2, 16, 16)
    right[:, :8, :8] = 1 + torch.rand(2, 8, 8)
    wrong = 2 - right
    targets = torch.tensor([0, 0])
    assert (
        deletion_auc(model, images, right, targets) < deletion_auc(model, images, wrong, targets) - 0.1
    ).all()
    assert (
        insertion_auc(model, images, right, targets) > insertion_auc(model, images, wrong, targets) + 0.1
    ).all()


def test_on_resnet_maps_from_compute_cams():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=5).train()
        images = torch.randn(4, 3, 64, 64)
        maps = compute_cams(model, images, ["layer2", "layer4"])
        maps["ones"] = torch.ones(4, 64, 64)
        with torch.inference_mode():
            scores = confidence_change(model, images, maps)
        assert model.training and all(m.training for m in model.modules())
        assert scores["ones"]["average_drop"] == 0 and scores["ones"]["increase_in_confidence"] == 0
        for layer in ("layer2", "layer4"):
            assert 0 <= scores[layer]["average_drop"] <= 100
            assert scores[layer]["increase_in_confidence"].item() in {0.0, 25.0, 50.0, 75.0, 100.0}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_confidence_change_reuses_given_logits_and_any_chunking(chunk_size):
    torch.manual_seed(1)
    model = PoolLinear()
    images = torch.rand(5, 3, 6, 5)
    maps = {f"m{k}": torch.rand(5, 6, 5) for k in range(3)}
    reference = confidence_change(model, images, maps)
    with torch.no_grad():
        logits = model(images)
    given = confidence_change(model, images, maps, logits=logits, chunk_size=chunk_size)
    for name in maps:
        for key in ("average_drop", "increase_in_confidence"):
            assert given[name][key].item() == pytest.approx(reference[name][key].item(), rel=1e-6), (
                name,
                key,
            )
