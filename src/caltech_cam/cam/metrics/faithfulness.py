"""Faithfulness of CAM maps: does the model still see the class in what the map keeps?

All work on the model's input as given (normalized), under no_grad in eval mode (flags restored), in chunks of
`chunk_size` images, and return tensors on the images' device without a host sync, so a callback can log them.
Masking multiplies the input by the map: on a normalized input, 0 is the dataset's mean colour.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from caltech_cam.cam.engine import check_range, check_targets, evaluating
from caltech_cam.models.outputs import logits_of


def _probabilities(model: nn.Module, batches: Iterable[Tensor], classes: Tensor) -> Tensor:
    """softmax(model(x))[c] for the images the iterator yields, chunk by chunk; `classes` one per image."""
    out, start = [], 0
    for chunk in batches:
        logits = logits_of(model(chunk)).float()
        out.append(logits.softmax(dim=1).gather(1, classes[start : start + len(chunk), None])[:, 0])
        start += len(chunk)
    return torch.cat(out)


def target_probabilities(
    model: nn.Module, images: Tensor, targets: Tensor | Sequence[int] | None = None, *, chunk_size: int = 64
) -> tuple[Tensor, Tensor]:
    """Y_c = softmax(model(x))_c per image, and the classes c used (default: the predicted class)."""
    wanted = check_targets(targets, images.shape[0])
    with evaluating(model, grad=False, device_type=images.device.type):
        logits = torch.cat([logits_of(model(c)).float() for c in images.split(chunk_size)])
        if wanted is not None:
            check_range(wanted, logits.shape[1])
        classes = logits.argmax(dim=1) if wanted is None else wanted.to(images.device, non_blocking=True)
        return logits.softmax(dim=1).gather(1, classes[:, None])[:, 0], classes


def average_drop(base: Tensor, masked: Tensor, *, reduce: bool = True) -> Tensor:
    """Average Drop % (Chattopadhay et al., Grad-CAM++, WACV 2018): 100 · mean_i max(0, Y_c^i − O_c^i) / Y_c^i.

    Y_c = softmax score of class c on the image, O_c = on the image multiplied by the map. Lower is better.
    reduce=False gives the per-image terms (B,), whose mean is the reduced value.
    """
    # Y_c can underflow to 0 for a class far from the prediction; then Y_c − O_c ≤ 0 and the term is 0.
    drops = 100 * ((base - masked).clamp_min(0) / base.clamp_min(torch.finfo(base.dtype).tiny))
    return drops.mean() if reduce else drops


def increase_in_confidence(base: Tensor, masked: Tensor, *, reduce: bool = True) -> Tensor:
    """Increase in Confidence % (Chattopadhay et al., WACV 2018): 100 · mean_i [O_c^i > Y_c^i]. Higher is better.

    reduce=False gives the per-image terms (B,) (100 or 0), whose mean is the reduced value.
    """
    increases = 100 * (masked > base).float()
    return increases.mean() if reduce else increases


def confidence_change(
    model: nn.Module,
    images: Tensor,
    maps: Mapping[str, Tensor],
    targets: Tensor | Sequence[int] | None = None,
    *,
    logits: Tensor | None = None,
    chunk_size: int = 64,
    reduce: bool = True,
) -> dict[str, dict[str, Tensor]]:
    """Average Drop % and Increase in Confidence % of every layer's maps (B, H, W) in [0, 1].

    Costs one forward of the images (none if their `logits` are given, e.g. from `capture`) plus one of the
    B × layers masked images, batched across layers in chunks. Returns layer ->
    {"average_drop": scalar, "increase_in_confidence": scalar}; with reduce=False each is the per-image (B,)
    tensor whose mean is that scalar (for confidence intervals over images).
    """
    for name, m in maps.items():
        if m.shape != (images.shape[0], *images.shape[-2:]):
            raise ValueError(
                f"map of layer {name!r} has shape {tuple(m.shape)}; expected (B, H, W) of the images"
            )
    if logits is None:
        base, classes = target_probabilities(model, images, targets, chunk_size=chunk_size)
    else:
        wanted = check_targets(targets, images.shape[0])
        classes = logits.argmax(dim=1) if wanted is None else wanted.to(logits.device)
        base = logits.float().softmax(dim=1).gather(1, classes[:, None])[:, 0]
    names = list(maps)
    batch = images.shape[0]
    # Masked copies are made layer by layer and fed in full chunks: few, large forwards, bounded memory.
    chunks = _masked_chunks(images, [maps[n] for n in names], chunk_size)
    with evaluating(model, grad=False, device_type=images.device.type):
        masked = _probabilities(model, chunks, classes.repeat(len(names)))
    return {
        name: {
            "average_drop": average_drop(base, masked[k * batch : (k + 1) * batch], reduce=reduce),
            "increase_in_confidence": increase_in_confidence(
                base, masked[k * batch : (k + 1) * batch], reduce=reduce
            ),
        }
        for k, name in enumerate(names)
    }


def _masked_chunks(images: Tensor, maps: Sequence[Tensor], chunk_size: int) -> Iterator[Tensor]:
    """The images multiplied by each layer's map, layer after layer, in chunks of at most `chunk_size`."""
    pending: list[Tensor] = []
    size = 0
    for m in maps:
        for part in (images * m[:, None].to(images.dtype)).split(chunk_size):
            pending.append(part)
            size += part.shape[0]
            while size >= chunk_size:
                joined = torch.cat(pending)
                yield joined[:chunk_size]
                rest = joined[chunk_size:]
                pending, size = ([rest] if rest.shape[0] else []), rest.shape[0]
    if size:
        yield torch.cat(pending)


