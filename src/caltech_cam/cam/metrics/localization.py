"""Does the map point at the object? Localization scores of CAM maps against ground-truth boxes, with baselines.

Geometry. A box is the continuous rectangle [x0, x1) x [y0, y1) in pixels; pixel (row i, column j) covers
[j, j + 1) x [i, i + 1) and counts as inside when its centre (j + 0.5, i + 0.5) lies in the box. Boxes come in the
saved image's pixels and are mapped through the preset's own evaluation geometry (:func:`map_boxes`): the square
resize (x * R / W, y * R / H; the aspect ratio is not kept), then torchvision's centre-crop offset
``int(round((R - C) / 2))`` (Python's round, as ``v2.functional.center_crop``), clipping to [0, C).

Ties. No score breaks a tie by raster order. Each counts tied pixels by their expected share under a uniformly
random tie-break: the pointing game scores the fraction of the tied maxima that hit, relevance rank fills the last
places from the tied value's pixels in proportion. A map with no mass (all zeros) is a constant map. So a constant
map scores the mask's area share in every metric (the pointing game at tolerance 0).

Maps are float (N, H, W), masks bool (N, H, W) of the same shape. Every score is (N,) float on the maps' device,
NaN where the mask is empty (no box: the caller counts those), computed without a host sync.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from caltech_cam.data.boxes import ImageBoxes
from caltech_cam.data.presets import Preset

# Zhang et al. 2016 count a hit within 15 px of the object at 224 px inputs.
TOLERANCE_PX_AT_224 = 15.0
# The centre baseline's Gaussian: standard deviation a quarter of the side, per axis.
CENTRE_SIGMA = 0.25


def default_tolerance(size: int) -> float:
    """The pointing game's tolerance at an input side of ``size`` px: 15 * size / 224 (Zhang et al. 2016)."""
    return TOLERANCE_PX_AT_224 * size / 224


def map_boxes(boxes: ImageBoxes, preset: Preset) -> tuple[Tensor, Tensor]:
    """Boxes in the model input's pixels (N, 4) float, and ``kept`` (N,) bool.

    x' = x * R / W and y' = y * R / H (square resize to R = ``preset.resize``), then minus the centre crop's offset
    ``int(round((R - C) / 2))`` and clipped to [0, C] when ``preset.crop`` = C is set. ``kept`` is False where
    the image has no box or where the crop cut the box off entirely (it covers no pixel centre of the input, so
    its mask would be empty); such rows are NaN. A partly cut box is clipped and kept.
    """
    resize = preset.resize
    # In float64: x * R is exact and the division correctly rounded, so hand-computed boundaries hold.
    sizes = boxes.sizes.to(torch.float64)
    height, width = sizes[:, 0], sizes[:, 1]
    mapped = boxes.boxes.to(torch.float64) * resize / torch.stack([width, height, width, height], dim=1)
    if preset.crop is not None:
        # torchvision's _center_crop_compute_crop_anchor: int(round(...)), Python's round (half to even).
        offset = round((resize - preset.crop) / 2.0)
        mapped = (mapped - offset).clamp(0.0, preset.crop)
    mapped = mapped.to(boxes.boxes.dtype)
    cols, rows = _centre_ranges(mapped[:, 0], mapped[:, 2]), _centre_ranges(mapped[:, 1], mapped[:, 3])
    kept = boxes.present & (cols[1] > cols[0]) & (rows[1] > rows[0])
    mapped = torch.where(kept[:, None], mapped, torch.full_like(mapped, math.nan))
    return mapped, kept


