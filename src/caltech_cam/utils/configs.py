"""Config nodes as plain Python values, where the YAML configs live, and building an object from a `_target_`
node without Hydra (the layers below the apps do not import it)."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def plain(node: Any) -> Any:
    """A resolved, plain-Python copy of a config node (dict/list); anything else is returned as it is.

    Checkpoints must hold plain values only, and Hydra hands nested nodes to constructors as DictConfigs.
    """
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


def config_dir() -> Path:
    """The `conf/` tree: shipped inside the wheel, or the repository's top-level folder in an editable install."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"caltech_cam's Hydra configs were not found next to the package ({_PACKAGE_DIR / 'conf'}) "
        f"nor in the source tree ({_PACKAGE_DIR.parents[1] / 'conf'}); reinstall the package."
    )


@functools.cache
def _default_option(config: str, key: str) -> dict[str, Any]:
    defaults = OmegaConf.load(config_dir() / f"{config}.yaml").get("defaults") or []
    for entry in defaults:
        if isinstance(entry, DictConfig):
            for group, option in entry.items():
                # "/model/optimizer@optimizer: sgd" -> conf/model/optimizer/sgd.yaml placed at `optimizer`
                path, _, package = str(group).lstrip("/").partition("@")
                if package == key:
                    return OmegaConf.to_container(OmegaConf.load(config_dir() / path / f"{option}.yaml"))
    raise KeyError(f"conf/{config}.yaml's defaults list selects no option for {key!r}")


def config_default(config: str, key: str) -> dict[str, Any]:
    """The node that `conf/<config>.yaml`'s defaults list places at `key` (e.g. `("classifier", "optimizer")` is
    conf/model/optimizer/sgd.yaml): Python's "default" is then the YAML's, written once."""
    return dict(_default_option(config, key))


def locate(path: str, key: str = "_target_") -> Any:
    """The object a dotted path names (`torch.optim.SGD`); ValueError naming `key` and the path otherwise."""
    module_name, _, attribute = path.rpartition(".")
    while module_name:
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError:
            module_name, _, parent = module_name.rpartition(".")
            attribute = f"{parent}.{attribute}"
            continue
        try:
            for part in attribute.split("."):
                target = getattr(target, part)
        except AttributeError:
            break
        return target
    raise ValueError(f"{key}={path!r} does not name an importable class or function")


def partial_of(settings: dict[str, Any], key: str) -> functools.partial:
    """`functools.partial(<_target_>, **rest)` of a `_partial_` config node (Hydra's `_partial_: true` meaning),
    with a `_target_` that must name a callable; `key` names the node in errors (e.g. `model.optimizer`)."""
    rest = {k: v for k, v in settings.items() if not k.startswith("_")}
    if "_target_" not in settings:
        raise ValueError(f"{key} has no _target_; expected e.g. {key}._target_=torch.optim.SGD")
    target = locate(str(settings["_target_"]), f"{key}._target_")
    if not callable(target):
        raise ValueError(f"{key}._target_={settings['_target_']!r} is not callable")
    return functools.partial(target, **plain(rest))
