"""hydra/launcher=slurm against a real one-node SLURM cluster (tests/helpers/slurm_cluster.py): a multirun brings back
both jobs, a 2-task job trains with DDP over gloo, and a pre-timeout signal or a preemption requeues the job, which
resumes from its own last.ckpt and split by itself."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from caltech_cam.run.config import config_dir
from caltech_cam.run.launch import launcher_plugin, tasks_per_node
from caltech_cam.run.resume import resume_checkpoint
from tests.helpers import compose_train, tiny_overrides
from tests.helpers.slurm_cluster import SlurmCluster, read_epoch_log, wait_for

REPO = Path(__file__).resolve().parents[2]
MAX_EPOCHS = 3


def epoch_log(path: str, sleep_s: float = 0.0) -> list[str]:
    """Overrides adding the EpochLog probe (one line per epoch start, then a sleep from epoch 1 on)."""
    return [
        "+callbacks.epoch_log._target_=tests.helpers.slurm_cluster.EpochLog",
        f"+callbacks.epoch_log.path={path}",
        f"+callbacks.epoch_log.sleep_s={sleep_s}",
    ]


def launch(
    cluster: SlurmCluster, tmp_path: Path, data_root: Path, *overrides: str, model: str = "resnet50"
) -> subprocess.Popen:
    """`python -m caltech_cam.train -m hydra/launcher=slurm <tiny run> <overrides> model=<model>` in the
    background (`model` may be a sweep, e.g. resnet50,inception_v3; images are sized for the last one)."""
    args = [
        sys.executable,
        "-m",
        "caltech_cam.train",
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}",
        "hydra.launcher.cpus_per_task=1",
        # At most 10 minutes: submitit counts a USR2 as a timeout (not a preemption), which max_num_timeout limits.
        "hydra.launcher.timeout_min=10",
        *(o for o in tiny_overrides(data_root, tmp_path, model.split(",")[-1]) if not o.startswith("model=")),
        f"model={model}",
        *overrides,
    ]
    env = {**cluster.env, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, cluster: SlurmCluster, timeout: float = 400) -> str:
    """Wait for the launcher; its output, or a failure with the output and the daemons' logs."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the launcher did not return in {timeout} s:\n{out[-4000:]}\n{cluster.logs()}")
    assert proc.returncode == 0, f"launcher failed:\n{out[-6000:]}\n{cluster.logs()}"
    return out


