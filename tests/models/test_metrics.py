"""Classification metrics against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from caltech_cam.models.metrics import MeanClassAccuracy, accuracy_metrics


def _logits(rankings: list[list[int]], num_classes: int) -> torch.Tensor:
    """Logits whose descending order over classes is exactly `ranking` (first = top-1)."""
    out = torch.zeros(len(rankings), num_classes)
    for row, ranking in enumerate(rankings):
        for position, cls in enumerate(ranking):
            out[row, cls] = float(num_classes - position)
    return out


def test_top1_top5_micro_against_hand_count():
    # 7 classes; the true class sits at rank 1, 3, 5, 6 and 2 in five images.
    rankings = [
        [0, 1, 2, 3, 4, 5, 6],  # target 0 at rank 1 -> top1 and top5 hit
        [2, 0, 1, 3, 4, 5, 6],  # target 1 at rank 3 -> top5 hit
        [6, 5, 4, 3, 2, 1, 0],  # target 2 at rank 5 -> top5 hit
        [0, 1, 2, 3, 4, 5, 6],  # target 5 at rank 6 -> miss
        [3, 4, 0, 1, 2, 5, 6],  # target 4 at rank 2 -> top5 hit
    ]
    targets = torch.tensor([0, 1, 2, 5, 4])
    metrics = accuracy_metrics(7, "val/", per_class=True)
    metrics.update(_logits(rankings, 7), targets)
    result = {k: float(v) for k, v in metrics.compute().items()}
    assert result["val/acc_top1"] == pytest.approx(1 / 5)
    assert result["val/acc_top5"] == pytest.approx(4 / 5)
    # per class: class 0 -> 1/1, classes 1, 2, 4, 5 -> 0/1 => mean 1/5
    assert result["val/acc_mean_class"] == pytest.approx(1 / 5)


def test_mean_class_accuracy_weights_classes_equally_and_ignores_absent_ones():
    metric = MeanClassAccuracy(num_classes=4)
    # class 0: 3 of 4 right; class 1: 1 of 1 right; class 2 never a target but predicted once; class 3 absent.
    preds = torch.tensor([0, 0, 0, 2, 1])
    target = torch.tensor([0, 0, 0, 0, 1])
    metric.update(preds, target)
    # overall accuracy would be 4/5 = 0.8; the class mean is (3/4 + 1/1) / 2 = 0.875
    assert float(metric.compute()) == pytest.approx(0.875)


def test_mean_class_accuracy_accumulates_over_batches():
    metric = MeanClassAccuracy(num_classes=3)
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    metric.update(torch.tensor([2, 2, 1]), torch.tensor([2, 1, 1]))
    # class 0: 1/2, class 1: 1/2, class 2: 1/1
    assert float(metric.compute()) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
