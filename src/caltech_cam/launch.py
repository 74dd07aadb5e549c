"""Hydra launchers (conf/hydra/launcher/*.yaml), checked where Hydra would be cryptic or silent: a missing plugin
gets an error naming the package to install (not "Could not load 'hydra/launcher/submitit_slurm'"), and a launcher
chosen without `-m`, which Hydra silently ignores, stops the run before it trains here instead of on the cluster."""

from __future__ import annotations

import importlib

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

RESOLVER = "caltech_cam.launcher_plugin"


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
    """Make `${caltech_cam.launcher_plugin:<class>,<package>}` available to configs (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, launcher_plugin)


register_resolver()