def _centre_ranges(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Integer pixel indices [first, end) whose centres k + 0.5 lie in [lo, hi): ceil(lo - 0.5), ceil(hi - 0.5)."""
    return torch.ceil(lo - 0.5), torch.ceil(hi - 0.5)


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """bool (N, H, W): pixel (i, j) is True when its centre (j + 0.5, i + 0.5) lies in [x0, x1) x [y0, y1).

    A NaN row (no box) gives an empty mask.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy, got shape {tuple(boxes.shape)}")
    height, width = size
    x_lo, x_hi = _centre_ranges(boxes[:, 0], boxes[:, 2])
    y_lo, y_hi = _centre_ranges(boxes[:, 1], boxes[:, 3])
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    in_x = (cols >= x_lo[:, None]) & (cols < x_hi[:, None])  # (N, W)
    in_y = (rows >= y_lo[:, None]) & (rows < y_hi[:, None])  # (N, H)
    return in_y[:, :, None] & in_x[:, None, :]


def _check(maps: Tensor, masks: Tensor) -> None:
    if maps.ndim != 3 or not maps.is_floating_point():
        raise ValueError(f"maps must be float (N, H, W), got {maps.dtype} of shape {tuple(maps.shape)}")
    if masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool (N, H, W), got {masks.dtype}")
    if masks.device != maps.device:
        raise ValueError(
            f"maps are on {maps.device} but masks on {masks.device}: build the masks on the maps' device"
        )
    if masks.shape != maps.shape:
        raise ValueError(
            f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ in shape: map the boxes to the "
            "maps' size (map_boxes, then box_masks with the maps' (H, W))"
        )


def _empty_to_nan(scores: Tensor, masks: Tensor) -> Tensor:
    return torch.where(masks.flatten(1).any(dim=1), scores, torch.full_like(scores, math.nan))


def dilate(masks: Tensor, radius: float) -> Tensor:
    """bool (N, H, W): the pixels whose centre lies within Euclidean distance ``radius`` of a mask pixel's centre.

    An exact squared distance transform, cut at ``radius``: the distance dx to the nearest mask pixel in the same
    row (two running max/min passes), then d^2 = min over row offsets |dy| <= radius of dx(i + dy)^2 + dy^2. All
    integer arithmetic, so a pixel exactly ``radius`` away is inside; O(radius * N * H * W), no gathers.
    """
    reach = math.floor(radius)
    if reach <= 0:
        return masks
    _, height, width = masks.shape
    # Distances beyond the radius all count as "far": capping them keeps every value a small int32.
    far = reach + 1
    cols = torch.arange(width, device=masks.device, dtype=torch.int32)
    left = torch.where(masks, cols, -width - far).cummax(dim=-1).values  # nearest mask column at or left of j
    right = torch.where(masks, cols, 2 * width + far).flip(-1).cummin(dim=-1).values.flip(-1)  # at or right
    dx = torch.minimum(cols - left, right - cols).clamp_(max=far)
    row_d2 = dx * dx
    d2 = row_d2.clone()
    for dy in range(1, min(reach, height - 1) + 1):
        # A mask pixel dy rows below (above) row i: row_d2 of row i + dy (i - dy), plus dy^2.
        below, above = d2[:, :-dy], d2[:, dy:]
        torch.minimum(below, row_d2[:, dy:] + dy * dy, out=below)
        torch.minimum(above, row_d2[:, :-dy] + dy * dy, out=above)
    return d2 <= radius * radius


def pointing_game(maps: Tensor, masks: Tensor, tolerance: float = 0.0) -> Tensor:
    """Pointing game (Zhang et al. 2016): a hit when the map's maximum lies within ``tolerance`` px of the mask.

    The distance is Euclidean between pixel centres, inclusive (a mask pixel exactly ``tolerance`` away counts).
    With tied maxima the score is the fraction of them that hit (the expected hit of a random tie-break), so a
    constant map at tolerance 0 scores the mask's area share. (N,) float in [0, 1], NaN where the mask is empty.
    """
    _check(maps, masks)
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number of pixels >= 0, got {tolerance}")
    flat = maps.flatten(1)
    peak = (flat == flat.amax(dim=1, keepdim=True)).view_as(maps)
    near = dilate(masks, tolerance)
    hits = (peak & near).flatten(1).sum(dim=1).to(maps.dtype)
    return _empty_to_nan(hits / peak.flatten(1).sum(dim=1).to(maps.dtype), masks)


def relevance_mass(maps: Tensor, masks: Tensor) -> Tensor:
    """Relevance mass accuracy (Arras et al. 2022, CLEVR-XAI): R_within / R_total of the map's positive part.

    Negative values (none in a CAM) carry no mass. A map with no mass is a constant map: it scores the mask's
    area share. (N,) float in [0, 1], NaN where the mask is empty.
    """
    _check(maps, masks)
    mass = maps.clamp(min=0).flatten(1)
    inside = (mass * masks.flatten(1)).sum(dim=1)
    total = mass.sum(dim=1)
    share = masks.flatten(1).sum(dim=1).to(maps.dtype) / (masks.shape[1] * masks.shape[2])
    # where() evaluates both branches: divide by a safe total, then pick.
    score = torch.where(total > 0, inside / total.clamp(min=torch.finfo(maps.dtype).tiny), share)
    return _empty_to_nan(score, masks)


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game (Score-CAM, Wang et al. 2020): sum of L in the box / (sum in box + sum outside).

    On a box mask and a non-negative map this IS :func:`relevance_mass` (Arras et al. define theirs on
    segmentation masks, Score-CAM on boxes; the formula is the same), so it is computed there, and a test checks
    both against the formula on hand-cut boxes.
    """
    return relevance_mass(maps, masks)


def relevance_rank(maps: Tensor, masks: Tensor) -> Tensor:
    """Relevance rank accuracy (Arras et al. 2022): of the K = |mask| highest-valued pixels, the fraction in the mask.

    Ties at the K-th value v are filled in expectation: with g pixels above v (g_in of them in the mask) and e
    pixels equal to v (e_in in the mask), the score is (g_in + (K - g) * e_in / e) / K. (N,) float in [0, 1], NaN
    where the mask is empty.
    """
    _check(maps, masks)
    flat, inside = maps.flatten(1), masks.flatten(1)
    k = inside.sum(dim=1)
    ordered = flat.sort(dim=1, descending=True).values
    kth = ordered.gather(1, (k - 1).clamp(min=0)[:, None])
    above, tied = flat > kth, flat == kth
    g = above.sum(dim=1)
    g_in = (above & inside).sum(dim=1).to(maps.dtype)
    e = tied.sum(dim=1).clamp(min=1).to(maps.dtype)
    e_in = (tied & inside).sum(dim=1).to(maps.dtype)
    score = (g_in + (k - g).to(maps.dtype) * e_in / e) / k.clamp(min=1).to(maps.dtype)
    return _empty_to_nan(score, masks)


def localization_scores(
    maps: Tensor, masks: Tensor, tolerance: float, columns: Sequence[str] | None = None
) -> dict[str, Tensor]:
    """Every localization score of ``maps`` against ``masks``, each (N,): the pointing game at ``tolerance`` and at
    0, the energy pointing game, relevance mass and relevance rank; ``columns`` computes only those named."""
    scores: dict[str, Callable[[], Tensor]] = {
        "pointing_game": lambda: pointing_game(maps, masks, tolerance),
        "pointing_game_tol0": lambda: pointing_game(maps, masks, 0.0),
        "energy_pointing_game": lambda: energy_pointing_game(maps, masks),
        "relevance_mass": lambda: relevance_mass(maps, masks),
        "relevance_rank": lambda: relevance_rank(maps, masks),
    }
    unknown = sorted(set(columns or ()) - set(scores))
    if unknown:
        raise ValueError(f"unknown localization column(s) {unknown}; expected some of {list(scores)}")
    return {name: score() for name, score in scores.items() if columns is None or name in columns}


def uniform_baseline(
    n: int,
    size: tuple[int, int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(n, H, W) maps of independent uniform [0, 1) values: the score of pointing at random."""
    gen_device = generator.device if generator is not None else device
    return torch.rand((n, *size), generator=generator, device=gen_device).to(device)


def centre_baseline(
    n: int,
    size: tuple[int, int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(n, H, W) copies of a centred Gaussian, exp(-((x - W/2)^2 / 2 sx^2 + (y - H/2)^2 / 2 sy^2)) at pixel
    centres, sx = W / 4, sy = H / 4: the score of guessing the middle. Deterministic (``generator`` is accepted
    and unused so that every :data:`BASELINES` entry is called the same way). Its maximum is the centre pixel, or
    the 2 or 4 pixels tied around the centre at an even side."""
    height, width = size
    y = (torch.arange(height, device=device, dtype=torch.float64) + 0.5 - height / 2) / (
        CENTRE_SIGMA * height
    )
    x = (torch.arange(width, device=device, dtype=torch.float64) + 0.5 - width / 2) / (CENTRE_SIGMA * width)
    gauss = torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).float()
    return gauss.expand(n, height, width).clone()


BASELINES: dict[str, Callable[..., Tensor]] = {"uniform": uniform_baseline, "centre": centre_baseline}