def _pixel_ranks(saliency: Tensor) -> Tensor:
    """Rank of every pixel by decreasing saliency (0 = most salient), (B, H·W); ties keep raster order."""
    order = saliency.flatten(1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    return ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))


def _rise_curve(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    saliency: Tensor,
    classes: Tensor,
    steps: int,
    chunk_size: int,
) -> Tensor:
    """p_c after replacing the top ⌊s·HW/steps⌋ most salient pixels of `start` by `end`, s = 0..steps: (B, steps+1)."""
    batch, _, height, width = start.shape
    ranks = _pixel_ranks(saliency)
    counts = torch.arange(steps + 1, device=start.device) * (height * width) // steps
    flat = torch.arange(batch * (steps + 1), device=start.device)

    def images() -> Iterator[Tensor]:
        # Built chunk by chunk so memory stays at chunk_size images whatever B and steps.
        for index in flat.split(chunk_size):
            image, step = index // (steps + 1), index % (steps + 1)
            replaced = (ranks[image] < counts[step, None]).view(-1, 1, height, width)
            yield torch.where(replaced, end[image], start[image])

    with evaluating(model, grad=False, device_type=start.device.type):
        return _probabilities(model, images(), classes.repeat_interleave(steps + 1)).view(batch, steps + 1)


def rise_auc(*args: Any, steps: int = 16, **settings: Any) -> Tensor:
    """∫₀¹ p_c dt by the trapezoid rule on t = s/steps, (B,), of `rise_curve(*args, steps=steps, **settings)`
    (`deletion_auc`, `insertion_auc`)."""
    return torch.trapezoid(rise_curve(*args, steps=steps, **settings), dx=1.0 / steps, dim=1)


def rise_curve(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    targets: Tensor | Sequence[int] | None = None,
    *,
    insertion: bool,
    steps: int = 16,
    chunk_size: int = 64,
) -> Tensor:
    """p_c at t = s/steps, (B, steps+1) (RISE, Petsiuk et al., BMVC 2018): deletion (`insertion=False`) sets the
    most salient fraction t of pixels to 0 (the mean colour of a normalized input); insertion restores them onto
    RISE's blur (Gaussian, 11 px, σ = 5). Costs B·(steps+1) forwards."""
    if saliency.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"saliency of shape {tuple(saliency.shape)}; expected (B, H, W) of the images")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _, classes = target_probabilities(model, images, targets, chunk_size=chunk_size)
    if insertion:
        start, end = TF.gaussian_blur(images, kernel_size=[11, 11], sigma=[5.0, 5.0]), images
    else:
        start, end = images, torch.zeros_like(images)
    return _rise_curve(model, start, end, saliency, classes, steps, chunk_size)


def _named(function: functools.partial, name: str, doc: str) -> functools.partial:
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    return function


deletion_auc = _named(
    functools.partial(rise_auc, insertion=False),
    "deletion_auc",
    """Deletion AUC (Petsiuk et al., RISE, BMVC 2018), per image (B,). Lower is better.

    AUC = ∫₀¹ p_c(x with the most salient fraction t of pixels set to 0) dt, by the trapezoid rule on
    t = s/steps. 0 is the mean colour of a normalized input. Costs B·(steps+1) forwards.
    `deletion_auc(model, images, saliency, targets=None, *, steps=16, chunk_size=64)`.""",
)
insertion_auc = _named(
    functools.partial(rise_auc, insertion=True),
    "insertion_auc",
    """Insertion AUC (Petsiuk et al., RISE, BMVC 2018), per image (B,). Higher is better.

    AUC = ∫₀¹ p_c(blurred x with the most salient fraction t of pixels restored) dt, trapezoid rule on
    t = s/steps; the blur is RISE's (Gaussian, 11 px, σ = 5). Costs B·(steps+1) forwards.
    `insertion_auc(model, images, saliency, targets=None, *, steps=16, chunk_size=64)`.""",
)
deletion_curve = _named(
    functools.partial(rise_curve, insertion=False),
    "deletion_curve",
    "The curve `deletion_auc` integrates, (B, steps+1): p_c with the top fraction t = s/steps of pixels set to 0.",
)
insertion_curve = _named(
    functools.partial(rise_curve, insertion=True),
    "insertion_curve",
    "The curve `insertion_auc` integrates, (B, steps+1): p_c of the blurred image with the top fraction t = s/steps "
    "of pixels restored.",
)
