"""hydra/launcher=slurm checks each job's request against sinfo before sbatch, and reports jobs that stay pending
(caltech_cam.run.slurm). Parsing and comparison run on sinfo/squeue output captured from the one-node test cluster;
the launcher itself runs against that real cluster (tests/helpers/slurm_cluster.py), never a mocked sinfo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import require, tiny_overrides
from tests.helpers.slurm_cluster import SlurmCluster, wait_for

slurm = require("caltech_cam.run.slurm", "slurm")
from caltech_cam.run.slurm import (  # noqa: E402
    Request,
    check_request,
    gpu_count,
    parse_sinfo,
    pending_reasons,
    pending_report,
)

REPO = Path(__file__).resolve().parents[2]
# `sinfo --noheader --all --exact --format=%P|%D|%c|%m|%G` on the test cluster (2 CPUs, 21694 MB), with a second,
# empty partition (`scontrol create PartitionName=empty`).
SINFO_CAPTURED = "debug*|1|2|21694|(null)\nempty|0|0|0|(null)\n"
# `squeue -h -r -j ... -o "%i %T %r"` there: a 2-task array the scheduler has not looked at yet, a job submitted with
# --begin=now+1hour, one asking for more CPUs than the partition's MaxCPUsPerNode, and a running one.
SQUEUE_CAPTURED = (
    "8_0 PENDING None\n8_1 PENDING None\n4 PENDING BeginTime\n7 PENDING PartitionConfig\n9 RUNNING None\n"
)
LAUNCH_TIMEOUT_S = 180


def request(**keys: object) -> Request:
    params = {"cpus_per_task": 1, "tasks_per_node": 1, "mem_gb": None, "gpus_per_node": None, "nodes": 1}
    return Request.from_params({**params, "partition": "debug", **keys})


# ------------------------------------------------------------------------------------------ without SLURM
def test_sinfo_groups_give_each_partitions_nodes() -> None:
    debug, empty = parse_sinfo(SINFO_CAPTURED)
    assert (debug.partition, debug.default, debug.count, debug.cpus, debug.memory_mb, debug.gpus) == (
        "debug", True, 1, 2, 21694, 0,
    )  # fmt: skip
    assert (empty.partition, empty.default, empty.count) == ("empty", False, 0)


def test_gres_gpu_count_adds_types_and_ignores_other_gres() -> None:
    # In the format of sinfo's %G: count last, optional type and socket binding; other GRES are not GPUs.
    cases = {
        "(null)": 0,
        "gpu:4": 4,
        "gpu:a100:4(S:0-1)": 4,
        "gpu:a100:2,gpu:v100:3(S:0),shard:8": 5,
        "mps:100": 0,
    }
    assert {gres: gpu_count(gres) for gres in cases} == cases


def test_memory_request_is_submitits_mem_in_slurm_megabytes() -> None:
    # submitit turns mem_gb into sbatch's --mem; SLURM reads its G and M suffixes as 1024 and 1 MB (RealMemory's unit).
    from submitit.slurm.slurm import _convert_mem

    factors = {"GB": 1024, "MB": 1}
    for mem_gb in (1, 21, 2.5, 0.3):
        mem = _convert_mem(mem_gb)
        assert request(mem_gb=mem_gb).memory_mb == int(mem[:-2]) * factors[mem[-2:]], mem


def test_a_request_that_fits_has_no_problem() -> None:
    groups = parse_sinfo(SINFO_CAPTURED)
    assert check_request(request(cpus_per_task=2, mem_gb=21), groups) == []
    assert check_request(request(partition=None, tasks_per_node=2, cpus_per_task=None), groups) == []


def test_each_key_beyond_the_largest_node_is_named_with_what_exists() -> None:
    groups = parse_sinfo(SINFO_CAPTURED)
    (cpus,) = check_request(request(cpus_per_task=2, tasks_per_node=2), groups)
    assert cpus == (
        "hydra.launcher.cpus_per_task=2 × tasks_per_node=2 needs 4 CPUs on one node; the largest node of partition "
        "debug has 2: lower hydra.launcher.cpus_per_task or trainer.devices (hydra.launcher.tasks_per_node follows it)"
    )
    (mem,) = check_request(request(mem_gb=22), groups)  # 22 × 1024 = 22528 MB > 21694 MB
    assert mem.startswith("hydra.launcher.mem_gb=22 needs 22528 MB on one node") and "has 21694 MB" in mem
    assert "at most 21," in mem
    (gpus,) = check_request(request(gpus_per_node=1), groups)
    assert gpus.startswith(
        "hydra.launcher.gpus_per_node=1 needs 1 GPU on one node; no node of partition debug"
    )
    (nodes,) = check_request(request(nodes=2), groups)
    assert nodes.startswith("hydra.launcher.nodes=2 needs 2 nodes; partition debug has 1:")
    (unknown,) = check_request(request(partition="gpu"), groups)
    assert unknown.startswith("hydra.launcher.partition=gpu names no partition of this cluster (gpu);")
    assert "sinfo lists debug (the default), empty" in unknown
    (empty,) = check_request(request(partition="empty"), groups)
    assert empty.startswith("partition empty has no nodes")


def test_nodes_must_each_fit_the_request() -> None:
    # Written in the captured format (the test cluster has no GPU): 2 nodes of 2 CPUs, 1 of 8 CPUs with 4 GPUs.
    groups = parse_sinfo("gpu*|2|2|21694|(null)\ngpu*|1|8|21694|gpu:4\n")
    assert check_request(request(partition="gpu", cpus_per_task=8, gpus_per_node=4), groups) == []
    (problem,) = check_request(request(partition="gpu", cpus_per_task=8, nodes=2), groups)
    assert problem.startswith(
        "hydra.launcher.nodes=2 needs 2 nodes with 8 CPUs each; partition gpu has 1 such"
    )
    (both,) = check_request(
        request(partition="gpu", cpus_per_task=8, mem_gb=1, gpus_per_node=4),
        parse_sinfo("gpu*|1|8|21694|(null)\ngpu*|1|2|512|gpu:4\n"),
    )
    assert both.startswith("no node of partition gpu has 8 CPUs, 1024 MB, 4 GPUs at once")
    (gpus,) = check_request(request(partition="gpu", gpus_per_node=8), groups)
    assert "the node with the most GPUs in partition gpu has 4" in gpus


def test_squeue_pending_reasons_and_report() -> None:
    pending = pending_reasons(SQUEUE_CAPTURED)
    assert pending == {"8_0": "None", "8_1": "None", "4": "BeginTime", "7": "PartitionConfig"}
    lines = pending_report({k: pending[k] for k in ("8_0", "8_1", "4")}, waited_s=10)
    assert lines[0].startswith("SLURM job(s) 8_0, 8_1 still PENDING after 10 s, Reason=None:")
    assert lines[1].startswith("SLURM job(s) 4 still PENDING after 10 s, Reason=BeginTime:")
    assert len(lines) == 2 and all("they stay queued" in line for line in lines)


def test_missing_plugin_gets_the_install_hint_and_hydras_scan_stays_quiet() -> None:
    """Without hydra-submitit-launcher, Hydra's plugin scan imports hydra_plugins.caltech_cam_slurm without a
    warning, and the config's resolver names the package to install."""
    code = """
import sys, warnings
sys.modules["hydra_plugins.hydra_submitit_launcher"] = None  # as if it were not installed
from hydra.core.plugins import Plugins
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    Plugins.instance()
assert not [w for w in caught if "caltech_cam_slurm" in str(w.message)], [str(w.message) for w in caught]
from caltech_cam.run.launch import launcher_plugin
launcher_plugin("hydra_plugins.caltech_cam_slurm.CheckedSlurmLauncher", "hydra-submitit-launcher")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ImportError: hydra/launcher needs the Hydra plugin" in proc.stderr, proc.stderr[-3000:]
    assert "pip install hydra-submitit-launcher" in proc.stderr, proc.stderr[-3000:]


# --------------------------------------------------------------------------------- on the local cluster
@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster with an empty queue, emptied again afterwards (whatever a test left behind)."""
    assert slurm_cluster.jobs() == [], "jobs left behind by an earlier test"
    try:
        yield slurm_cluster
    finally:
        jobs = slurm_cluster.jobs()
        if jobs:
            slurm_cluster.run("scancel", *jobs, check=False)
        wait_for(lambda: not slurm_cluster.jobs(), 60, "the queue to empty")


