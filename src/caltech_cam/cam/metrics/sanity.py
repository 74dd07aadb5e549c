"""Sanity check of CAM methods: cascading model-parameter randomization (Adebayo et al., NeurIPS 2018).

On a deep copy of the model (the original is never touched), blocks are re-initialized top-down, cumulatively:
the head first, then the deepest block, and so on down to the stem. After each step every layer's map is
recomputed (one engine pass for all layers and methods, for the same target classes as the original model) and
compared with the original map by the Spearman rank correlation, per image. A map that still correlates strongly
once every block above its layer is random does not depend on what the model learned there: it is flagged.

Blocks are found generically: the model's direct children that own parameters, in the order they first run in a
forward pass (recorded by hooks on one pass of the images), reversed. For torchvision's ResNet50 that is
fc, layer4, layer3, layer2, layer1, bn1, conv1; modules that do not run in eval mode (InceptionV3's AuxLogits) are
left out. Re-initialization is each module's own `reset_parameters()` (PyTorch's default initializers, which reset
BatchNorm's running statistics too) under a seeded RNG; a module whose parameters have no reset is refused.

The maps are ReLU'd and scaled to [0, 1], so the absolute-value variant of Adebayo et al. equals the plain one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from caltech_cam.cam.engine import cams_from_capture, capture, check_layers, evaluating
from caltech_cam.cam.methods import get_method

# A layer's maps are flagged when their mean Spearman correlation with the original maps is still above this
# once every block above the layer is randomized (Adebayo et al. show faithful methods fall to ~0 there).
SANITY_THRESHOLD = 0.5

Steps = list[tuple[str, dict[str, dict[str, Tensor]]]]


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..n along the last dimension, ties given their average rank (scipy.stats.rankdata 'average')."""
    flat = values.reshape(-1, values.shape[-1])
    rows, n = flat.shape
    ordered, order = flat.sort(dim=1, stable=True)
    # A tie group starts where the sorted value changes; ids are made unique across rows by a row offset.
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.long().cumsum(dim=1) - 1 + torch.arange(rows, device=flat.device)[:, None] * n
    positions = torch.arange(1, n + 1, device=flat.device, dtype=torch.float64).expand(rows, n)
    mean_rank = torch.zeros(rows * n, device=flat.device, dtype=torch.float64)
    mean_rank.scatter_reduce_(0, group.flatten(), positions.flatten(), reduce="mean", include_self=False)
    ranks = torch.empty_like(positions)
    ranks.scatter_(1, order, mean_rank[group])
    return ranks.view(values.shape)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's ρ per item of a batch: the Pearson correlation of the average ranks of a[i] and b[i], (B,).

    Computed in float64; NaN where either item is constant (its ranks have no variance), as scipy gives.
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"spearman needs two batches of one shape (B, ...), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    ra = average_ranks(a.flatten(1).double())
    rb = average_ranks(b.flatten(1).double())
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    return (ra * rb).sum(dim=1) / ((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1)).sqrt()


