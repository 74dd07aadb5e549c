"""Launching on several processes: what must be true before a multi-process run starts, and what every rank checks.

Lightning does the launching (`ddp` re-runs this Hydra app once per extra local rank; SLURM or torchrun start the
processes themselves); this module only refuses the combinations that would hang or waste a run, with a message that
names the bad setting, and makes sure every rank of a run writes into the same run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from omegaconf import DictConfig
from torch.utils.data import Dataset, DistributedSampler

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


def check_launch(trainer: DictConfig, *, multirun: bool) -> None:
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


def eval_sampler(dataset: Dataset, trainer: L.Trainer | None) -> DistributedSampler | None:
    """A sampler that shards an evaluation split over the ranks WITHOUT padding (Lightning's own
    `UnrepeatedDistributedSampler`), so each image is scored exactly once; None on one process.

    Lightning's default `DistributedSampler` repeats images to give every rank the same count, which counts them
    twice in the metrics. The metrics here are sums over images (torchmetrics states), so uneven shards are exact.
    """
    if trainer is None or trainer.world_size <= 1:
        return None
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )


class SameRunDirectory(L.Callback):
    """Every rank must write into one run directory: on several nodes, Hydra's default `${now}` can differ.

    Checked when the run starts (all ranks take part in one `all_gather_object`, so all of them stop together).
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = str(Path(output_dir).resolve())

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return
        seen: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(seen, self.output_dir)
        if len(set(seen)) > 1:
            listing = ", ".join(f"rank {r}: {d}" for r, d in enumerate(seen))
            raise LaunchError(
                f"the ranks of this run write into different run directories ({listing}). Pass the same "
                "hydra.run.dir=<shared folder> on every node (Hydra's default uses the start time, ${now:...})."
            )
