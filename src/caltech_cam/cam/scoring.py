"""Score CAM methods × layers on a split: localization, faithfulness and the sanity check, with bootstrap CIs.

`score_cams` runs one engine pass per chunk of images (every layer's activations and gradients at once), forms each
method's maps from it, and feeds every (method, layer) map, and the two baselines (a uniform-random map and a centred
Gaussian, layer-independent), to each selected metric of `metrics.registry.METRICS`. Per-image values are gathered,
then summarized per (row, layer, column) as mean, 95 % percentile-bootstrap CI over images, n and the metric's
runtime. What is scored is a `ScoringSpec`, checked once when built; `select_images` is the one subset rule.

A new metric is one function registered in `metrics/registry.py` (plus a test). The sanity check
(`metrics/sanity.py`) is model-level, not per map, and runs once on a subset of the scored images.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from caltech_cam.cam.engine import cams_from_capture, capture, check_layers
from caltech_cam.cam.methods import Method, get_methods
from caltech_cam.cam.metrics import localization as loc
from caltech_cam.cam.metrics.registry import METRICS, SANITY, MapBatch, Metric, check_metrics
from caltech_cam.cam.metrics.sanity import SANITY_THRESHOLD, cascading_randomization_many, sanity_summary

# The class each map explains: the true label or the predicted class.
TARGETS = ("label", "predicted")


def select_images(
    total: int,
    num_images: int | None,
    seed: int,
    *,
    default: int | None = None,
    what: str = "the split",
    key: str = "num_images",
) -> tuple[Tensor, str | None]:
    """Sorted indices of the images to score, drawn by a generator seeded with `seed` (its own: the global RNG is
    neither read nor advanced), and a note line or None. The one subset rule of the package (evaluate's
    `cams.num_images`, the callback's `localization_images`):

    - an explicit `num_images` larger than `total` is an error naming both numbers;
    - `num_images=None` takes `default` images (None: all of them), clamped to `total` with a note when fewer.
    """
    if num_images is not None and (
        isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1
    ):
        raise ValueError(f"{key} must be a positive int or null, got {num_images!r}")
    if num_images is not None and num_images > total:
        raise ValueError(f"{key}={num_images} but {what} has only {total} images")
    note = None
    count = num_images if num_images is not None else default
    if count is None or count >= total:
        if num_images is None and count is not None and count > total:
            note = f"{count} images by default, but {what} has only {total}: all of them are used"
        return torch.arange(total), note
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:count].sort().values, note


@dataclass(frozen=True)
class ScoringSpec:
    """What `score_cams` scores, checked once when built (evaluate builds it from `cams.*`).

    `methods`: names or aliases (None: every registered default method); `layers`: module names (checked against
    the model by `score_cams`); `target`: explain the true 'label' or the 'predicted' class; `metrics`: None for
    the registry's defaults; `tolerance`: the pointing game's, in pixels (None: 15/224 of the input side);
    `sanity_images`: images of the cascading-randomization check; `resamples`: bootstrap resamples of the CIs;
    `chunk_size`: images per forward in the metrics.
    """

    layers: Sequence[str]
    methods: Sequence[str] | None = None
    target: str = "label"
    metrics: Sequence[str] | None = None
    tolerance: float | None = None
    sanity_images: int = 16
    seed: int = 0
    resamples: int = 1000
    chunk_size: int = 64

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"cams.target={self.target!r}; expected one of {TARGETS}")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ValueError(
                f"cams.tolerance={self.tolerance!r}; expected pixels >= 0, or null (15/224 of the side)"
            )
        for key in ("sanity_images", "resamples", "chunk_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"cams.{key}={value!r}; expected a positive int")
        object.__setattr__(self, "methods", [m.name for m in get_methods(self.methods)])
        object.__setattr__(self, "metrics", check_metrics(self.metrics))
        object.__setattr__(
            self, "layers", [self.layers] if isinstance(self.layers, str) else list(self.layers)
        )

    @property
    def chosen(self) -> list[Method]:
        return get_methods(self.methods)


@dataclass(frozen=True)
class BoxSet:
    """Boxes of the N scored images, in the order the batches yield them: `boxes` (N, 4) in model-input pixels,
    `kept` (N,) bool (False: no box, or cropped away) and `present` (N,) bool (which images have a box at all, to
    tell them apart from boxes the crop cut away in the note), or None when unknown."""

    boxes: Tensor
    kept: Tensor
    present: Tensor | None = None


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


@dataclass
class _Tally:
    """What `score_cams` gathers while it walks the batches."""

    values: dict[tuple[str, str, str], list[Tensor]] = field(default_factory=lambda: defaultdict(list))
    seconds: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    runtime: dict[str, float] = field(default_factory=lambda: {"engine": 0.0, "maps": 0.0})
    sanity: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    scored: int = 0
    tolerance: float = 0.0
    size: tuple[int, int] = (0, 0)


def score_cams(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    spec: ScoringSpec,
    boxes: BoxSet | None = None,
) -> CamScores:
    """Score every method × layer of `spec` (and the baselines) on `batches` of (normalized images, labels) on the
    model's device, in order. `boxes`: the boxes of the images the batches yield, one to one, or None
    (localization is then skipped with a note)."""
    layers, _ = check_layers(model, spec.layers)
    chosen = spec.chosen
    result = CamScores(
        settings={
            "methods": list(spec.methods),
            "layers": layers,
            "target": spec.target,
            "metrics": list(spec.metrics),
            "seed": spec.seed,
            "resamples": spec.resamples,
        }
    )
    per_map = [METRICS[name] for name in spec.metrics if name != SANITY]
    if boxes is None and any(m.needs_boxes for m in per_map):
        result.notes.append(
            "localization skipped: the split has no boxes (boxes.json); its columns are not reported"
        )
        per_map = [m for m in per_map if not m.needs_boxes]
    device = next(model.parameters()).device
    tally = _Tally()
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    noise = torch.Generator(device=device).manual_seed(spec.seed + 1)
    for images, labels in batches:
        _score_chunk(
            model,
            images.to(device),
            labels.to(device),
            spec,
            chosen,
            layers,
            per_map,
            boxes,
            tally,
            generator,
            noise,
        )
    if boxes is not None and tally.scored != boxes.boxes.shape[0]:
        raise ValueError(
            f"{boxes.boxes.shape[0]} boxes for {tally.scored} scored images; they must match one to one"
        )
    if tally.scored == 0:
        raise ValueError("no images to score: the batches were empty")
    if boxes is not None and any(m.needs_boxes for m in per_map):
        result.notes.append(_localization_note(boxes, tally))
    result.runtime = tally.runtime
    _summarize(result, tally, chosen, layers, per_map, spec)
    if SANITY in spec.metrics:
        _sanity(model, tally.sanity, chosen, layers, spec.sanity_images, spec.seed, spec.resamples, result)
    return result


def _score_chunk(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    spec: ScoringSpec,
    chosen: list[Method],
    layers: list[str],
    per_map: list[Metric],
    boxes: BoxSet | None,
    tally: _Tally,
    generator: torch.Generator,
    noise: torch.Generator,
) -> None:
    """One engine pass over a chunk, every method's maps from it and the baselines, each scored by `per_map`."""
    batch, start = images.shape[0], tally.scored
    size = tally.size = (images.shape[-2], images.shape[-1])
    tally.tolerance = loc.default_tolerance(size[0]) if spec.tolerance is None else float(spec.tolerance)
    masks = kept = None
    if boxes is not None:
        if start + batch > boxes.boxes.shape[0]:
            raise ValueError(
                f"{boxes.boxes.shape[0]} boxes for at least {start + batch} scored images; they must match one to one"
            )
        kept = boxes.kept[start : start + batch].to(images.device)
        masks = loc.box_masks(boxes.boxes[start : start + batch].to(images.device), size)
    tally.scored += batch
    wanted = labels if spec.target == "label" else None
    t0 = time.perf_counter()
    seen = capture(model, images, layers, targets=wanted, gradients=any(m.uses_gradients for m in chosen))
    _sync(images.device)
    tally.runtime["engine"] += time.perf_counter() - t0
    if SANITY in spec.metrics and sum(len(x) for x, _ in tally.sanity) < spec.sanity_images:
        tally.sanity.append((images, seen.targets))
    maps: dict[tuple[str, str], Tensor] = {}
    for method in chosen:
        t0 = time.perf_counter()
        for layer, m in cams_from_capture(seen, method, size).items():
            maps[(method.name, layer)] = m
        _sync(images.device)
        tally.runtime["maps"] += time.perf_counter() - t0
    # Baselines do not depend on the layer: scored once per chunk, repeated in every layer's table.
    for name, make in loc.BASELINES.items():
        maps[(name, "*")] = make(batch, size, generator=generator, device=images.device)
    for (row, layer), m in maps.items():
        view = MapBatch(
            model, images, seen.targets, seen.logits, m, masks, kept, tally.tolerance, spec.chunk_size, noise
        )
        for metric in per_map:
            t0 = time.perf_counter()
            out = metric.fn(view)
            _sync(images.device)
            tally.seconds[(row, layer, metric.name)] += time.perf_counter() - t0
            for column, v in out.items():
                tally.values[(row, layer, column)].append(v.detach().float())


def _localization_note(boxes: BoxSet, tally: _Tally) -> str:
    dropped = int((~boxes.kept).sum())
    missing = int((~boxes.present).sum()) if boxes.present is not None else None
    why = (
        f"{missing} without a box (e.g. clutter), {dropped - missing} with the box cropped away"
        if missing is not None
        else "no box, or the box cropped away entirely"
    )
    return (
        f"localization: {dropped} of {tally.scored} images excluded ({why}); "
        f"pointing-game tolerance {tally.tolerance:.2f} px at {tally.size[0]} px"
    )


def _summarize(
    result: CamScores,
    tally: _Tally,
    chosen: list[Method],
    layers: list[str],
    per_map: list[Metric],
    spec: ScoringSpec,
) -> None:
    """One row per (method or baseline, layer, column): mean, bootstrap CI, n, excluded, runtime."""
    columns = {c: (metric.name, better) for metric in per_map for c, better in metric.columns.items()}
    for layer in layers:
        for row in [m.name for m in chosen] + list(loc.BASELINES):
            key_layer = "*" if row in loc.BASELINES else layer
            for column, (metric_name, better) in columns.items():
                if (row, key_layer, column) in tally.values:
                    result.rows.append(
                        summary_row(
                            layer,
                            row,
                            column,
                            torch.cat(tally.values[(row, key_layer, column)]),
                            better=better,
                            runtime_s=tally.seconds[(row, key_layer, metric_name)],
                            resamples=spec.resamples,
                            seed=spec.seed,
                        )
                    )


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
