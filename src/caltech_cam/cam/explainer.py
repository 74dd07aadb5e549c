"""Explain a batch, the one way `explain`, the `GradCAMLogger` callback and the notebook all do it.

`Explainer.explain` makes one engine pass (one forward, one `autograd.grad`) and returns an `Explanation`: the
logits (hence probabilities and top-k), the explained classes, every layer's map, the overlays and the captions.
`Explanation.grid` draws it with `render.make_grid`, the one renderer. `Explainer.of(module)` takes what it needs
from a module that satisfies `Explainable` (`ClassifierModule` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from caltech_cam.cam.engine import cams_from_capture, capture, check_layers
from caltech_cam.cam.methods import get_method
from caltech_cam.cam.metrics.faithfulness import confidence_change
from caltech_cam.cam.render import check_style, make_grid, overlay
from caltech_cam.data.decode import load_rgb

if TYPE_CHECKING:
    from caltech_cam.data.presets import Preset


@runtime_checkable
class Explainable(Protocol):
    """What explaining a LightningModule needs from it: the backbone, its CAM layers, class names and preset."""

    model: nn.Module  # the unwrapped backbone: the engine hooks its named modules
    cam_layers: Sequence[str]  # default layers, names in model.named_modules()
    class_names: Sequence[str]  # one per logit, for captions
    preset: Preset  # .denormalize(x) draws the input; .transform / .eval_view prepare image files


def require_explainable(module: object, who: str) -> Explainable:
    """`module` itself if it has every attribute of `Explainable`, else a TypeError naming the missing ones."""
    missing = [name for name in Explainable.__annotations__ if not hasattr(module, name)]
    if missing:
        raise TypeError(
            f"{who} needs a LightningModule with {', '.join(f'.{n}' for n in Explainable.__annotations__)} "
            f"(see caltech_cam.cam.Explainable); {type(module).__name__} has no "
            f"{', '.join(f'.{n}' for n in missing)}"
        )
    return module  # type: ignore[return-value]


@dataclass(frozen=True)
class Explanation:
    """One explained batch. Tensors stay on the model's device; maps are float32 (B, H, W) in [0, 1].

    `images` the model's input; `backdrops` uint8 RGB (B, 3, H, W) under the overlays; `logits` (B, N) float32;
    `targets` (B,) the class each map explains; `maps` / `overlays` layer -> per-image maps / uint8 overlays;
    `captions` one per image (file name, true and predicted class with its probability).
    """

    method: str
    images: Tensor
    backdrops: Tensor
    logits: Tensor
    targets: Tensor
    maps: dict[str, Tensor]
    overlays: dict[str, Tensor]
    captions: list[str]

    @property
    def layers(self) -> list[str]:
        return list(self.maps)

    def probabilities(self) -> Tensor:
        """softmax(logits), (B, N)."""
        return self.logits.softmax(dim=1)

    def top(self, k: int = 5) -> tuple[Tensor, Tensor]:
        """The k most probable classes per image, (probabilities, classes), each (B, min(k, N)), descending."""
        values, indices = self.probabilities().topk(min(k, self.logits.shape[1]), dim=1)
        return values, indices

    def grid(
        self, layers: Sequence[str] | None = None, rows: Sequence[int] | None = None, *, pad: int = 2
    ) -> Tensor:
        """`make_grid` of these images (or `rows` of them) and layers (default all): uint8 (3, H', W') on the CPU."""
        names = self.layers if layers is None else list(layers)
        index = slice(None) if rows is None else torch.tensor(list(rows), device=self.backdrops.device)
        captions = self.captions if rows is None else [self.captions[r] for r in rows]
        overlaid = {name: self.overlays[name][index] for name in names if name in self.overlays}
        maps = {name: self.maps[name][index] for name in names if name in self.maps}
        return make_grid(self.backdrops[index], maps, captions, names, pad=pad, overlaid=overlaid)


class Explainer:
    """CAMs of `layers` of `model` by `method`, with overlays and captions, from one engine pass per batch.

    Layer names, the method (any alias, see `methods.get_method`), colormap and alpha are checked here, when it
    is built, so a wrong one fails before any work; whether a layer yields a 4-D map shows in the first pass.
    `preset` (a `Preset`) draws backdrops from the normalized input and prepares image files; without it,
    `explain` needs `backdrops`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        method: str = "gradcam",
        class_names: Sequence[str] | None = None,
        preset: Preset | None = None,
        colormap: str = "jet",
        alpha: float = 0.5,
        cam_layers: Sequence[str] | None = None,
    ) -> None:
        self.method = get_method(method)
        self.layers, _ = check_layers(model, layers, cam_layers)
        check_style(colormap, alpha)
        self.model = model
        self.class_names = list(class_names) if class_names is not None else None
        self.preset = preset
        self.colormap, self.alpha = colormap, alpha

    @classmethod
    def of(
        cls,
        module: Explainable,
        layers: Sequence[str] | None = None,
        *,
        method: str = "gradcam",
        colormap: str = "jet",
        alpha: float = 0.5,
    ) -> Explainer:
        """An explainer of `module.model` with its class names and preset; `layers` default: `module.cam_layers`."""
        module = require_explainable(module, "Explainer.of")
        return cls(
            module.model,
            list(layers) if layers else list(module.cam_layers),
            method=method,
            class_names=module.class_names,
            preset=module.preset,
            colormap=colormap,
            alpha=alpha,
            cam_layers=module.cam_layers,
        )

    def explain(
        self,
        images: Tensor,
        *,
        targets: Tensor | Sequence[int] | None = None,
        labels: Tensor | Sequence[int] | None = None,
        backdrops: Tensor | None = None,
        titles: Sequence[str] | None = None,
    ) -> Explanation:
        """Explain normalized `images` (B, C, H, W) on the model's device.

        `targets`: the class each map explains (default: the predicted one). `labels`: true classes, shown in
        the captions. `backdrops`: uint8 RGB (B, 3, H, W) to draw on (default: `preset.denormalize(images)`).
        `titles`: a first caption line per image (e.g. its file name).
        """
        batch = images.shape[0]
        for name, values in (("labels", labels), ("titles", titles)):
            if values is not None and len(values) != batch:
                raise ValueError(f"{len(values)} {name} for {batch} images")
        if backdrops is None:
            if self.preset is None:
                raise ValueError(
                    "pass backdrops= (uint8 RGB images to draw on) or build the Explainer with a preset"
                )
            backdrops = self.preset.denormalize(images.detach())
        if backdrops.dtype != torch.uint8 or backdrops.shape != (batch, 3, *images.shape[-2:]):
            raise ValueError(
                f"backdrops must be uint8 {(batch, 3, *images.shape[-2:])}, got {backdrops.dtype} "
                f"{tuple(backdrops.shape)}"
            )
        backdrops = backdrops.to(images.device)
        seen = capture(self.model, images, self.layers, targets=targets, gradients=self.method.uses_gradients)
        maps = cams_from_capture(seen, self.method, (images.shape[-2], images.shape[-1]))
        return Explanation(
            method=self.method.name,
            images=images,
            backdrops=backdrops,
            logits=seen.logits,
            targets=seen.targets,
            maps=maps,
            overlays={
                name: overlay(backdrops, m, cmap=self.colormap, alpha=self.alpha) for name, m in maps.items()
            },
            captions=self._captions(
                seen.logits, seen.targets if targets is not None else None, labels, titles
            ),
        )

    def explain_files(
        self,
        paths: Sequence[str | Path],
        *,
        targets: Tensor | Sequence[int] | None = None,
        labels: Sequence[int] | None = None,
    ) -> Explanation:
        """Decode image files, prepare them with the preset's evaluation transform, and explain them.

        The backdrop is the same crop in colour (`preset.eval_view`: a model may see gray); titled by file name.
        """
        if self.preset is None:
            raise ValueError("explain_files needs an Explainer with a preset (e.g. Explainer.of(module))")
        device = next(iter(self.model.parameters()), torch.empty(0)).device
        raw = [load_rgb(p) for p in paths]
        transform = self.preset.transform(train=False)
        images = torch.stack([transform(image) for image in raw]).to(device)
        backdrops = torch.stack([self.preset.eval_view(image) for image in raw]).to(device)
        return self.explain(
            images, targets=targets, labels=labels, backdrops=backdrops, titles=[Path(p).name for p in paths]
        )

    def faithfulness(self, explanation: Explanation, *, chunk_size: int = 64) -> dict[str, dict[str, Tensor]]:
        """Average Drop % and Increase in Confidence % of each layer's maps (see `metrics.confidence_change`);
        the unmasked scores come from the explanation's logits, so this costs only the masked forwards."""
        return confidence_change(
            self.model,
            explanation.images,
            explanation.maps,
            explanation.targets,
            logits=explanation.logits,
            chunk_size=chunk_size,
        )

    def _name(self, index: int) -> str:
        return self.class_names[index] if self.class_names is not None else str(index)

    def _captions(
        self,
        logits: Tensor,
        targets: Tensor | None,
        labels: Tensor | Sequence[int] | None,
        titles: Sequence[str] | None,
    ) -> list[str]:
        """`[title\\n]true: A / pred: B (p%)[ / map: C]`: the map's class is said only when it was asked for."""
        # The one host read of a pass: captions are text, drawn on the host anyway.
        probabilities, predicted = logits.softmax(dim=1).max(dim=1)
        truth = labels.tolist() if isinstance(labels, Tensor) else labels
        asked = targets.tolist() if targets is not None else None
        captions = []
        for i, (p, c) in enumerate(zip(probabilities.tolist(), predicted.tolist(), strict=True)):
            parts = [f"pred: {self._name(c)} ({p:.1%})"]
            if truth is not None:
                parts.insert(0, f"true: {self._name(int(truth[i]))}")
            if asked is not None:
                parts.append(f"map: {self._name(asked[i])}")
            text = " / ".join(parts)
            captions.append(text if titles is None else f"{titles[i]}\n{text}")
        return captions
