"""Where the Hydra configs live, for editable and for plain installs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The `conf/` tree: shipped inside the wheel, or the repository's top-level folder in an editable install."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"caltech_cam's Hydra configs were not found next to the package ({_PACKAGE_DIR / 'conf'}) "
        f"nor in the source tree ({_PACKAGE_DIR.parents[1] / 'conf'}); reinstall the package."
    )


def plain(node: Any) -> Any:
    """A resolved, plain-Python copy of a config node (dict/list); anything else is returned as it is.

    Checkpoints must hold plain values only, and Hydra hands nested nodes to constructors as DictConfigs.
    """
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node
