"""Config nodes built from Python signatures, so that a default lives in one place: the constructor.

`conf/classifier.yaml` and `conf/callbacks/default.yaml` take these nodes in their defaults lists
(`/caltech_cam/classifier@_here_`, `/caltech_cam/grad_cam@grad_cam`, ...) and write down only what differs from the
Python default or has no Python default (the class path, `???` keys, interpolations). The composed config still
holds every argument, so `model.backbone_lr_mult=0.2` works as any key, and `--cfg job` shows every value.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from hydra.core.config_store import ConfigStore

from caltech_cam.callbacks import GradCAMLogger, StepTimer
from caltech_cam.models.classifier import ClassifierModule

GROUP = "caltech_cam"


def signature_defaults(target: Callable[..., Any], leave_out: Iterable[str] = ()) -> dict[str, Any]:
    """Every keyword argument of `target` that has a default, with it (plain values only: a config holds them)."""
    out: dict[str, Any] = {}
    for name, parameter in inspect.signature(target).parameters.items():
        if name in leave_out or name == "self" or parameter.default is inspect.Parameter.empty:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        out[name] = parameter.default
    return out


# name in the config store -> (the class, the arguments its YAML decides itself)
SCHEMAS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    # class_names and preset come from the data; optimizer/scheduler are config groups; monitor interpolates
    # optimized_metric.
    "classifier": (ClassifierModule, ("class_names", "preset", "optimizer", "scheduler", "monitor")),
    "grad_cam": (GradCAMLogger, ()),
    "step_timing": (StepTimer, ()),
}


def register_schemas() -> None:
    """Store every `SCHEMAS` node as `/caltech_cam/<name>` in Hydra's config store (idempotent)."""
    store = ConfigStore.instance()
    for name, (target, leave_out) in SCHEMAS.items():
        store.store(group=GROUP, name=name, node=signature_defaults(target, leave_out))
