"""The four backbones by name: what each declares (`ModelSpec`) and `build_model`, the one place inputs are checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from . import inception, my_inception, my_resnet, resnet


class UnknownModelError(ValueError):
    """A model name that is not in `MODEL_SPECS`."""


@dataclass(frozen=True)
class ModelSpec:
    """What a backbone declares to the rest of the project."""

    name: str  # "resnet50" | "inception_v3" | "my_resnet50" | "my_inception_v3"
    preset: str  # default augmentation preset
    allowed_presets: tuple[str, ...]
    cam_layers: tuple[str, ...]  # module names in named_modules() of the built model (Grad-CAM targets)
    head_prefixes: tuple[str, ...]  # module names of the new head (separate learning rate, freezing)

    def is_head(self, param_name: str) -> bool:
        """Whether a parameter/state-dict name of the built model belongs to the new head."""
        return any(param_name == p or param_name.startswith(p + ".") for p in self.head_prefixes)


# "inception" feeds one gray channel, "resnet" RGB: only the Inception backbones take both.
MODEL_SPECS: dict[str, ModelSpec] = {
    "resnet50": ModelSpec(
        name="resnet50",
        preset="resnet",
        allowed_presets=("resnet",),
        cam_layers=("layer1", "layer2", "layer3", "layer4"),
        head_prefixes=resnet.HEAD,
    ),
    "inception_v3": ModelSpec(
        name="inception_v3",
        preset="inception",
        allowed_presets=("inception", "resnet"),
        cam_layers=("Mixed_5d", "Mixed_6e", "Mixed_7c"),
        head_prefixes=inception.HEAD,
    ),
    "my_resnet50": ModelSpec(
        name="my_resnet50",
        preset="resnet",
        allowed_presets=("resnet",),
        cam_layers=("layer1", "layer2", "layer3", "layer4"),
        head_prefixes=my_resnet.HEAD,
    ),
    "my_inception_v3": ModelSpec(
        name="my_inception_v3",
        preset="inception",
        allowed_presets=("inception", "resnet"),
        cam_layers=("inception3a", "inception3b", "inception4a", "inception4b"),
        head_prefixes=my_inception.HEAD,
    ),
}

# Input channels each backbone takes: the ResNets' pretrained stems assume ImageNet-normalized RGB.
_IN_CHANNELS: dict[str, tuple[int, ...]] = {
    "resnet50": (3,),
    "inception_v3": (1, 3),
    "my_resnet50": (3,),
    "my_inception_v3": (1, 3),
}


def get_spec(name: str) -> ModelSpec:
    """The spec of model `name`; `UnknownModelError` naming the allowed names otherwise."""
    if name not in MODEL_SPECS:
        raise UnknownModelError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODEL_SPECS))}")
    return MODEL_SPECS[name]


def build_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    pretrained: bool = False,
    weights_path: str | None = None,
    image_size: int | None = None,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
) -> nn.Module:
    """Build backbone `name` for `num_classes`, taking the preset's normalized (B, in_channels, S, S) batch.

    pretrained: start from ImageNet weights (torch hub cache or download; or `weights_path`, a state dict file).
    image_size: the training crop; decides InceptionV3's aux head (kept only at >= 299 px, or when None).
    input_mean/input_std: the preset's normalization, needed to feed pretrained InceptionV3 what it expects.
    Returns logits, or in training mode `(logits, aux_logits)` for InceptionV3 with its aux head.
    """
    get_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if in_channels not in _IN_CHANNELS[name]:
        raise ValueError(
            f"{name} takes in_channels in {_IN_CHANNELS[name]} (presets {MODEL_SPECS[name].allowed_presets}), "
            f"got {in_channels}"
        )
    for label, stats in (("input_mean", input_mean), ("input_std", input_std)):
        if stats is not None and len(stats) != in_channels:
            raise ValueError(
                f"{label} has {len(stats)} values for {in_channels} input channels: {tuple(stats)}"
            )
    if input_std is not None and any(s <= 0 for s in input_std):
        raise ValueError(f"input_std must be positive, got {tuple(input_std)}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if weights_path is not None and not pretrained:
        raise ValueError(f"weights_path={weights_path!r} is only read with pretrained=True")

    if name == "resnet50":
        return resnet.build_resnet50(num_classes, pretrained=pretrained, weights_path=weights_path)
    if name == "my_resnet50":
        return my_resnet.build_my_resnet50(num_classes, pretrained=pretrained, weights_path=weights_path)
    if name == "inception_v3":
        return inception.build_inception_v3(
            num_classes,
            in_channels=in_channels,
            pretrained=pretrained,
            weights_path=weights_path,
            image_size=image_size,
            input_mean=input_mean,
            input_std=input_std,
        )
    if pretrained:
        raise ValueError(
            "my_inception_v3 has no pretrained weights (Table 2's layout was never trained on ImageNet); "
            "use model.pretrained=false, or model=inception_v3 for ImageNet weights"
        )
    return my_inception.build_my_inception_v3(num_classes, in_channels=in_channels)