def launch(
    cluster: SlurmCluster, tmp_path: Path, data_root: Path, *overrides: str, path: str | None = None
) -> tuple[subprocess.Popen, Path]:
    """`python -m caltech_cam.train -m hydra/launcher=slurm <tiny run> <overrides>` in the background; its output
    (stdout and stderr) goes to the returned file. `path`: the launching process's PATH."""
    args = [
        sys.executable, "-m", "caltech_cam.train", "-m", "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10", *tiny_overrides(data_root, tmp_path), *overrides,
    ]  # fmt: skip
    env = {**cluster.env, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if path is not None:
        env["PATH"] = path
    out = tmp_path / "launcher.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    return proc, out


def finish(proc: subprocess.Popen, out: Path) -> str:
    """Wait for the launcher (killed after LAUNCH_TIMEOUT_S); its output."""
    try:
        proc.wait(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the launcher did not return in {LAUNCH_TIMEOUT_S} s:\n{out.read_text()[-4000:]}")
    return out.read_text()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _node_memory_mb(cluster: SlurmCluster) -> int:
    return int(cluster.run("sinfo", "-h", "-N", "-o", "%m").split()[0])


@pytest.mark.slow
@pytest.mark.parametrize("key", ["cpus_per_task", "mem_gb", "gpus_per_node", "nodes", "partition"])
def test_a_request_no_node_can_meet_stops_before_sbatch(
    cluster: SlurmCluster, synthetic_root: Path, tmp_path: Path, key: str
) -> None:
    memory_mb = _node_memory_mb(cluster)
    override, expected = {
        "cpus_per_task": (
            cluster.cpus + 1,
            f"hydra.launcher.cpus_per_task={cluster.cpus + 1} × tasks_per_node=1 needs {cluster.cpus + 1} CPUs on "
            f"one node; the largest node of partition debug has {cluster.cpus}: lower hydra.launcher.cpus_per_task",
        ),
        "mem_gb": (
            memory_mb // 1024 + 1,
            f"hydra.launcher.mem_gb={memory_mb // 1024 + 1} needs {(memory_mb // 1024 + 1) * 1024} MB on one node",
        ),
        "gpus_per_node": (
            1,
            "hydra.launcher.gpus_per_node=1 needs 1 GPU on one node; no node of partition debug",
        ),
        "nodes": (2, "hydra.launcher.nodes=2 needs 2 nodes; partition debug has 1"),
        "partition": ("nope", "hydra.launcher.partition=nope names no partition of this cluster"),
    }[key]
    proc, out = launch(cluster, tmp_path, synthetic_root, f"hydra.launcher.{key}={override}")
    try:
        text = finish(proc, out)
    finally:
        stop(proc)
    assert proc.returncode != 0
    assert expected in text, text[-3000:]
    if key == "mem_gb":
        assert f"the largest node of partition debug has {memory_mb} MB" in text, text[-3000:]
    if key == "partition":
        assert "sinfo lists debug (the default)" in text, text[-3000:]
    assert "nothing was submitted" in text
    # Nothing reached SLURM: no job in the queue, and submitit never made its folder.
    assert cluster.jobs() == []
    assert not list(tmp_path.rglob(".submitit"))


@pytest.mark.slow
def test_a_pending_job_is_reported_with_its_reason_and_left_queued(
    cluster: SlurmCluster, synthetic_root: Path, tmp_path: Path
) -> None:
    # The request fits, but the job may only start in an hour: SLURM keeps it PENDING with Reason=BeginTime.
    proc, out = launch(
        cluster,
        tmp_path,
        synthetic_root,
        "+hydra.launcher.additional_parameters.begin=now+1hour",
        "hydra.launcher.pending_check_s=3",
    )
    try:
        line = wait_for(
            lambda: next((li for li in out.read_text().splitlines() if "still PENDING" in li), None),
            LAUNCH_TIMEOUT_S,
            "the pending report",
        )
        (job,) = cluster.jobs()
        assert f"SLURM job(s) {job} still PENDING after 3 s, Reason=BeginTime:" in line, line
        assert "this launcher keeps waiting" in line
        # Reported, not cancelled: the job is still queued and the launcher still waits for it.
        assert cluster.job_field(job, "JobState") == "PENDING"
        assert proc.poll() is None, out.read_text()[-3000:]
    finally:
        stop(proc)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limit", "override", "reasons"),
    [
        ("MaxCPUsPerNode=1", "hydra.launcher.cpus_per_task=2", ("PartitionConfig",)),
        # Here a plain `sbatch --mem=1GB` pends with MaxMemPerLimit, the launcher's job with PartitionConfig: both final.
        ("MaxMemPerNode=512", "hydra.launcher.mem_gb=1", ("PartitionConfig", "MaxMemPerLimit")),
    ],
)
def test_a_job_a_partition_limit_keeps_pending_is_cancelled(
    cluster: SlurmCluster, synthetic_root: Path, tmp_path: Path, limit: str, override: str, reasons: tuple
) -> None:
    """A partition limit that sinfo's node sizes do not show: the request passes the check, then pends for good."""
    if cluster.cpus < 2:
        pytest.skip("needs a node of 2 CPUs or more (a request of 2 CPUs must fit the node)")
    key = limit.split("=")[0]
    cluster.run("scontrol", "update", f"PartitionName={cluster.partition}", limit)
    try:
        proc, out = launch(cluster, tmp_path, synthetic_root, override)
        try:
            text = finish(proc, out)
        finally:
            stop(proc)
    finally:
        unlimited = "0" if key == "MaxMemPerNode" else "UNLIMITED"
        cluster.run("scontrol", "update", f"PartitionName={cluster.partition}", f"{key}={unlimited}")
    assert proc.returncode != 0
    assert any(f"stay PENDING with Reason={reason}:" in text for reason in reasons), text[-3000:]
    assert "Cancelled the multirun's jobs (scancel " in text and "scontrol show partition debug" in text
    wait_for(lambda: not cluster.jobs(), 30, "the cancelled job to leave the queue")


@pytest.mark.slow
def test_without_sinfo_the_launcher_warns_and_submits(
    cluster: SlurmCluster, synthetic_root: Path, tmp_path: Path
) -> None:
    # PATH without sinfo: each directory holding it (/usr/bin, and /bin where it links there) gives way to one of
    # links to everything else in sinfo's directory (sbatch, squeue, scancel, python's tools...).
    sinfo = Path(shutil.which("sinfo", path=cluster.env["PATH"]))
    links = tmp_path / "bin"
    links.mkdir()
    for entry in sinfo.parent.iterdir():
        if entry.name != "sinfo":
            (links / entry.name).symlink_to(entry)
    entries = cluster.env["PATH"].split(os.pathsep)
    path = os.pathsep.join([str(links)] + [p for p in entries if not (Path(p) / "sinfo").exists()])
    assert shutil.which("sinfo", path=path) is None and shutil.which("sbatch", path=path) is not None
    proc, out = launch(
        cluster,
        tmp_path,
        synthetic_root,
        "+hydra.launcher.additional_parameters.begin=now+1hour",
        "hydra.launcher.pending_check_s=0",
        path=path,
    )
    try:
        wait_for(lambda: cluster.jobs() or proc.poll() is not None, LAUNCH_TIMEOUT_S, "a job in the queue")
        text = out.read_text()
        assert "sinfo is not on PATH: skipped checking hydra.launcher's request" in text, text[-3000:]
        assert len(cluster.jobs()) == 1, text[-3000:]
    finally:
        stop(proc)
