"""Hydra launcher plugins named by our configs (conf/hydra/launcher/*.yaml): a missing one gets an error that says
which package to install, instead of Hydra's "Could not load 'hydra/launcher/submitit_slurm'"."""

from __future__ import annotations

import importlib

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


def register_resolver() -> None:
    """Make `${caltech_cam.launcher_plugin:<class>,<package>}` available to configs (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, launcher_plugin)


register_resolver()
