"""Multi-process runs as users launch them: `trainer=ddp` (Lightning re-runs the command per rank), several nodes
started by hand with the standard variables, and the settings that must be refused before any work."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from caltech_cam.run.config import rank_tag
from caltech_cam.run.launch import NODE_VARIABLES, LaunchError, check_trainer
from tests.helpers import run_dirs, tiny_overrides

RANK_VARIABLES = (
    "RANK",
    "SLURM_PROCID",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_RANK",
    "SLURM_NTASKS",
    "SLURM_JOB_NAME",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in (*RANK_VARIABLES, *NODE_VARIABLES, "TORCHELASTIC_RUN_ID", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def trainer_cfg(**values):
    return OmegaConf.create(
        {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", **values}
    )


# ------------------------------------------------------------------------------------------------ refusals
def test_more_cpu_processes_than_cores_is_refused(clean_env):
    cores = os.cpu_count()
    with pytest.raises(LaunchError, match=rf"trainer.devices={cores + 1} .* {cores} cores"):
        check_trainer(trainer_cfg(devices=cores + 1, strategy="ddp"), multirun=False)
    check_trainer(trainer_cfg(devices=cores, strategy="ddp"), multirun=False)


@pytest.mark.skipif(torch.cuda.device_count() >= 8, reason="needs fewer than 8 GPUs")
def test_more_gpus_than_exist_is_refused(clean_env):
    have = torch.cuda.device_count()
    with pytest.raises(
        LaunchError, match=rf"trainer.devices=8 asks for 8 GPU\(s\) but this machine has {have}"
    ):
        check_trainer(trainer_cfg(accelerator="gpu", devices=8), multirun=False)
    with pytest.raises(LaunchError, match="asks for 8 GPU"):
        check_trainer(trainer_cfg(accelerator="gpu", devices="0,1,2,3,4,5,6,7"), multirun=False)


def test_several_nodes_without_a_cluster_environment_is_refused(clean_env):
    with pytest.raises(
        LaunchError, match=r"num_nodes=2 needs a cluster environment.*MASTER_ADDR, MASTER_PORT, NODE_RANK"
    ):
        check_trainer(trainer_cfg(num_nodes=2, strategy="ddp"), multirun=False)
    for name, value in zip(NODE_VARIABLES, ("127.0.0.1", "29500", "1"), strict=True):
        clean_env.setenv(name, value)
    check_trainer(trainer_cfg(num_nodes=2, strategy="ddp"), multirun=False)


def test_ddp_inside_a_multirun_is_refused_with_the_alternatives(clean_env):
    with pytest.raises(LaunchError, match=r"ddp_spawn.*hydra/launcher=slurm"):
        check_trainer(trainer_cfg(devices=2, strategy="ddp"), multirun=True)
    # Lightning's `auto` with several devices is ddp, and so are its variants and the sharded strategies.
    for strategy in ("auto", "ddp_find_unused_parameters_false", "fsdp", "deepspeed_stage_2"):
        with pytest.raises(LaunchError, match="would replay the whole sweep"):
            check_trainer(trainer_cfg(devices=2, strategy=strategy), multirun=True)
    with pytest.raises(LaunchError, match="DDPStrategy"):
        check_trainer(
            trainer_cfg(devices=2, strategy={"_target_": "lightning.pytorch.strategies.DDPStrategy"}),
            multirun=True,
        )
    check_trainer(trainer_cfg(devices=2, strategy="ddp_spawn"), multirun=True)
    check_trainer(trainer_cfg(devices=2, strategy="ddp_fork"), multirun=True)
    check_trainer(trainer_cfg(devices=1, strategy="auto"), multirun=True)
    check_trainer(trainer_cfg(devices=2, strategy="ddp"), multirun=False)
    check_trainer(trainer_cfg(devices=1, strategy="ddp"), multirun=True)
    clean_env.setenv(
        "SLURM_NTASKS", "2"
    )  # inside a SLURM job the tasks are the ranks: nothing re-runs the sweep
    clean_env.setenv("SLURM_JOB_NAME", "train")
    check_trainer(trainer_cfg(devices=2, strategy="ddp"), multirun=True)


def test_rank_tag_names_every_non_zero_rank(clean_env):
    assert rank_tag() == ""
    clean_env.setenv("SLURM_PROCID", "0")
    clean_env.setenv("LOCAL_RANK", "0")
    assert rank_tag() == ""
    clean_env.setenv("NODE_RANK", "1")
    assert rank_tag() == ".rank-NODE_RANK1"


@pytest.mark.slow
def test_cli_refuses_ddp_in_a_multirun_before_touching_data(tmp_path, synthetic_root):
    missing = tmp_path / "no-such-data"
    proc = subprocess.run(
        [
            sys.executable, "-m", "caltech_cam.train", "-m",
            *[o for o in tiny_overrides(missing, tmp_path) if not o.startswith("data=")],
            "data=caltech256", "trainer.strategy=ddp", "trainer.devices=2", "seed=1,2",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "trainer.strategy=ddp with 2 processes re-runs the command" in proc.stderr
    assert "Caltech-256 not found" not in proc.stderr  # refused before the data was looked at


# ------------------------------------------------------------------------------------------------ real runs
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _odd_test_split(tmp_path: Path, synthetic_root: Path) -> Path:
    """A manifest of the shared set whose test split has an odd number of images: 2 ranks would pad one twice."""
    proc = subprocess.run(
        [sys.executable, "-m", "caltech_cam.prepare", f"data.root={synthetic_root}", f"paths.root_dir={tmp_path}",
         "data.num_workers=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (manifest,) = (tmp_path / "outputs" / "prepare").glob("runs/*/split_manifest.csv")
    rows = list(csv.DictReader(manifest.open()))
    test_rows = [r for r in rows if r["split"] == "test"]
    if len(test_rows) % 2 == 0:
        test_rows[0]["split"] = "train"
    out = tmp_path / "odd_split.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def _events_with_images(run: Path) -> list[Path]:
    holding = []
    for file in sorted(run.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(file), size_guidance={"images": 0})
        acc.Reload()
        if acc.Tags()["images"]:
            holding.append(file)
    return holding


@pytest.mark.slow
def test_trainer_ddp_subprocess_launch_finishes_tests_once_and_writes_one_of_each(tmp_path, synthetic_root):
    """The hang of issue 8: `trainer=ddp` on 2 CPU processes used to train, then wait forever in the test phase."""
    split = _odd_test_split(tmp_path, synthetic_root)
    expected_test = sum(1 for r in csv.DictReader(split.open()) if r["split"] == "test")
    assert expected_test % 2 == 1
    proc = subprocess.run(
        [
            sys.executable, "-m", "caltech_cam.train",
            *tiny_overrides(synthetic_root, tmp_path),
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
            "trainer.sync_batchnorm=false", "trainer.max_epochs=2", f"data.split_file={split}",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
    runs = run_dirs(tmp_path)
    assert len(runs) == 1, f"expected one run directory, got {runs}"  # the child wrote into rank 0's
    (run,) = runs
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # Scored once: every test image exactly once although 2 ranks cannot split an odd count evenly.
    assert metrics["test"]["test/images"] == expected_test
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    assert len(_events_with_images(run)) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert (run / "train.log").is_file()


@pytest.mark.slow
def test_two_nodes_started_by_hand_share_one_run(tmp_path, synthetic_root):
    """2 nodes x 1 process on one machine, launched with MASTER_ADDR/MASTER_PORT/NODE_RANK/WORLD_SIZE/LOCAL_RANK
    and the same hydra.run.dir: both finish, only rank 0 writes the results."""
    run = tmp_path / "shared-run"
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node),
               "WORLD_SIZE": "2", "LOCAL_RANK": "0"}  # fmt: skip
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "caltech_cam.train",
                    *tiny_overrides(synthetic_root, tmp_path),
                    "trainer.strategy=ddp",
                    "trainer.num_nodes=2",
                    "trainer.devices=1",
                    "trainer.max_epochs=1",
                    f"hydra.run.dir={run}",
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"STDOUT:\n{out[-2000:]}\nSTDERR:\n{err[-5000:]}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and "test/acc_top1" in metrics["test"]
    assert "Run directory" in outputs[0][0] and "Run directory" not in outputs[1][0]
    assert (run / "train.log").is_file() and (run / "train.rank-NODE_RANK1.log").is_file()
    assert len(_events_with_images(run)) == 1
