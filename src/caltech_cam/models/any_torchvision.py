"""`torchvision`: any torchvision classification model by name (`model=torchvision model.arch=convnext_tiny`).

Built by `torchvision.models.get_model(arch, **kwargs)`, its head (the last `nn.Linear`, or `model.head`) replaced
for the data's classes; its CAM stages found from the downsampling structure (`models.discovery`). Pretrained
weights come through torchvision's weights API (the arch's DEFAULT weights, torch hub cache first), or from
`model.weights_path`; the preset from those weights' transforms.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import torchvision.models as tvm
from torch import nn
from torchvision.models._api import WeightsEnum

from caltech_cam.data.presets import IMAGENET_MEAN, IMAGENET_STD, STUDY_CROP, STUDY_RESIZE, Preset

from .discovery import check_cam_layers, find_head, find_stages, replace_head
from .registry import Library, register_library
from .weights import fetch_state_dict, load_matching

log = logging.getLogger(__name__)

NAME = "torchvision"


@cache
def names() -> tuple[str, ...]:
    """torchvision's classification models (not its detection, segmentation, video or optical-flow ones)."""
    return tuple(tvm.list_models(module=tvm))


def default_weights(arch: str) -> WeightsEnum | None:
    """The arch's DEFAULT ImageNet weights, or None where torchvision has none."""
    try:
        return tvm.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def preset(arch: str, pretrained: bool, kwargs: Mapping[str, Any]) -> Preset:
    """The weights' evaluation transforms when pretrained (mean, std, resize, crop), else ImageNet's mean and std,
    resize 256, crop 224. The resize is square, as in the study's presets."""
    weights = default_weights(arch) if pretrained else None
    if weights is None:
        return Preset(NAME, 3, IMAGENET_MEAN, IMAGENET_STD, STUDY_RESIZE, STUDY_CROP)
    t = weights.transforms()
    return Preset(NAME, 3, tuple(t.mean), tuple(t.std), int(t.resize_size[0]), int(t.crop_size[0]))


def layout(
    model: nn.Module, head: str | None, cam_layers: Sequence[str] | None
) -> tuple[str, tuple[str, ...]]:
    """(head, CAM layers): the given names checked, or found (`models.discovery`)."""
    stages = find_stages(model)
    return find_head(model, head), stages if cam_layers is None else check_cam_layers(
        model, cam_layers, stages
    )


@register_library(NAME, Library(names=names, preset=preset, layout=layout))
def build_torchvision(
    num_classes: int,
    *,
    arch: str,
    kwargs: Mapping[str, Any],
    head: str | None = None,
    pretrained: bool = False,
    weights_path: str | None = None,
    **_: object,
) -> nn.Module:
    """`torchvision.models.get_model(arch, **kwargs)` with its head replaced for `num_classes`; pretrained: the
    arch's DEFAULT weights (or the state dict in `weights_path`), a head of another class count left fresh."""
    model = tvm.get_model(arch, weights=None, **kwargs)
    name = replace_head(model, num_classes, head)
    if pretrained:
        weights = default_weights(arch)
        if weights is None and weights_path is None:
            raise ValueError(
                f"torchvision has no pretrained weights for {arch}: pass a state dict with model.weights_path "
                "or train from scratch with model.pretrained=false"
            )
        load_matching(model, fetch_state_dict(weights, weights_path), head=name)
    return model
