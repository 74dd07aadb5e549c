"""Where the Hydra configs live, for editable and for plain installs."""

from __future__ import annotations

import os
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


# Environment variables that give a process's place among the ranks of one run, whoever started it: torchrun and
# Lightning's ddp children (RANK / LOCAL_RANK / NODE_RANK / GROUP_RANK), SLURM tasks (SLURM_PROCID).
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK")


def rank_tag() -> str:
    """ "" for the process that writes the run's files (rank 0, or a single process), else e.g. ".rank-NODE_RANK1".

    Decided from the environment before Hydra writes anything, so that only rank 0 writes `.hydra/` and each other
    rank keeps its own log file beside rank 0's instead of interleaving lines in it.
    """
    others = [
        f"{name}{os.environ[name]}" for name in _RANK_VARIABLES if os.environ.get(name, "0") not in ("", "0")
    ]
    return "" if not others else ".rank-" + "-".join(others)


def _on_rank_zero(value: str) -> str | None:
    return value if not rank_tag() else None


for _name, _resolver in (("caltech_cam.rank_tag", rank_tag), ("caltech_cam.on_rank_zero", _on_rank_zero)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
