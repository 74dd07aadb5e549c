"""The CAM metrics `score_cams` can run: each one function of a `MapBatch`, registered by name.

A metric is `fn(batch: MapBatch) -> {column: (B,) tensor}` registered with `register_metric(name, {column: "higher" |
"lower"})` (which way is better), plus a test. NaN marks an image a column does not apply to (e.g. no box): it is
excluded from the mean and counted. `sanity` (cascading randomization) is model-level and run by `score_cams` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from caltech_cam.cam.metrics import localization as loc
from caltech_cam.cam.metrics.faithfulness import confidence_change, deletion_auc, insertion_auc
from caltech_cam.cam.metrics.road import road_scores

# The model-level check (sanity.py) is selected in the same list as the per-map metrics; score_cams runs it.
SANITY = "sanity"


@dataclass(frozen=True)
class MapBatch:
    """What a metric sees: one chunk of images and one map per image. All tensors on the model's device.

    `images` (B, C, H, W) normalized model input; `targets` (B,) the explained classes; `logits` (B, N) of the
    unmasked images; `maps` (B, H, W) in [0, 1]; `masks` (B, H, W) bool boxes in model-input pixels and `kept`
    (B,) bool (False: no box, or cropped away) when the split has boxes, else None; `tolerance` in pixels;
    `generator` seeds any noise a metric draws; `columns` asks for some columns only (the callback's two).
    """

    model: nn.Module
    images: Tensor
    targets: Tensor
    logits: Tensor
    maps: Tensor
    masks: Tensor | None
    kept: Tensor | None
    tolerance: float
    chunk_size: int = 64
    generator: torch.Generator | None = None  # for metrics that draw noise (ROAD's imputation), on the device
    columns: tuple[str, ...] | None = (
        None  # only these columns, where a metric can skip the others (None: all)
    )

    def args(self) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
        """(model, images, maps, targets): the leading arguments of every faithfulness function."""
        return self.model, self.images, self.maps, self.targets


@dataclass(frozen=True)
class Metric:
    """A registered metric: `fn` returns {column: (B,)}; `columns` maps each column to 'higher' or 'lower' (better)."""

    name: str
    fn: Callable[[MapBatch], dict[str, Tensor]]
    columns: dict[str, str]
    needs_boxes: bool = False
    default: bool = True  # selected when `cams.metrics` is null


METRICS: dict[str, Metric] = {}


def register_metric(
    name: str, columns: dict[str, str], *, needs_boxes: bool = False, default: bool = True
) -> Callable[[Callable[[MapBatch], dict[str, Tensor]]], Callable[[MapBatch], dict[str, Tensor]]]:
    """Add a metric function to `METRICS` under `name` with its columns ('higher' / 'lower' is better);
    `default=False` runs it only where it is named."""

    def add(fn: Callable[[MapBatch], dict[str, Tensor]]) -> Callable[[MapBatch], dict[str, Tensor]]:
        if name in METRICS or name == SANITY:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, fn, dict(columns), needs_boxes, default)
        return fn

    return add


@register_metric(
    "localization",
    {
        "pointing_game": "higher",
        "pointing_game_tol0": "higher",
        "energy_pointing_game": "higher",
        "relevance_mass": "higher",
        "relevance_rank": "higher",
    },
    needs_boxes=True,
)
def localization(batch: MapBatch) -> dict[str, Tensor]:
    """Pointing game (at the tolerance and at 0), energy pointing game, relevance mass and rank (localization.py);
    NaN for images whose box is missing or cropped away."""
    scores = loc.localization_scores(batch.maps, batch.masks, batch.tolerance, batch.columns)
    return {k: torch.where(batch.kept, v.float(), torch.nan) for k, v in scores.items()}


@register_metric("confidence", {"average_drop": "lower", "increase_in_confidence": "higher"})
def confidence(batch: MapBatch) -> dict[str, Tensor]:
    """Average Drop % and Increase in Confidence % per image (metrics.confidence_change, Grad-CAM++ paper)."""
    per_image = confidence_change(
        batch.model,
        batch.images,
        {"map": batch.maps},
        batch.targets,
        logits=batch.logits,
        chunk_size=batch.chunk_size,
        reduce=False,
    )
    return per_image["map"]


@register_metric("deletion", {"deletion_auc": "lower"})
def deletion(batch: MapBatch) -> dict[str, Tensor]:
    """Deletion AUC (RISE, Petsiuk et al. 2018)."""
    return {"deletion_auc": deletion_auc(*batch.args(), chunk_size=batch.chunk_size)}


@register_metric("insertion", {"insertion_auc": "higher"})
def insertion(batch: MapBatch) -> dict[str, Tensor]:
    """Insertion AUC (RISE, Petsiuk et al. 2018)."""
    return {"insertion_auc": insertion_auc(*batch.args(), chunk_size=batch.chunk_size)}


@register_metric("road", {"road_morf": "lower", "road_lerf": "higher", "road": "higher"})
def road(batch: MapBatch) -> dict[str, Tensor]:
    """ROAD (Rong et al., ICML 2022): MoRF, LeRF and (LeRF − MoRF)/2 with noisy linear imputation (road.py)."""
    return road_scores(*batch.args(), chunk_size=batch.chunk_size, generator=batch.generator)


def default_metrics() -> list[str]:
    """What `cams.metrics: null` selects: every registered default metric, in registry order, then `sanity`."""
    return [*(m.name for m in METRICS.values() if m.default), SANITY]


def check_metrics(metrics: Sequence[str] | str | None) -> list[str]:
    """The selected metric names in registry order (None: `default_metrics()`); ValueError naming the unknown one
    and every known name."""
    chosen = (
        default_metrics() if metrics is None else [metrics] if isinstance(metrics, str) else list(metrics)
    )
    known = [*METRICS, SANITY]
    for name in chosen:
        if name not in known:
            raise ValueError(f"unknown CAM metric {name!r}; choose from {', '.join(known)}")
    if not chosen:
        raise ValueError(f"cams.metrics is empty; choose from {', '.join(known)}")
    return [name for name in known if name in chosen]
