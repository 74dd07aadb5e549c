"""Score CAM methods × layers on a split: localization, faithfulness and the sanity check, with bootstrap CIs.

`score_cams` runs one engine pass per chunk of images (every layer's activations and gradients at once), forms each
method's maps from it, and feeds every (method, layer) map, and the two baselines (a uniform-random map and a centred
Gaussian, layer-independent), to each selected metric of `metric_registry.METRICS`. Per-image values are gathered, then summarized
per (row, layer, column) as mean, 95 % percentile-bootstrap CI over images, n and the metric's runtime.

A new metric is one function registered in `metric_registry.py` (plus a test). The sanity check (`sanity.py`) is
model-level, not per map, and runs once on a subset of the scored images.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from caltech_cam.cam import localization as loc
from caltech_cam.cam.engine import cams_from_capture, capture
from caltech_cam.cam.methods import Method, get_method
from caltech_cam.cam.metric_registry import (
    DEFAULT_METRICS,
    METRICS,
    SANITY,
    MapBatch,
    Metric,
    check_metrics,
    register_metric,
)
from caltech_cam.cam.sanity import SANITY_THRESHOLD, cascading_randomization_many, sanity_summary

TARGETS = ("label", "predicted")
# Re-exported: callers reach the whole scoring API from this module.
__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "SANITY",
    "TARGETS",
    "CamScores",
    "MapBatch",
    "Metric",
    "bootstrap_ci",
    "check_layers_of",
    "check_metrics",
    "register_metric",
    "score_cams",
    "select_images",
    "summary_row",
]


def check_layers_of(model: nn.Module, layers: Sequence[str], cam_layers: Sequence[str]) -> list[str]:
    """`layers` checked against the model's modules; the error names the model's CAM layers first."""
    modules = dict(model.named_modules())
    for name in layers:
        if not name or name not in modules:
            raise ValueError(
                f"unknown layer {name!r}; the model's CAM layers are {list(cam_layers)} "
                f"(any name in model.named_modules() works, e.g. {', '.join(list(modules)[1:8])}, ...)"
            )
    if len(set(layers)) != len(layers) or not layers:
        raise ValueError(f"cams.layers must name distinct layers, got {list(layers)}")
    return list(layers)


def select_images(total: int, num_images: int | None, seed: int, *, split: str = "split") -> Tensor:
    """Indices of the images to score: all (None), or a seeded random subset of `num_images`, sorted."""
    if num_images is None:
        return torch.arange(total)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"cams.num_images must be a positive int or null, got {num_images!r}")
    if num_images > total:
        raise ValueError(f"cams.num_images={num_images} but the {split} split has only {total} images")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:num_images].sort().values


def bootstrap_ci(
    values: Tensor, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float, int]:
    """Mean and percentile-bootstrap CI (Efron 1979) of the mean over the finite values: (mean, low, high, n).

    Resamples n of the n values with replacement `resamples` times (one (resamples, n) index draw from a CPU
    generator seeded with `seed`), and takes the (1 − level)/2 and (1 + level)/2 quantiles of the resampled means
    (linear interpolation). NaN values are dropped first; n = 0 gives NaNs.
    """
    finite = values.detach().double().cpu().flatten()
    finite = finite[finite.isfinite()]
    n = finite.numel()
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (resamples, n), generator=generator)
    means = finite[index].mean(dim=1)
    alpha = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return float(finite.mean()), low, high, n


def summary_row(
    layer: str,
    method: str,
    metric: str,
    per_image: Tensor,
    *,
    better: str,
    runtime_s: float,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """One report row: mean, bootstrap CI, n (finite values), excluded (NaN values), which way is better, runtime."""
    mean, low, high, n = bootstrap_ci(per_image, resamples=resamples, seed=seed)
    return {
        "layer": layer,
        "method": method,
        "metric": metric,
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "n": n,
        "excluded": per_image.numel() - n,
        "better": better,
        "runtime_s": runtime_s,
    }


@dataclass
class CamScores:
    """The scoring's outcome: `rows` (one dict per row × layer × column), `sanity` (per method and layer: the
    cascade's mean ρ per step and the flag), `notes` (what was skipped or excluded, one line each), `runtime`
    (engine pass and maps, seconds) and `settings`."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    sanity: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    runtime: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    # The timing edge: without it a GPU's queued work would be billed to whatever runs next.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_cams(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    target: str = "label",
    metrics: Sequence[str] | None = None,
    boxes: tuple[Tensor, Tensor] | None = None,
    present: Tensor | None = None,
    tolerance: float | None = None,
    sanity_images: int = 16,
    seed: int = 0,
    resamples: int = 1000,
    chunk_size: int = 64,
) -> CamScores:
    """Score every method × layer (and the baselines) on `batches` of (normalized images, labels) on the model's
    device, in order. `boxes`: (boxes (N, 4) in model-input pixels, kept (N,)) for the N images the batches yield,
    in the same order, or None (localization is then skipped with a note); `present` (N,) bool: which images
    have a box at all, to tell them apart from boxes the crop cut away in the note. `tolerance`: the pointing game's, in
    pixels (default 15/224 of the input side). `target`: explain the true 'label' or the 'predicted' class."""
    if target not in TARGETS:
        raise ValueError(f"cams.target={target!r}; expected one of {TARGETS}")
    chosen = [get_method(m) for m in methods]
    if not chosen:
        raise ValueError("cams.methods is empty; name at least one CAM method")
    selected = check_metrics(metrics)
    result = CamScores(
        settings={
            "methods": [m.name for m in chosen],
            "layers": list(layers),
            "target": target,
            "metrics": selected,
            "seed": seed,
            "resamples": resamples,
        }
    )
    per_map = [METRICS[name] for name in selected if name != SANITY]
    if boxes is None and any(m.needs_boxes for m in per_map):
        result.notes.append(
            "localization skipped: the split has no boxes (boxes.json); its columns are not reported"
        )
        per_map = [m for m in per_map if not m.needs_boxes]
    device = next(model.parameters()).device
    values: dict[tuple[str, str, str], list[Tensor]] = defaultdict(list)
    seconds: dict[tuple[str, str, str], float] = defaultdict(float)
    runtime = {"engine": 0.0, "maps": 0.0}
    sanity_batch: list[tuple[Tensor, Tensor]] = []
    generator = torch.Generator(device=device).manual_seed(seed)
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    start, size = 0, None
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        batch = images.shape[0]
        size = (images.shape[-2], images.shape[-1])
        tol = loc.default_tolerance(size[0]) if tolerance is None else float(tolerance)
        masks = kept = None
        if boxes is not None:
            if start + batch > boxes[0].shape[0]:
                raise ValueError(
                    f"{boxes[0].shape[0]} boxes for at least {start + batch} scored images; they must match one to one"
                )
            kept = boxes[1][start : start + batch].to(device)
            masks = loc.box_masks(boxes[0][start : start + batch].to(device), size)
        start += batch
        wanted = labels if target == "label" else None
        t0 = time.perf_counter()
        seen = capture(model, images, layers, targets=wanted, gradients=any(m.uses_gradients for m in chosen))
        _sync(device)
        runtime["engine"] += time.perf_counter() - t0
        if SANITY in selected and sum(len(x) for x, _ in sanity_batch) < sanity_images:
            sanity_batch.append((images, seen.targets))
        maps: dict[tuple[str, str], Tensor] = {}
        for method in chosen:
            t0 = time.perf_counter()
            for layer, m in cams_from_capture(seen, method, size).items():
                maps[(method.name, layer)] = m
            _sync(device)
            runtime["maps"] += time.perf_counter() - t0
        # Baselines do not depend on the layer: scored once per chunk, repeated in every layer's table.
        for name, make in loc.BASELINES.items():
            maps[(name, "*")] = make(batch, size, generator=generator, device=device)
        for (row, layer), m in maps.items():
            view = MapBatch(model, images, seen.targets, seen.logits, m, masks, kept, tol, chunk_size, noise)
            for metric in per_map:
                t0 = time.perf_counter()
                out = metric.fn(view)
                _sync(device)
                seconds[(row, layer, metric.name)] += time.perf_counter() - t0
                for column, v in out.items():
                    values[(row, layer, column)].append(v.detach().float())
    if boxes is not None and start != boxes[0].shape[0]:
        raise ValueError(f"{boxes[0].shape[0]} boxes for {start} scored images; they must match one to one")
    if start == 0:
        raise ValueError("no images to score: the batches were empty")
    if boxes is not None and any(m.needs_boxes for m in per_map):
        dropped = int((~boxes[1]).sum())
        missing = int((~present).sum()) if present is not None else None
        why = (
            f"{missing} without a box (e.g. clutter), {dropped - missing} with the box cropped away"
            if missing is not None
            else "no box, or the box cropped away entirely"
        )
        result.notes.append(
            f"localization: {dropped} of {start} images excluded ({why}); "
            f"pointing-game tolerance {tol:.2f} px at {size[0]} px"
        )
    result.runtime = runtime
    columns = {c: (metric.name, better) for metric in per_map for c, better in metric.columns.items()}
    for layer in layers:
        for row in [m.name for m in chosen] + list(loc.BASELINES):
            key_layer = "*" if row in loc.BASELINES else layer
            for column, (metric_name, better) in columns.items():
                if (row, key_layer, column) in values:
                    result.rows.append(
                        summary_row(
                            layer,
                            row,
                            column,
                            torch.cat(values[(row, key_layer, column)]),
                            better=better,
                            runtime_s=seconds[(row, key_layer, metric_name)],
                            resamples=resamples,
                            seed=seed,
                        )
                    )
    if SANITY in selected:
        _sanity(model, sanity_batch, chosen, list(layers), sanity_images, seed, resamples, result)
    return result


