"""Where the Hydra configs live, and the resolvers they use: `register_resolvers()` is called by every app."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from caltech_cam.run.launch import launcher_plugin, tasks_per_node
from caltech_cam.utils.configs import config_dir

__all__ = ["RESOLVERS", "config_dir", "on_rank_zero", "rank_tag", "register_resolvers"]

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


def on_rank_zero(value: str) -> str | None:
    """`value` on the rank that writes the run's files, else None (Hydra then writes no `.hydra/` there)."""
    return value if not rank_tag() else None


RESOLVERS = {
    "caltech_cam.rank_tag": rank_tag,
    "caltech_cam.on_rank_zero": on_rank_zero,
    "caltech_cam.launcher_plugin": launcher_plugin,
    "caltech_cam.tasks_per_node": tasks_per_node,
}


def register_resolvers() -> None:
    """Make everything conf/ refers to outside its YAML files available (idempotent): every `${caltech_cam.*:...}`
    resolver, and the `/caltech_cam/<name>` nodes of Python defaults (`run.schemas`). Each app calls it before Hydra
    composes its config; so do notebooks and tests that compose configs themselves."""
    # Imported here: the schemas import the LightningModule and the callbacks, which only composing needs.
    from caltech_cam.run.schemas import register_schemas

    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    register_schemas()
