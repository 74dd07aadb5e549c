"""`timm`: any timm model by name (`model=timm model.arch=resnet18`), timm being an optional extra.

Built by `timm.create_model(arch, num_classes=, pretrained=, **kwargs)`, which sizes the head itself (or the module
`model.head` names is replaced); the CAM stages are its `feature_info` modules; the preset is its
`pretrained_cfg` (mean, std, input size, crop fraction). Pretrained weights come through timm's own mechanism (the
Hugging Face hub cache, `HF_HUB_OFFLINE=1` with a prefilled cache on offline nodes), or from `model.weights_path`
(timm's `pretrained_cfg_overlay=dict(file=...)`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from caltech_cam.data.presets import Preset

from .discovery import check_cam_layers, find_head, find_stages, replace_head
from .registry import Library, register_library

log = logging.getLogger(__name__)

NAME = "timm"
INSTALL_HINT = "model=timm needs timm: pip install 'caltech_cam[timm]' (or pip install 'timm>=1.0')"


def timm_module() -> ModuleType:
    """timm, or an ImportError with the pip command that installs it."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return timm


@cache
def names() -> tuple[str, ...]:
    """Every architecture timm can build (`timm.list_models()`)."""
    return tuple(timm_module().list_models())


def preset(arch: str, pretrained: bool, kwargs: Mapping[str, Any]) -> Preset:
    """The architecture's `pretrained_cfg`: its mean and std, crop = the input size, resize = floor(crop /
    crop_pct) (timm's evaluation resize), square as in the study's presets."""
    cfg = timm_module().models.get_pretrained_cfg(arch)
    channels, side = cfg.input_size[0], cfg.input_size[-1]
    if channels != 3:
        raise ValueError(f"timm's {arch} takes {channels}-channel input; the data feeds RGB")
    resize = math.floor(side / (cfg.crop_pct or 1.0))
    return Preset(NAME, 3, tuple(cfg.mean), tuple(cfg.std), resize, side)


def layout(
    model: nn.Module, head: str | None, cam_layers: Sequence[str] | None
) -> tuple[str, tuple[str, ...]]:
    """(head, CAM layers): `model.head`, else `pretrained_cfg["classifier"]`, else the last nn.Linear; the
    `feature_info` modules (the downsampling structure where timm lists none), or `model.cam_layers` checked."""
    modules = dict(model.named_modules())
    listed = tuple(info["module"] for info in getattr(model, "feature_info", None) or [] if "module" in info)
    stages = listed if listed and all(name in modules for name in listed) else find_stages(model)
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if head is None and isinstance(classifier, str) and isinstance(modules.get(classifier), nn.Linear):
        head = classifier
    return find_head(model, head), stages if cam_layers is None else check_cam_layers(
        model, cam_layers, stages
    )


@register_library(NAME, Library(names=names, preset=preset, layout=layout))
def build_timm(
    num_classes: int, *, arch: str, kwargs: Mapping[str, Any], head: str | None = None, **load: Any
) -> nn.Module:
    """`timm.create_model(arch, num_classes=num_classes, pretrained=pretrained, **kwargs)`; `weights_path`: that
    state dict instead of the hub's (timm's `pretrained_cfg_overlay`). timm leaves a head of another class count
    fresh; the log says so. `load`: pretrained, weights_path (and the builders' other keywords, unused here)."""
    pretrained, weights_path = bool(load.get("pretrained")), load.get("weights_path")
    extra: dict[str, Any] = {}
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.weights_path={weights_path!r}: no such file")
        extra["pretrained_cfg_overlay"] = {"file": str(path)}
    model = timm_module().create_model(
        arch, pretrained=pretrained, num_classes=num_classes, **kwargs, **extra
    )
    if head is not None:
        replace_head(model, num_classes, head)
    weights_classes = model.pretrained_cfg.get("num_classes")
    if pretrained and weights_classes not in (None, num_classes):
        log.info(
            "%s: the weights' head has %d outputs, this one %d: its tensors are skipped, the head starts fresh",
            arch,
            weights_classes,
            num_classes,
        )
    return model
