"""The shared core of every CAM method: one forward and one `torch.autograd.grad` for all requested layers.

`capture` runs the model once with forward hooks on the requested layers and differentiates the target-class
logits w.r.t. those layers' outputs only, so no parameter's `.grad` is written. `compute_cams` turns what it
captured into maps with a method from `methods.METHODS`, then ReLU, bilinear upsampling and min-max scaling.
Nothing a call does survives it: hooks, train/eval flags, grad/inference mode and autocast are all scoped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caltech_cam.cam.methods import Method, get_method
from caltech_cam.models.outputs import logits_of


@dataclass(frozen=True)
class Capture:
    """What one pass through the model saw; every tensor is float32, detached, on the images' device.

    `logits` (B, N), `targets` (B,) int64 (the classes whose logit y_c was differentiated), `activations`
    layer -> A (B, K, h, w), `gradients` layer -> ∂(Σ_b y_c[b])/∂A (same shape), or None if not asked for.
    Images are independent in eval mode, so summing the scores over the batch gives per-image gradients.
    """

    logits: Tensor
    targets: Tensor
    activations: dict[str, Tensor]
    gradients: dict[str, Tensor] | None


@contextlib.contextmanager
def evaluating(model: nn.Module, *, grad: bool, device_type: str) -> Iterator[None]:
    """Eval mode, grad mode `grad` (escaping no_grad and inference_mode) and no autocast for the body.

    Every module's own `training` flag is put back afterwards (a model may mix modes, e.g. frozen BN), which
    `model.train(previous)` would not do.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        # autocast would hand back half-precision activations and gradients; the maps are defined in float32.
        with (
            torch.inference_mode(False),
            torch.set_grad_enabled(grad),
            torch.autocast(device_type=device_type, enabled=False),
        ):
            yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def _hooked(modules: dict[str, nn.Module], layers: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks that keep each layer's output, alive only inside the block (removed even on error)."""
    seen: dict[str, Tensor] = {}

    def keeper(name: str):
        def keep(module: nn.Module, args: object, output: object) -> None:
            if name in seen:
                raise ValueError(
                    f"layer {name!r} runs more than once in one forward (a shared module); "
                    "pick a module that is called once, e.g. its parent block"
                )
            if not isinstance(output, Tensor) or output.ndim != 4:
                what = f"a {output.ndim}-D tensor" if isinstance(output, Tensor) else type(output).__name__
                raise ValueError(f"layer {name!r} outputs {what}, not a 4-D feature map (B, K, h, w)")
            seen[name] = output

        return keep

    handles = [modules[name].register_forward_hook(keeper(name)) for name in layers]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
        seen.clear()


def check_layers(
    model: nn.Module, layers: Sequence[str] | str, cam_layers: Sequence[str] | None = None
) -> tuple[list[str], dict[str, nn.Module]]:
    """`layers` as a list, and the model's named modules: the one layer check of the package (engine, explainer,
    scoring, sanity, callback, evaluate). ValueError for an empty list, an unknown or repeated name; the message
    names the model's CAM layers first when `cam_layers` is given.

    Only names are checked: whether a layer runs once and outputs a 4-D map shows in the forward pass.
    """
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty; name at least one module from model.named_modules()")
    modules = {name: module for name, module in model.named_modules() if name}
    for name in layers:
        if name not in modules:
            known = f"the model's CAM layers are {list(cam_layers)}; " if cam_layers is not None else ""
            raise ValueError(f"unknown layer {name!r}; {known}valid names: {', '.join(modules)}")
    duplicates = sorted({name for name in layers if layers.count(name) > 1})
    if duplicates:
        raise ValueError(f"layers lists {duplicates[0]!r} more than once: {layers}")
    return layers, modules


def check_targets(targets: Tensor | Sequence[int] | None, batch: int) -> Tensor | None:
    """Shape and dtype checks that need no device; the range is checked once the number of classes is known."""
    if targets is None:
        return None
    if not isinstance(targets, Tensor):
        targets = torch.as_tensor(list(targets))
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    if targets.shape != (batch,):
        raise ValueError(
            f"targets has shape {tuple(targets.shape)}; expected ({batch},), one class per image"
        )
    return targets.long()


def check_range(targets: Tensor, num_classes: int) -> None:
    """ValueError for class indices outside 0..num_classes-1, checked on the host for CPU targets only.

    Targets already on an accelerator (labels of a batch, the engine's own argmax) are not read back: that
    would be a host sync; an out-of-range one there trips the device's own index check in `gather` instead.
    """
    if targets.device.type != "cpu":
        return
    bad = (targets < 0) | (targets >= num_classes)
    if bad.any():
        raise ValueError(
            f"targets {targets[bad].tolist()} out of range: the model has {num_classes} classes (0..{num_classes - 1})"
        )


def capture(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    *,
    targets: Tensor | Sequence[int] | None = None,
    gradients: bool = True,
) -> Capture:
    """One forward (and, if `gradients`, one `torch.autograd.grad`) that records every layer in `layers`.

    The score differentiated is the raw logit y_c of class c = `targets[b]` (default: the predicted class).
    Works under `torch.no_grad()` / `torch.inference_mode()` (the input is cloned outside them), on a model in
    train or eval mode (the pass runs in eval mode), with frozen parameters, and leaves no trace on the model.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.dtype.is_floating_point:
        what = (
            f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) else images
        )
        raise ValueError(f"images must be a float tensor (B, C, H, W), got {what}")
    layers, modules = check_layers(model, layers)
    wanted = check_targets(targets, images.shape[0])
    with (
        evaluating(model, grad=gradients, device_type=images.device.type),
        _hooked(modules, layers) as seen,
    ):
        # A fresh, normal tensor: an inference-mode tensor cannot be saved for backward. It requires grad so
        # the hooked activations do even when every parameter is frozen.
        x = images.detach().clone().requires_grad_(gradients)
        logits = logits_of(model(x))
        missing = [name for name in layers if name not in seen]
        if missing:
            raise ValueError(
                f"layer {missing[0]!r} did not run in the forward pass (is it used in eval mode?)"
            )
        if wanted is None:
            chosen = logits.detach().argmax(dim=1)
        else:
            check_range(wanted, logits.shape[1])
            chosen = wanted.to(logits.device, non_blocking=True)
        grads = None
        if gradients:
            acts = [seen[name] for name in layers]
            for name, act in zip(layers, acts, strict=True):
                if not act.requires_grad:
                    raise ValueError(f"layer {name!r}'s output does not depend differentiably on the input")
            score = logits.gather(1, chosen[:, None]).sum()
            # Only w.r.t. the activations: the parameters' .grad are never touched, and the backward stops
            # at the earliest hooked layer.
            found = torch.autograd.grad(score, acts, materialize_grads=True)
            grads = {name: g.detach().float() for name, g in zip(layers, found, strict=True)}
        return Capture(
            logits=logits.detach().float(),
            targets=chosen,
            activations={name: seen[name].detach().float() for name in layers},
            gradients=grads,
        )


def minmax(maps: Tensor) -> Tensor:
    """Per-map min-max scaling to [0, 1]: (M − min M) / (max M − min M); a constant map (e.g. all zero) → 0."""
    flat = maps.flatten(1)
    low = flat.amin(dim=1).view(-1, *([1] * (maps.ndim - 1)))
    span = flat.amax(dim=1).view_as(low) - low
    # Where span == 0 the numerator is 0 too: dividing by 1 keeps the map at 0 instead of NaN, without a sync.
    return (maps - low) / torch.where(span > 0, span, torch.ones_like(span))


def postprocess(raw: Tensor, size: tuple[int, int], *, normalize: bool = True) -> Tensor:
    """ReLU (keep evidence for the class), bilinear upsampling to `size` (align_corners=False), then `minmax`.

    When normalizing, the map is scaled before upsampling too: a constant map (e.g. a 1×1 layer) is then exactly
    0 instead of interpolation round-off stretched to [0, 1]; the final scaling is needed because bilinear
    samples need not hit the extremes. Both are affine, so the result is that of a single scaling otherwise.
    """
    # Under autocast, interpolation would come back in half precision: the maps are float32 by contract.
    with torch.autocast(device_type=raw.device.type, enabled=False):
        maps = F.relu(raw.float())
        if normalize:
            maps = minmax(maps)
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return minmax(maps) if normalize else maps


def _check_size(size: int | Sequence[int] | None, images: Tensor) -> tuple[int, int]:
    if size is None:
        return (images.shape[-2], images.shape[-1])
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return pair


def compute_cams(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    *,
    method: str = "gradcam",
    targets: Tensor | Sequence[int] | None = None,
    size: int | tuple[int, int] | None = None,
    normalize: bool = True,
) -> dict[str, Tensor]:
    """Class activation maps of every layer in `layers` from one forward and one gradient.

    Returns layer name -> (B, H, W) float32 maps on the images' device: the method's raw map, ReLU'd, upsampled
    bilinearly to `size` (default: the images' H×W) and, if `normalize`, min-max scaled to [0, 1] per image.
    `targets`: None = each image's predicted class, else one class index per image.
    """
    cam = get_method(method)
    out_size = _check_size(size, images)
    seen = capture(model, images, layers, targets=targets, gradients=cam.uses_gradients)
    return cams_from_capture(seen, cam, out_size, normalize=normalize)


def cams_from_capture(
    seen: Capture, method: Method, size: tuple[int, int], *, normalize: bool = True
) -> dict[str, Tensor]:
    """Every captured layer's map by `method`, post-processed (ReLU, upsampling to `size`, optional min-max).

    For callers that also need the pass's logits or targets (e.g. captions of the predicted class).
    """
    # Same scope as the pass: float32 math under autocast, ordinary (not inference) tensors under inference_mode.
    with (
        torch.inference_mode(False),
        torch.no_grad(),
        torch.autocast(device_type=next(iter(seen.activations.values())).device.type, enabled=False),
    ):
        return {
            name: postprocess(
                method(acts, seen.gradients[name] if seen.gradients is not None else None),
                size,
                normalize=normalize,
            )
            for name, acts in seen.activations.items()
        }
