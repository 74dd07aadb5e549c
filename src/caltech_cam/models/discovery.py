"""What a network nobody here wrote is made of: its classification head and its CAM stages.

- **Head**: the module `model.head` names, else the last `nn.Linear` in registration order (`named_modules()`).
- **Stages** (the downsampling structure): one dummy forward records every module's output. Starting at the root,
  the direct children with a spatial 4-D output (1 x 1 pooled outputs left out) are taken in execution order:
  if they show several resolutions, the last child of each run of equal resolution is a stage (and such a child
  whose own children change resolution is expanded the same way); if they show one, the walk descends into the one
  child whose own children change resolution. A ResNet gives its stem activation and `layer1`..`layer4`, a
  MobileNet or ConvNeXt the last block of each resolution of `features`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

# The dummy input's side for stage discovery: resolutions are only compared, and 128 px keeps a /32 stage at 4 x 4.
PROBE_SIZE = 128


def find_head(model: nn.Module, head: str | None = None) -> str:
    """The name of the classification head: `head` if given (checked), else the last `nn.Linear`."""
    modules = dict(model.named_modules())
    if head is not None:
        if head not in modules or not head:
            raise ValueError(
                f"model.head={head!r} is not a module of {type(model).__name__}{hint(head, modules)}"
            )
        return head
    linears = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear to use as its classification head: "
            "name the module that outputs the class scores with model.head=<module name>"
        )
    return linears[-1]


def replace_head(model: nn.Module, num_classes: int, head: str | None = None) -> str:
    """Swap the head (see `find_head`) for a fresh one with `num_classes` outputs; returns its name.

    The head is an `nn.Linear` (same input features and bias) or a 1 x 1 `nn.Conv2d` (SqueezeNet's).
    """
    name = find_head(model, head)
    old = model.get_submodule(name)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    elif isinstance(old, nn.Conv2d) and old.kernel_size == (1, 1):
        new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
    else:
        raise ValueError(
            f"model.head={name!r} is a {type(old).__name__}; expected an nn.Linear or a 1x1 nn.Conv2d"
        )
    model.set_submodule(name, new)
    return name


def hint(name: str, names: Sequence[str] | dict, what: str = "module names") -> str:
    """'; closest module names: ...' for a misspelt `name` (difflib), or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.5)
    return f"; closest {what}: {', '.join(close)}" if close else ""


def _outputs(model: nn.Module, size: int) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Every named module's output shape (its last call) and the order of its first call, from one dummy forward."""
    shapes: dict[str, tuple[int, ...]] = {}
    order: dict[str, int] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            order.setdefault(name, len(order))
            shapes[name] = tuple(output.shape) if isinstance(output, Tensor) else ()

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.train(mode)
    return shapes, order


def find_stages(model: nn.Module, size: int = PROBE_SIZE) -> tuple[str, ...]:
    """The last module of each resolution stage (see the module docstring), in execution order."""
    shapes, order = _outputs(model, size)

    def grid(name: str) -> tuple[int, ...] | None:
        shape = shapes.get(name, ())
        return shape[-2:] if len(shape) == 4 and shape[-1] * shape[-2] > 1 else None

    def children(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
        named = [(f"{prefix}.{n}" if prefix else n, m) for n, m in module.named_children()]
        return sorted(((n, m) for n, m in named if grid(n) is not None), key=lambda item: order[item[0]])

    def spans(module: nn.Module, prefix: str) -> bool:
        return len({grid(n) for n, _ in children(module, prefix)}) > 1

    def walk(module: nn.Module, prefix: str) -> list[str]:
        kids = children(module, prefix)
        if len({grid(n) for n, _ in kids}) == 1:
            changing = [(n, m) for n, m in kids if spans(m, n)]
            return walk(changing[0][1], changing[0][0]) if len(changing) == 1 else [kids[-1][0]]
        stages: list[str] = []
        for i, (name, child) in enumerate(kids):
            if i + 1 < len(kids) and grid(kids[i + 1][0]) == grid(name):
                continue  # not the last of its resolution
            stages.extend(walk(child, name) if spans(child, name) else [name])
        return stages

    stages = walk(model, "")
    if not stages:
        raise ValueError(
            f"no convolutional stage found in {type(model).__name__} (no module outputs a (B, C, H, W) map): "
            "name its CAM layers with model.cam_layers=[<module name>, ...]"
        )
    return tuple(stages)


def check_cam_layers(model: nn.Module, layers: Sequence[str], stages: Sequence[str]) -> tuple[str, ...]:
    """`model.cam_layers` checked against the model's module names; the error names the stages found."""
    if isinstance(layers, str) or not layers:
        raise ValueError(f"model.cam_layers must be a non-empty list of module names, got {layers!r}")
    modules = dict(model.named_modules())
    for layer in layers:
        if layer not in modules or not layer:
            raise ValueError(
                f"model.cam_layers: {layer!r} is not a module of {type(model).__name__}; its stages are "
                f"{list(stages)}{hint(layer, modules)} (any name in model.named_modules() works)"
            )
    return tuple(layers)
