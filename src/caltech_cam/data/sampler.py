"""Evaluation sharding over the ranks of a run, without padding."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, DistributedSampler


def eval_sampler(dataset: Dataset, trainer: L.Trainer | None) -> DistributedSampler | None:
    """A sampler that shards an evaluation split over the ranks WITHOUT padding (Lightning's own
    `UnrepeatedDistributedSampler`), so each image is scored exactly once; None on one process.

    Lightning's default `DistributedSampler` repeats images to give every rank the same count, which counts them
    twice in the metrics. The metrics here are sums over images (torchmetrics states), so uneven shards are exact.
    """
    if trainer is None or trainer.world_size <= 1:
        return None
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )
