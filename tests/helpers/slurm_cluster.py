"""A real one-node SLURM cluster on localhost for tests: Debian's munged, slurmctld and slurmd, configured in a temp
dir, on free ports, with their own munge socket, so it touches nothing outside that dir.

Install once with ``bash .ci/slurm_setup.sh`` (root). Without SLURM or root the tests skip with the reason; with
``CALTECH_CAM_CI=1`` they fail instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started on this machine (the message says why)."""


@dataclass
class SlurmCluster:
    """A running one-node cluster. ``env`` points the SLURM client commands (and jobs) at it."""

    root: Path
    conf: Path
    node: str
    cpus: int
    env: dict[str, str]
    partition: str = PARTITION
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """A SLURM client command against this cluster; its stdout."""
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def job_field(self, job_id: str, name: str) -> str | None:
        """One field of ``scontrol show job`` (e.g. JobState, RestartCnt); None once the job has left slurmctld."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        for item in out.split():
            key, _, value = item.partition("=")
            if key == name:
                return value
        return None

    def jobs(self) -> list[str]:
        """Ids of the pending, running or completing jobs (array tasks as ``<array>_<task>``)."""
        return self.run("squeue", "-h", "-a", "-r", "-o", "%i").split()

    def logs(self) -> str:
        """The tail of each daemon's log, for failure messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons by their own PIDs (slurmd, slurmctld, munged)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            jobs = self.jobs()
            if jobs:
                self.run("scancel", "--full", *jobs, check=False)
            wait_for(lambda: not self.jobs() or None, 20, "jobs to leave the queue", raise_on_timeout=False)
        for name in reversed(DAEMONS):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_for(
    probe: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.5,
    raise_on_timeout: bool = True,
) -> object:
    """Poll ``probe`` until it returns something truthy; that value, or TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            if raise_on_timeout:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            return None
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mib() -> int:
    """The node's memory for slurm.conf: 90% of MemTotal, in MiB (slurmd refuses a node with less than declared)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    raise SlurmUnavailable("cannot read MemTotal from /proc/meminfo")


def check_installed() -> None:
    """Raise SlurmUnavailable naming what is missing (commands, root)."""
    missing = [c for c in (*DAEMONS, *CLIENTS) if shutil.which(c) is None]
    if missing:
        raise SlurmUnavailable(
            f"SLURM is not installed (missing {', '.join(missing)}); install it with `bash .ci/slurm_setup.sh` "
            "as root (Debian's slurm-wlm and munge)."
        )
    if os.geteuid() != 0:
        raise SlurmUnavailable("a local SLURM node needs root (slurmd runs jobs as their user); run as root.")


def slurm_conf(root: Path, node: str, cpus: int, memory_mib: int, ports: tuple[int, int]) -> str:
    """slurm.conf of the one-node test cluster. The timing keys shorten a requeue to seconds: a requeued job waits
    cred_expire (default 120 s) before it may start again, and a killed one KillWait (default 30 s)."""
    return f"""\
ClusterName=cc{ports[0]}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
KillWait=5
MinJobAge=60
WaitTime=0
InactiveLimit=0
MessageTimeout=10
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mib} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start_cluster(root: Path, timeout: float = 60) -> SlurmCluster:
    """Write munge key + slurm.conf under ``root``, start munged, slurmctld and slurmd in the foreground (so their
    PIDs are ours), and wait until ``sinfo`` shows the node idle. SlurmUnavailable if anything fails."""
    check_installed()
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "munge").chmod(0o711)  # munged wants its socket dir traversable by clients
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(node)
    except OSError as error:
        # SLURM names the node by its short hostname, and DDP ranks meet at that name (MASTER_ADDR).
        raise SlurmUnavailable(
            f"this machine's short hostname {node!r} does not resolve ({error}); add it to /etc/hosts "
            "(`bash .ci/slurm_setup.sh` does)."
        ) from error
    # The CPUs this process may use (a container's cpuset can be smaller than the host): slurmd refuses to serve a
    # node declared with more CPUs than it finds, and never more than that is needed here.
    cpus = len(os.sched_getaffinity(0))
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, node, cpus, _memory_mib(), (_free_port(), _free_port())))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root=root, conf=conf, node=node, cpus=cpus, env=env)
    commands = {
        # --force: munged refuses to run as root otherwise; the test key and socket are private to this dir.
        "munged": [
            "munged", "--foreground", "--force", f"--socket={root}/munge/munge.socket", f"--key-file={key}",
            f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/log/munged.log",
            f"--seed-file={root}/munge/munged.seed",
        ],
        "slurmctld": ["slurmctld", "-D", "-i", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-f", str(conf)],
    }  # fmt: skip
    try:
        for name, command in commands.items():
            log = (root / "log" / f"{name}.stdout").open("w")
            cluster.processes[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            if name == "munged":
                wait_for(lambda: (root / "munge" / "munge.socket").exists(), 20, "munged's socket")
            for other, proc in cluster.processes.items():
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{other} exited with code {proc.returncode}:\n{cluster.logs()}")

        def idle() -> bool:
            for name, proc in cluster.processes.items():
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with code {proc.returncode}:\n{cluster.logs()}")
            out = cluster.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
            return f"{node} idle" in out

        wait_for(idle, timeout, f"sinfo to show node {node} idle")
    except (SlurmUnavailable, TimeoutError, OSError, RuntimeError) as error:
        logs = cluster.logs()
        cluster.stop()
        raise SlurmUnavailable(f"the local SLURM cluster did not start: {error}\n{logs}") from error
    return cluster


def cluster_or_skip(root: Path) -> Iterator[SlurmCluster]:
    """Yield a started cluster and stop it afterwards; skip (fail under CALTECH_CAM_CI=1) when it cannot start."""
    try:
        cluster = start_cluster(root)
    except SlurmUnavailable as error:
        if os.environ.get("CALTECH_CAM_CI") == "1":
            pytest.fail(f"CALTECH_CAM_CI=1 and SLURM is required, but {error}")
        pytest.skip(f"no local SLURM cluster: {error}")
    try:
        yield cluster
    finally:
        cluster.stop()


class EpochLog(L.Callback):
    """Test probe run inside SLURM jobs: appends one line per training epoch start to ``path`` (``epoch
    global_step num_training_batches global_rank world_size SLURM_PROCID SLURM_RESTART_COUNT``), then sleeps
    ``sleep_s`` from epoch ``sleep_from`` on, so a test can signal the job in the middle of training."""

    def __init__(self, path: str, sleep_s: float = 0.0, sleep_from: int = 1) -> None:
        self.path = Path(path)
        self.sleep_s = sleep_s
        self.sleep_from = sleep_from

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fields = [
            trainer.current_epoch,
            trainer.global_step,
            trainer.num_training_batches,
            trainer.global_rank,
            trainer.world_size,
            os.environ.get("SLURM_PROCID", "-"),
            os.environ.get("SLURM_RESTART_COUNT", "0"),
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(" ".join(map(str, fields)) + "\n")
        if trainer.current_epoch >= self.sleep_from:
            time.sleep(self.sleep_s)


def read_epoch_log(path: Path) -> list[dict[str, int]]:
    """The lines EpochLog wrote, as dicts."""
    names = ("epoch", "global_step", "batches", "rank", "world_size", "procid", "restart")
    rows = []
    for line in path.read_text().splitlines():
        values = line.split()
        rows.append(
            {k: (int(v) if v.lstrip("-").isdigit() else -1) for k, v in zip(names, values, strict=True)}
        )
    return rows
