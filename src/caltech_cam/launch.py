"""Hydra launchers (conf/hydra/launcher/*.yaml), checked where Hydra would be cryptic or silent: a missing plugin
gets an error naming the package to install (not "Could not load 'hydra/launcher/submitit_slurm'"), and a launcher
chosen without `-m`, which Hydra silently ignores, stops the run before it trains here instead of on the cluster."""

from __future__ import annotations

import importlib
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from caltech_cam.distributed import device_count

RESOLVER = "caltech_cam.launcher_plugin"
TASKS_RESOLVER = "caltech_cam.tasks_per_node"


def launcher_plugin(target: str, package: str) -> str:
    """`target` (a launcher class path) if its module imports; else ImportError naming the pip package."""
    module = target.rpartition(".")[0]
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"hydra/launcher needs the Hydra plugin {target!r}, which is not installed ({error}). "
            f'Install it with `pip install {package}` (or `pip install "caltech_cam[slurm]"`), '
            "or drop the hydra/launcher override to run here."
        ) from error
    return target


def tasks_per_node(devices: Any) -> int:
    """SLURM tasks per node for `trainer.devices`: one task (DDP rank) per device, so a count is needed."""
    try:
        count = device_count(devices)
    except ValueError:
        count = None
    if count is not None and count > 0:
        return count
    raise ValueError(
        f"hydra/launcher=slurm starts one SLURM task per device, so trainer.devices must be a number of devices "
        f"per node (e.g. trainer.devices=4) or a list of device ids, not {devices!r}."
    )


def check_launcher() -> None:
    """Refuse `hydra/launcher=<x>` without `-m`: Hydra runs such a job here and ignores the launcher."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    launcher = hydra_cfg.runtime.choices.get("hydra/launcher", "basic")
    if hydra_cfg.mode == RunMode.RUN and launcher != "basic":
        raise ValueError(
            f"hydra/launcher={launcher} only takes effect in a multirun: add -m "
            f"(python -m caltech_cam.train -m hydra/launcher={launcher} ...). Without it this run would train "
            "here, on this machine."
        )


def register_resolver() -> None:
    """Make `${caltech_cam.launcher_plugin:<class>,<package>}` and `${caltech_cam.tasks_per_node:<devices>}`
    available to configs (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, launcher_plugin)
    if not OmegaConf.has_resolver(TASKS_RESOLVER):
        OmegaConf.register_new_resolver(TASKS_RESOLVER, tasks_per_node)


register_resolver()
