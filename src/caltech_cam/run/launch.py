"""What must be true before a run starts: its trainer (devices, nodes, strategy) and its Hydra launcher.

Lightning does the launching (`ddp` re-runs this Hydra app once per extra local rank; SLURM or torchrun start the
processes themselves) and Hydra's launchers submit the jobs; `check_launch` only refuses the combinations that would
hang or waste a run, with a message that names the bad setting, before any data or weights are touched. A missing
launcher plugin gets an error naming the package to install (not "Could not load 'hydra/launcher/submitit_slurm'"),
and a launcher chosen without `-m`, which Hydra silently ignores, stops the run here instead of training locally.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig

# What Lightning's default cluster environment reads when the processes are started by hand (one per node).
NODE_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")


class LaunchError(ValueError):
    """A trainer setting that cannot run here (too many devices, nodes without a cluster, ddp inside a sweep)."""


def externally_launched() -> bool:
    """Whether something other than Lightning started this process as one rank of many (SLURM, torchrun, or
    `LOCAL_RANK` set by hand or by Lightning's own `ddp` launcher for a child rank)."""
    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect() or "LOCAL_RANK" in os.environ


def device_count(devices: Any) -> int | None:
    """How many devices a `trainer.devices` value asks for on one node: a count, a list of ids or "0,1"; None for
    "auto" / -1 (all there are). Anything else is a LaunchError naming the value."""
    if isinstance(devices, str) and devices.strip() in ("auto", "-1"):
        return None
    if isinstance(devices, str) and "," in devices:
        devices = [d for d in devices.split(",") if d.strip()]
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if not isinstance(devices, str | bool) and hasattr(devices, "__len__"):
        return len(devices)
    if isinstance(devices, int) and not isinstance(devices, bool):
        return None if devices == -1 else devices
    raise LaunchError(f"trainer.devices={devices!r}; expected a count, a list of device ids, or auto.")


def check_trainer(trainer: DictConfig, *, multirun: bool) -> None:
    """Refuse, before any data or weights are touched, a trainer config that would fail or hang later.

    - more devices than the machine has (GPUs on a GPU accelerator, cores on the CPU);
    - `num_nodes > 1` without a cluster environment: SLURM, torchrun, or MASTER_ADDR/MASTER_PORT/NODE_RANK;
    - `strategy=ddp` (Lightning re-runs the command once per rank) inside a Hydra multirun, which would make every
      child replay the whole sweep (hydra#2070): use `ddp_spawn` there, or a launcher (`hydra/launcher=slurm`).
    """
    accelerator = str(trainer.get("accelerator", "auto"))
    wanted = device_count(trainer.get("devices", 1))
    if wanted is not None:
        if wanted < 1:
            raise LaunchError(
                f"trainer.devices={trainer.devices!r}; expected a positive count, a list, or auto."
            )
        if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
            have = torch.cuda.device_count()
            if wanted > have:
                raise LaunchError(
                    f"trainer.devices={trainer.devices} asks for {wanted} GPU(s) but this machine has {have} "
                    f"(torch.cuda.device_count()); use trainer.devices<={max(have, 1)} or devices=auto"
                    + ("" if have else ", or trainer=cpu")
                    + "."
                )
        elif accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
            have = os.cpu_count() or 1
            if wanted > have:
                raise LaunchError(
                    f"trainer.devices={trainer.devices} asks for {wanted} CPU processes but this machine has "
                    f"{have} cores; use trainer.devices<={have}."
                )
    num_nodes = int(trainer.get("num_nodes", 1) or 1)
    if num_nodes < 1:
        raise LaunchError(f"trainer.num_nodes={num_nodes}; expected >= 1.")
    if num_nodes > 1 and not (SLURMEnvironment.detect() or TorchElasticEnvironment.detect()):
        missing = [v for v in NODE_VARIABLES if v not in os.environ]
        if missing:
            raise LaunchError(
                f"trainer.num_nodes={num_nodes} needs a cluster environment, and none was found: no SLURM job "
                f"(SLURM_NTASKS...), no torchrun (TORCHELASTIC_RUN_ID), and {', '.join(missing)} not set. "
                "Start the same command on every node with MASTER_ADDR=<node 0's address> MASTER_PORT=<free port> "
                "NODE_RANK=<0..num_nodes-1> (and the same hydra.run.dir), or submit it through "
                "hydra/launcher=slurm (README: Scaling out)."
            )
    strategy = trainer.get("strategy", "auto")
    name = str(strategy.get("_target_", "custom") if hasattr(strategy, "get") else strategy)
    processes = _processes_per_node(accelerator, wanted) * num_nodes
    # Every multi-process strategy re-runs the command per extra rank (Lightning's subprocess launcher: ddp and
    # its variants, fsdp, deepspeed, and `auto` with several devices), except those that fork or spawn.
    relaunches = processes > 1 and not any(k in name.lower() for k in _FORKING) and not externally_launched()
    if multirun and relaunches:
        raise LaunchError(
            f"trainer.strategy={name} with {processes} processes re-runs the command once per extra process, which "
            "inside a Hydra multirun (-m) would replay the whole sweep in every child process. For a sweep on one "
            "machine use trainer.strategy=ddp_spawn; on a cluster, hydra/launcher=slurm runs each job's ranks as "
            "SLURM tasks."
        )


# Strategies whose extra processes are started from the first one, not by re-running the command.
_FORKING = ("spawn", "fork", "notebook")


def _processes_per_node(accelerator: str, wanted: int | None) -> int:
    """How many processes a node runs: the devices asked for, or for auto / -1 every GPU (one CPU process)."""
    if wanted is not None:
        return wanted
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return max(torch.cuda.device_count(), 1) if gpu else 1


def is_multirun() -> bool:
    """Whether this process runs one job of a Hydra multirun (-m)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_launcher() -> None:
    """Refuse `hydra/launcher=<x>` without `-m`: Hydra runs such a job here and ignores the launcher."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    launcher = hydra_cfg.runtime.choices.get("hydra/launcher", "basic")
    if hydra_cfg.mode == RunMode.RUN and launcher != "basic":
        raise LaunchError(
            f"hydra/launcher={launcher} only takes effect in a multirun: add -m "
            f"(python -m caltech_cam.train -m hydra/launcher={launcher} ...). Without it this run would train "
            "here, on this machine."
        )


def check_launch(cfg: DictConfig) -> None:
    """Every launch check of a train run: the trainer (`check_trainer`) and the Hydra launcher (`check_launcher`)."""
    check_trainer(cfg.trainer, multirun=is_multirun())
    check_launcher()


def launcher_plugin(target: str, package: str) -> str:
    """`target` (a launcher class path) if its module imports; else ImportError naming the pip package.

    Resolver `${caltech_cam.launcher_plugin:<class>,<package>}` (`run.config.register_resolvers`)."""
    module, _, name = target.rpartition(".")
    try:
        # getattr too: a hydra_plugins module imports without its plugin and raises ImportError for the class only
        # (Hydra imports every hydra_plugins module at each start, so it must not fail there).
        getattr(importlib.import_module(module), name)
    except ImportError as error:
        raise ImportError(
            f"hydra/launcher needs the Hydra plugin {target!r}, which is not installed ({error}). "
            f'Install it with `pip install {package}` (or `pip install "caltech_cam[slurm]"`), '
            "or drop the hydra/launcher override to run here."
        ) from error
    return target


def tasks_per_node(devices: Any) -> int:
    """SLURM tasks per node for `trainer.devices`: one task (DDP rank) per device, so a count is needed.

    Resolver `${caltech_cam.tasks_per_node:<devices>}` (`run.config.register_resolvers`)."""
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
