"""The model registry: each backbone describes itself once, beside its builder (timm's `@register_model`).

A registration carries everything the rest of the project asks about a backbone: its builder, the input channels
it takes (which fix the presets it can be fed), its default preset, its Grad-CAM layers, its new head, and the
architecture options its builder takes (`model.options`, each with its allowed values, the first the default).
Adding a backbone is one `@register_model(...)` on its builder, its module imported in `models/__init__.py`, and a
short `conf/model/<name>.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn
from torchvision.models._api import WeightsEnum

from caltech_cam.data.presets import PRESET_NAMES, Preset, make_preset

from .discovery import hint
from .weights import under

# A builder is called as build(num_classes, *, in_channels, pretrained, weights_path, image_size, input_mean,
# input_std, **options) after `build_model` has checked those values; it may ignore the ones it has no use for
# (`**_`). `options` are the model's declared architecture options, complete (defaults filled in).
Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)


class UnknownModelError(ValueError):
    """A model name that is not in `MODEL_SPECS` (or an architecture its library does not have)."""


@dataclass(frozen=True)
class Library:
    """A spec that builds any architecture of a library (`model=torchvision model.arch=<name>`) also says:

    names(): every architecture it can build (an unknown one is refused with the closest names);
    preset(arch, pretrained, kwargs): the architecture's own preset (mean, std, resize, crop), named after the spec;
    layout(model, head, cam_layers): (head, CAM layers) of the built model: found, or the given names checked.
    Its builder takes `arch`, `kwargs` (the library constructor's arguments) and `head` besides the usual inputs.
    """

    names: Callable[[], Sequence[str]]
    preset: Callable[[str, bool, Mapping[str, Any]], Preset]
    layout: Callable[[nn.Module, str | None, Sequence[str] | None], tuple[str, tuple[str, ...]]]


def preset_channels(preset: str) -> int:
    """The number of channels preset `preset` feeds a model (resnet: 3 RGB, inception: 1 gray)."""
    return make_preset(preset).in_channels


@dataclass(frozen=True)
class ModelSpec:
    """What a backbone declares to the rest of the project (one registration, see `register_model`)."""

    name: str  # "resnet50" | "inception_v3" | "my_resnet50" | "my_inception_v3"
    build: Builder
    in_channels: tuple[int, ...]  # input channels its stem takes
    preset: str  # default augmentation preset
    cam_layers: tuple[str, ...]  # module names in named_modules() of the built model (Grad-CAM targets)
    head_prefixes: tuple[str, ...]  # module names of the new head (separate learning rate, freezing)
    weights: WeightsEnum | None = (
        None  # the ImageNet checkpoint `pretrained=True` starts from (None: none exists)
    )
    # Architecture options (`model.options`): name -> allowed values, the first being the default.
    options: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    # Set for a spec that builds any architecture of a library (model.arch): see `Library`.
    library: Library | None = None

    @property
    def allowed_presets(self) -> tuple[str, ...]:
        """The presets whose channel count the stem takes: a preset fixes the channels, the model takes some.
        A library spec also takes its architectures' own presets, which carry the spec's name."""
        study = tuple(p for p in PRESET_NAMES if preset_channels(p) in self.in_channels)
        return study if self.library is None else (*study, self.name)

    def check_arch(self, arch: str | None) -> str:
        """The one check of `model.arch`: required by a library spec (an unknown name gets the closest ones),
        refused by the others."""
        if self.library is None:
            if arch is not None:
                raise ValueError(f"model.arch={arch!r} is only read by model=torchvision or model=timm")
            return ""
        names = self.library.names()
        if not isinstance(arch, str) or arch not in names:
            raise UnknownModelError(
                f"model.arch={arch!r} is not a {self.name} classification model"
                f"{hint(str(arch), names, 'names') or f' ({len(names)} names, e.g. {list(names)[:5]})'}"
            )
        return arch

    def check_preset(self, preset: str, key: str = "preset") -> None:
        """The one check that this model can be fed preset `preset` (`key` names the setting in the error)."""
        if preset not in self.allowed_presets:
            raise ValueError(
                f"Model {self.name!r} cannot take preset {preset!r} ({key}); "
                f"expected one of {list(self.allowed_presets)}."
            )

    def resolve_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """`options` checked against the declared ones and completed with their defaults (the first allowed value).

        An option the model does not declare, or a value outside the allowed ones, is a ValueError naming both.
        """
        given = dict(options or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            declared = ", ".join(sorted(self.options)) or "none"
            raise ValueError(
                f"model {self.name!r} has no option {unknown[0]!r} (model.options.{unknown[0]}); "
                f"its options: {declared}"
            )
        resolved = {}
        for key, allowed in self.options.items():
            value = given.get(key, allowed[0])
            # bool is an int and 1 == True: compare types too, so batch_norm=1 or block=0 are refused.
            if not any(type(value) is type(a) and value == a for a in allowed):
                raise ValueError(
                    f"model.options.{key}={value!r} is not an option of {self.name}; "
                    f"expected one of {list(allowed)}"
                )
            resolved[key] = value
        return resolved

    def is_head(self, param_name: str) -> bool:
        """Whether a parameter/module/state-dict name of the built model belongs to the new head."""
        return under(param_name, self.head_prefixes)


MODEL_SPECS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    preset: str,
    in_channels: tuple[int, ...],
    cam_layers: tuple[str, ...],
    head: tuple[str, ...],
    weights: WeightsEnum | None = None,
    options: Mapping[str, Sequence[Any]] | None = None,
    library: Library | None = None,
) -> Callable[[B], B]:
    """Decorator: register the decorated builder as backbone `name` with what it declares (see `ModelSpec`)."""

    def register(build: B) -> B:
        if name in MODEL_SPECS:
            raise ValueError(f"model {name!r} is registered twice ({MODEL_SPECS[name].build} and {build})")
        declared = {key: tuple(allowed) for key, allowed in (options or {}).items()}
        if any(not allowed for allowed in declared.values()):
            raise ValueError(f"model {name!r}: every option needs at least one allowed value, got {declared}")
        spec = ModelSpec(
            name,
            build,
            tuple(in_channels),
            preset,
            tuple(cam_layers),
            tuple(head),
            weights,
            declared,
            library,
        )
        # A default preset the model cannot take would fail every run: refuse it at import.
        spec.check_preset(preset, key=f"the default preset of {name}")
        MODEL_SPECS[name] = spec
        return build

    return register


def register_library(name: str, library: Library) -> Callable[[B], B]:
    """Decorator: register a builder of any model of a library (`model=<name> model.arch=...`): its preset, CAM
    layers and head come from the library and the chosen arch (`library`), not from the registration."""
    return register_model(name, preset="resnet", in_channels=(3,), cam_layers=(), head=(), library=library)


def get_spec(name: str) -> ModelSpec:
    """The spec of model `name`; `UnknownModelError` naming the allowed names otherwise."""
    if name not in MODEL_SPECS:
        raise UnknownModelError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODEL_SPECS))}")
    return MODEL_SPECS[name]


def build_model(
    name: str,
    num_classes: int,
    *,
    options: Mapping[str, Any] | None = None,
    arch: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    head: str | None = None,
    **inputs: Any,
) -> nn.Module:
    """Build backbone `name` for `num_classes`, taking the preset's normalized (B, in_channels, S, S) batch.

    `inputs` are the builders' keywords, checked here for every backbone:
    in_channels (default 3): the preset's channels, one of the spec's `in_channels`;
    pretrained: start from ImageNet weights (torch hub cache or download; or `weights_path`, a state dict file);
    image_size: the training crop; decides InceptionV3's aux head (kept only at >= 299 px, or when None);
    input_mean/input_std: the preset's normalization, needed to feed pretrained InceptionV3 what it expects.
    options: the model's architecture options (`ModelSpec.options`); missing ones take their defaults.
    arch, kwargs, head (library specs only): the architecture, its constructor's arguments, the head's name (None:
    the last nn.Linear), which is replaced for `num_classes`.
    Returns logits, or in training mode `(logits, aux_logits)` for InceptionV3 with its aux head.
    """
    spec = get_spec(name)
    unknown = sorted(set(inputs) - BUILDER_INPUTS)
    if unknown:
        raise TypeError(f"build_model got unknown keyword(s) {unknown}; expected {sorted(BUILDER_INPUTS)}")
    inputs = {"in_channels": 3, "pretrained": False, "weights_path": None, "image_size": None, **inputs}
    inputs.setdefault("input_mean", None)
    inputs.setdefault("input_std", None)
    in_channels, image_size = inputs["in_channels"], inputs["image_size"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if in_channels not in spec.in_channels:
        raise ValueError(
            f"{name} takes in_channels in {spec.in_channels} (presets {spec.allowed_presets}), got {in_channels}"
        )
    for label in ("input_mean", "input_std"):
        stats = inputs[label]
        if stats is not None and len(stats) != in_channels:
            raise ValueError(
                f"{label} has {len(stats)} values for {in_channels} input channels: {tuple(stats)}"
            )
    if inputs["input_std"] is not None and any(s <= 0 for s in inputs["input_std"]):
        raise ValueError(f"input_std must be positive, got {tuple(inputs['input_std'])}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if inputs["weights_path"] is not None and not inputs["pretrained"]:
        raise ValueError(f"weights_path={inputs['weights_path']!r} is only read with pretrained=True")
    arch = spec.check_arch(arch)
    if spec.library is None:
        if kwargs or head is not None:
            raise ValueError("model.kwargs and model.head are only read by model=torchvision or model=timm")
        return spec.build(num_classes, **inputs, **spec.resolve_options(options))
    if "num_classes" in (kwargs or {}):
        raise ValueError("model.kwargs.num_classes: the class count comes from the data (model.num_classes)")
    return spec.build(num_classes, arch=arch, kwargs=dict(kwargs or {}), head=head, **inputs)


# The keywords every builder takes besides num_classes (and its architecture options).
BUILDER_INPUTS = {"in_channels", "pretrained", "weights_path", "image_size", "input_mean", "input_std"}