def _sanity(
    model: nn.Module,
    pairs: list[tuple[Tensor, Tensor]],
    methods: list[Method],
    layers: list[str],
    count: int,
    seed: int,
    resamples: int,
    result: CamScores,
) -> None:
    """Cascading randomization on the first `count` scored images (for the same classes), into `result`."""
    images = torch.cat([x for x, _ in pairs])[:count]
    targets = torch.cat([t for _, t in pairs])[:count]
    device = images.device
    _sync(device)
    t0 = time.perf_counter()
    steps = cascading_randomization_many(model, images, layers, [m.name for m in methods], targets, seed=seed)
    _sync(device)
    elapsed = time.perf_counter() - t0
    for method in methods:
        per_layer = sanity_summary([(block, d[method.name]) for block, d in steps])
        result.sanity[method.name] = {}
        for layer, summary in per_layer.items():
            curve = {block: float(d[method.name][layer].nanmean()) for block, d in steps}
            result.sanity[method.name][layer] = {
                "step": summary["step"],
                "mean_above": summary["mean_above"],
                "flagged": summary["flagged"],
                "threshold": SANITY_THRESHOLD,
                "cascade": curve,
            }
            for column, key in (
                ("sanity_spearman", "spearman_above"),
                ("sanity_spearman_all", "spearman_all"),
            ):
                result.rows.append(
                    summary_row(
                        layer,
                        method.name,
                        column,
                        summary[key],
                        better="lower",
                        runtime_s=elapsed / (len(methods) * len(layers)),
                        resamples=resamples,
                        seed=seed,
                    )
                )
    flagged = [f"{m}@{layer}" for m, per in result.sanity.items() for layer, s in per.items() if s["flagged"]]
    result.notes.append(
        f"sanity: cascading randomization on {len(images)} images; flagged (mean Spearman > {SANITY_THRESHOLD} "
        f"once every block above the layer is random): {', '.join(flagged) or 'none'}"
    )
