"""Classification metrics whose definition we state exactly, and the set every stage logs."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy


class MeanClassAccuracy(Metric):
    """Mean per-class top-1 accuracy: (1/|C'|) Σ_{c∈C'} correct_c / total_c, over the classes C' present in the targets.

    The Caltech-256 literature reports it beside overall accuracy because the test split is unbalanced.
    Unlike torchmetrics' macro accuracy, a class that is predicted but absent from the targets is not counted as 0.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("correct", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        hits = (preds.argmax(dim=-1) if preds.ndim == 2 else preds) == target
        self.total += torch.bincount(target, minlength=self.num_classes)
        self.correct += torch.bincount(target[hits], minlength=self.num_classes)

    def compute(self) -> Tensor:
        present = self.total > 0
        return (self.correct[present].double() / self.total[present].double()).mean().float()


class ImageCount(Metric):
    """How many images were scored, summed over the processes: each image of a split must count exactly once."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.count += target.numel()

    def compute(self) -> Tensor:
        return self.count.float()


def accuracy_metrics(num_classes: int, prefix: str, per_class: bool) -> MetricCollection:
    """Top-1 and top-5 accuracy, micro-averaged (fraction of all images), plus mean per-class top-1 accuracy."""
    metrics: dict[str, Metric] = {
        "acc_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
    }
    if per_class:
        metrics["acc_mean_class"] = MeanClassAccuracy(num_classes)
        metrics["images"] = ImageCount()
    return MetricCollection(metrics, prefix=prefix)