def randomization_blocks(model: nn.Module, images: Tensor) -> list[str]:
    """The model's direct children with parameters, top-down: the reverse of the order they first run in."""
    ran: list[str] = []
    owners = {name: child for name, child in model.named_children() if any(True for _ in child.parameters())}

    def note(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            if name not in ran:
                ran.append(name)

        return hook

    handles = [child.register_forward_hook(note(name)) for name, child in owners.items()]
    try:
        with evaluating(model, grad=False, device_type=images.device.type):
            model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not ran:
        raise ValueError(f"{type(model).__name__} has no child module with parameters to randomize")
    return ran[::-1]


def _reinitialize(block: nn.Module, name: str) -> None:
    """Every submodule's own `reset_parameters()`; a ValueError if a parameter would keep its trained value."""
    for sub_name, module in block.named_modules():
        own = list(module.parameters(recurse=False))
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        elif own:
            where = f"{name}.{sub_name}" if sub_name else name
            raise ValueError(
                f"module {where!r} ({type(module).__name__}) has parameters but no reset_parameters(); "
                "cannot randomize it (pass blocks= without it)"
            )


def _maps(model: nn.Module, images: Tensor, layers: list[str], methods: list, targets: Tensor | None):
    gradients = any(m.uses_gradients for m in methods)
    seen = capture(model, images, layers, targets=targets, gradients=gradients)
    size = (images.shape[-2], images.shape[-1])
    return seen, {m.name: cams_from_capture(seen, m, size) for m in methods}


def cascading_randomization_many(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    methods: Sequence[str],
    targets: Tensor | Sequence[int] | None = None,
    *,
    seed: int = 0,
    blocks: Sequence[str] | None = None,
) -> Steps:
    """`cascading_randomization` for several methods from the same engine passes.

    Returns [(block randomized at this step, {method -> {layer -> Spearman (B,)}})], one entry per block, top-down.
    """
    layers, _ = check_layers(model, layers)
    chosen = [get_method(m) for m in methods]
    order = randomization_blocks(model, images) if blocks is None else list(blocks)
    children = dict(model.named_children())
    unknown = [b for b in order if b not in children]
    if unknown:
        raise ValueError(f"unknown block {unknown[0]!r}; the model's children: {', '.join(children)}")
    seen, original = _maps(model, images, layers, chosen, targets)
    # The classes the original model explained, so a randomized model's maps explain the same ones.
    classes = seen.targets
    twin = copy.deepcopy(model)
    steps: Steps = []
    devices = [images.device] if images.device.type == "cuda" else []
    for step, name in enumerate(order):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + step)
            with torch.no_grad():
                _reinitialize(dict(twin.named_children())[name], name)
        _, maps = _maps(twin, images, layers, chosen, classes)
        steps.append(
            (
                name,
                {m: {layer: spearman(original[m][layer], maps[m][layer]) for layer in layers} for m in maps},
            )
        )
    return steps


def cascading_randomization(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    method: str,
    targets: Tensor | Sequence[int] | None = None,
    *,
    seed: int = 0,
    blocks: Sequence[str] | None = None,
) -> list[tuple[str, dict[str, Tensor]]]:
    """Cascading randomization (Adebayo et al. 2018): after re-initializing each block top-down (cumulatively, on
    a copy), the Spearman ρ of every layer's map with the original map, per image.

    Returns [(block name, {layer -> ρ (B,)})], one entry per block in the order randomized. `targets`: the classes
    explained (default: the original model's predictions, kept for every step). `blocks`: children names top-down
    (default: `randomization_blocks`). `seed` makes the random weights reproducible.
    """
    steps = cascading_randomization_many(model, images, layers, [method], targets, seed=seed, blocks=blocks)
    name = get_method(method).name
    return [(block, per_method[name]) for block, per_method in steps]


def step_above(blocks: Sequence[str], layer: str) -> int:
    """Index of the step after which every block above `layer` is random: the step before its own block's.

    For a layer in the top block (nothing above it) this is that block's own step.
    """
    for index, block in enumerate(blocks):
        if layer == block or layer.startswith(block + "."):
            return max(index - 1, 0)
    raise ValueError(f"layer {layer!r} is in none of the randomized blocks {list(blocks)}")


def sanity_summary(
    steps: Sequence[tuple[str, dict[str, Tensor]]], *, threshold: float = SANITY_THRESHOLD
) -> dict[str, dict[str, object]]:
    """Per layer: the step compared (`step_above`), ρ there (B,), ρ after all steps (B,) and `flagged`.

    `flagged` is mean ρ (over images where it is defined) > `threshold` once every block above the layer is random:
    the map does not depend on those weights. Host reads happen here, at the report's edge.
    """
    blocks = [block for block, _ in steps]
    summary: dict[str, dict[str, object]] = {}
    for layer in steps[0][1]:
        index = step_above(blocks, layer)
        above = steps[index][1][layer]
        mean = float(above.nanmean()) if bool(above.isfinite().any()) else float("nan")
        summary[layer] = {
            "step": blocks[index],
            "spearman_above": above,
            "spearman_all": steps[-1][1][layer],
            "mean_above": mean,
            "flagged": mean > threshold,
        }
    return summary