def sweep_dir(tmp_path: Path) -> Path:
    """The multirun's directory; exactly one, or a requeued job would have started a second one."""
    sweeps = sorted((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def returned_value(sweep: Path, job: str) -> object:
    """What the launcher brought back for array task `job` (submitit's result pickle holds Hydra's JobReturn)."""
    (result,) = sweep.glob(f".submitit/{job}/{job}_0_result.pkl")
    outcome, job_return = pickle.loads(result.read_bytes())
    assert outcome == "success", job_return
    return job_return.return_value


def metrics(run: Path) -> dict:
    import json

    return json.loads((run / "metrics.json").read_text())


@dataclass
class Interrupted:
    """One job of the requeue sweep: its run dir, array task id, and the split manifest as it was when signalled."""

    run: Path
    job: str
    manifest_before: bytes


# ------------------------------------------------------------------------------------------ without SLURM
def _run_cfg(run: Path, *overrides: str):
    cfg = compose_train(["data=synthetic", f"paths.output_dir={run}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def test_resume_finds_the_run_directorys_last_checkpoint_and_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert resume_checkpoint(_run_cfg(run)) == (None, None)  # a fresh run starts from scratch
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 0}, run / "checkpoints" / "last.ckpt")
    (run / "split_manifest.csv").write_text("path,label,split\n")
    found = (str(run / "checkpoints" / "last.ckpt"), str(run / "split_manifest.csv"))
    assert resume_checkpoint(_run_cfg(run)) == found
    # What the user passes wins; a disabled last_checkpoint callback means nothing to resume from.
    mine = ("/elsewhere/x.ckpt", "/elsewhere/split.csv")
    assert resume_checkpoint(_run_cfg(run, f"ckpt_path={mine[0]}", f"data.split_file={mine[1]}")) == mine
    off = resume_checkpoint(_run_cfg(run, "callbacks.last_checkpoint.enabled=false"))
    assert off == (None, str(run / "split_manifest.csv"))


def test_resume_refuses_a_truncated_last_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 0, "weights": torch.zeros(1000)}, run / "checkpoints" / "last.ckpt")
    data = (run / "checkpoints" / "last.ckpt").read_bytes()
    (run / "checkpoints" / "last.ckpt").write_bytes(
        data[: len(data) // 2]
    )  # as a SIGKILL mid-write leaves it
    with pytest.raises(ValueError, match=r"last\.ckpt is not a complete checkpoint"):
        resume_checkpoint(_run_cfg(run))


def test_missing_launcher_plugin_names_the_package_to_install() -> None:
    with pytest.raises(ImportError, match=r"pip install hydra-submitit-launcher"):
        launcher_plugin("hydra_plugins.not_installed_launcher.module.Launcher", "hydra-submitit-launcher")
    present = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher_plugin(present, "hydra-submitit-launcher") == present


def test_one_slurm_task_per_device() -> None:
    assert [tasks_per_node(d) for d in (4, "2", [0, 3], OmegaConf.create([1, 2, 5]))] == [4, 2, 2, 3]
    for bad in ("auto", -1, 0, [], True):
        with pytest.raises(ValueError, match=r"trainer\.devices must be a number of devices"):
            tasks_per_node(bad)


@pytest.mark.slow
def test_launcher_without_multirun_stops_before_training(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "caltech_cam.train", "hydra/launcher=slurm", f"paths.root_dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "hydra/launcher=slurm only takes effect in a multirun: add -m" in proc.stderr, proc.stderr[-3000:]
    assert not list(tmp_path.rglob("split_manifest.csv")) and not list(tmp_path.rglob("*.ckpt"))


def test_slurm_launcher_config_follows_the_trainer() -> None:
    GlobalHydra.instance().clear()
    overrides = [
        "hydra/launcher=slurm",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    # One SLURM task per device and as many nodes as the trainer spans; the user's keys pass through.
    assert (launcher.tasks_per_node, launcher.nodes, launcher.partition) == (4, 2, "gpu")
    # The plugin's SlurmLauncher with the request check (caltech_cam.run.slurm), under Hydra's plugin namespace.
    assert launcher._target_ == "hydra_plugins.caltech_cam_slurm.CheckedSlurmLauncher"
    assert launcher.pending_check_s == 10
    assert launcher.max_num_timeout > 0  # submitit requeues on timeouts...
    # ... and Lightning's own SLURM auto-requeue is off, so only one of them owns the signals.
    assert OmegaConf.to_container(cfg.trainer.plugins) == [
        {"_target_": "lightning.pytorch.plugins.environments.SLURMEnvironment", "auto_requeue": False}
    ]


# --------------------------------------------------------------------------------- on the local cluster
@pytest.fixture(scope="module")
def requeue_sweep(
    slurm_cluster: SlurmCluster, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory
):
    """A 2-job multirun (model=resnet50,inception_v3); in the middle of training (epoch 1 of 3 started), job 0 gets the pre-timeout signal
    (`scancel --signal=USR2`) and job 1 is preempted (`scontrol requeue`). Both run at once, one CPU each."""
    tmp_path = tmp_path_factory.mktemp("requeue")
    proc = launch(
        slurm_cluster,
        tmp_path,
        synthetic_root,
        f"trainer.max_epochs={MAX_EPOCHS}",
        *epoch_log("${paths.output_dir}/epochs.txt", sleep_s=4),
        model="resnet50,inception_v3",
    )
    try:
        runs = tmp_path / "outputs" / "train" / "multiruns"
        sweep = wait_for(lambda: next(runs.glob("*"), None), 120, "the sweep directory")
        array = wait_for(
            lambda: next((p.name.split("_")[0] for p in sweep.glob(".submitit/*_0")), None),
            120,
            "the array job",
        )
        jobs = {}
        for num, interrupt in ((0, ["scancel", "--signal=USR2"]), (1, ["scontrol", "requeue"])):
            run, job = sweep / str(num), f"{array}_{num}"
            log = run / "epochs.txt"
            wait_for(
                lambda log=log: log.is_file() and len(log.read_text().splitlines()) >= 2,
                300,
                f"{job} epoch 1",
            )
            manifest = (run / "split_manifest.csv").read_bytes()
            slurm_cluster.run(*interrupt, job)
            jobs[num] = Interrupted(run, job, manifest)
        out = finish(proc, slurm_cluster)
    finally:
        if proc.poll() is None:
            proc.kill()
    return tmp_path, out, jobs


def _check_resumed(entry: Interrupted, ranks: tuple[int, ...] = (0,), tested: bool = True) -> None:
    all_rows = read_epoch_log(entry.run / "epochs.txt")
    for rank in ranks:
        rows = [r for r in all_rows if r["rank"] == rank]
        first = [r for r in rows if r["restart"] == 0]
        later = [r for r in rows if r["restart"] > 0]
        batches = rows[0]["batches"]
        # The first attempt started from scratch and was stopped after it began epoch 1 (or a later one).
        assert len(first) >= 2, all_rows
        assert [(r["epoch"], r["global_step"]) for r in first] == [
            (e, e * batches) for e in range(len(first))
        ]
        # The job was requeued once (SLURM restart 1) and resumed from last.ckpt, i.e. after the last epoch that
        # completed, not from scratch: the interrupted epoch (or, had it just completed, the next), mid-training.
        assert later and {r["restart"] for r in later} == {1}, all_rows
        resumed_at = later[0]["epoch"]
        assert first[-1]["epoch"] <= resumed_at <= first[-1]["epoch"] + 1, all_rows
        assert 1 <= resumed_at < MAX_EPOCHS, all_rows
        assert [(r["epoch"], r["global_step"]) for r in later] == [
            (e, e * batches) for e in range(resumed_at, MAX_EPOCHS)
        ], all_rows
    # ... to the same end as an uninterrupted run: MAX_EPOCHS epochs of `batches` steps.
    last = torch.load(entry.run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (MAX_EPOCHS - 1, MAX_EPOCHS * batches)
    log = (entry.run / "train.log").read_text()
    assert f"Resuming from {entry.run / 'checkpoints' / 'last.ckpt'} found in the run directory" in log
    assert f"Reusing the split of {entry.run / 'split_manifest.csv'}" in log
    assert (entry.run / "split_manifest.csv").read_bytes() == entry.manifest_before
    assert metrics(entry.run)["fit"]["val/acc_top1"] >= 0
    if tested:
        assert "test/acc_top1" in metrics(entry.run)["test"]


@pytest.mark.slow
def test_multirun_brings_back_both_jobs(requeue_sweep) -> None:
    tmp_path, _, jobs = requeue_sweep
    sweep = sweep_dir(tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == [
        "0",
        "1",
        "multirun.yaml",
    ]
    # One SLURM job per Hydra job, each with its own model, and each job's return value came back to Hydra.
    assert [metrics(jobs[n].run)["model"] for n in (0, 1)] == ["resnet50", "inception_v3"]
    for entry in jobs.values():
        assert returned_value(sweep, entry.job) == pytest.approx(metrics(entry.run)["optimized_value"])


@pytest.mark.slow
def test_pre_timeout_signal_saves_requeues_and_resumes(requeue_sweep) -> None:
    _, _, jobs = requeue_sweep
    entry = jobs[0]
    out = "".join(p.read_text() for p in sorted((entry.run.parent / ".submitit" / entry.job).glob("*_log.*")))
    # submitit's handler saved the callable and requeued the job itself.
    assert "Caught signal SIGUSR2" in out and "Exiting gracefully after preemption/timeout" in out, out[
        -3000:
    ]
    _check_resumed(entry)


@pytest.mark.slow
def test_preemption_resumes_from_last_checkpoint(requeue_sweep) -> None:
    _, _, jobs = requeue_sweep
    entry = jobs[1]
    out = "".join(p.read_text() for p in sorted((entry.run.parent / ".submitit" / entry.job).glob("*_log.*")))
    # SLURM itself stopped the job (SIGTERM, then SIGKILL after KillWait) and started it again.
    assert "DUE TO JOB REQUEUE" in out and "SIGUSR2" not in out, out[-3000:]
    _check_resumed(entry)


@pytest.mark.slow
def test_two_task_job_trains_with_ddp_over_gloo_and_resumes_after_requeue(
    slurm_cluster: SlurmCluster, synthetic_root: Path, tmp_path: Path
) -> None:
    """One job of two SLURM tasks = two DDP ranks; USR2 in epoch 1 requeues both, and both resume."""
    proc = launch(
        slurm_cluster,
        tmp_path,
        synthetic_root,
        # trainer=ddp as a GPU user runs it, on CPU: the SLURM tasks are the ranks (Lightning launches nothing).
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.sync_batchnorm=false",
        f"trainer.max_epochs={MAX_EPOCHS}",
        *epoch_log("${paths.output_dir}/epochs.txt", sleep_s=4),
    )
    try:
        runs = tmp_path / "outputs" / "train" / "multiruns"
        sweep = wait_for(lambda: next(runs.glob("*"), None), 120, "the sweep directory")
        log = sweep / "0" / "epochs.txt"
        wait_for(
            lambda: log.is_file() and len(log.read_text().splitlines()) >= 4, 300, "epoch 1 on both ranks"
        )
        # A one-job multirun is a plain job, not an array: its folder is .submitit/<job id>.
        (job,) = [p.name for p in sweep.glob(".submitit/*") if p.is_dir()]
        entry = Interrupted(sweep / "0", job, (sweep / "0" / "split_manifest.csv").read_bytes())
        slurm_cluster.run("scancel", "--signal=USR2", job)
        finish(proc, slurm_cluster)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sweep_dir(tmp_path) == sweep
    rows = read_epoch_log(entry.run / "epochs.txt")
    # Lightning's SLURMEnvironment made SLURM task i the DDP rank i of 2, in both attempts.
    assert {(r["rank"], r["procid"], r["world_size"], r["restart"]) for r in rows} == {
        (rank, rank, 2, restart) for rank in (0, 1) for restart in (0, 1)
    }, rows
    _check_resumed(entry, ranks=(0, 1))
    scored = metrics(entry.run)
    # The test split scored once across the two ranks: every image exactly once, none padded twice.
    assert scored["world_size"] == 2
    assert scored["test"]["test/images"] == scored["data"]["splits"]["test"]
    assert [p.relative_to(sweep) for p in sweep.rglob("metrics.json")] == [Path("0/metrics.json")]
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    # Rank 0 requeued the job; submitit leaves that to rank 0 alone.
    assert "Not checkpointing nor requeuing since I am a slave (procid=1)" in logs, logs[-3000:]
    # submitit owns requeueing: Lightning's own SLURM auto-requeue handler is off (conf/hydra/launcher/slurm.yaml).
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs and "SLURM auto-requeueing enabled" not in logs, logs[-3000:]
    assert returned_value(sweep, job) == pytest.approx(metrics(entry.run)["optimized_value"])
