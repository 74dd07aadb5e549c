"""The launcher of hydra/launcher=slurm: hydra-submitit-launcher's SlurmLauncher, plus two checks where SLURM is
silent. Before sbatch, each job's request (CPUs, memory, GPUs per node, nodes) is compared with the partition's nodes
as `sinfo` reports them: a request no node can meet would pend forever, so it stops here, naming the key. After
sbatch, jobs still pending a few seconds later are reported with SLURM's reason; `PartitionConfig` (the request
breaks a partition limit) never clears, so those jobs are cancelled and the launch fails."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hydra.errors import CompactHydraException

# Needs the plugin; Hydra reaches this class through hydra_plugins.caltech_cam_slurm, which imports quietly without it.
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger(__name__)

# One line per group of identical nodes of a partition (--exact: same CPUs and memory; sinfo always groups by GRES);
# --all: hidden partitions too. The default partition's name ends with "*". An empty partition shows 0 nodes.
SINFO = ("sinfo", "--noheader", "--all", "--exact", "--format=%P|%D|%c|%m|%G")
SQUEUE_FORMAT = "%i %T %r"
TIMEOUT_S = 30

# Pending reasons that never clear by waiting (the job is cancelled), and what they mean ({partition}: its name).
FINAL_REASONS = {
    "PartitionConfig": "the request exceeds what {partition} is configured to allow (a limit that sinfo's node "
    "sizes do not show, such as MaxCPUsPerNode), so it can never start",
    "MaxMemPerLimit": "the memory it asks for exceeds {partition}'s MaxMemPerNode or MaxMemPerCPU, so it can "
    "never start",
}
# Usual reasons of a job that waits its turn (reported, not cancelled).
TEMPORARY_REASONS = {
    "None": "the scheduler has not looked at it yet",
    "Priority": "jobs of higher priority go first",
    "Resources": "the nodes it fits on are busy",
    "ReqNodeNotAvail": "a node it needs is down, drained or reserved",
    "PartitionNodeLimit": "too few of the partition's nodes are up (down or drained nodes)",
    "BeginTime": "the start time it asks for (sbatch --begin) is still ahead",
    "Dependency": "it waits for another job",
    "JobHeldUser": "it is held (scontrol release <id>)",
    "JobHeldAdmin": "an administrator holds it",
    "JobArrayTaskLimit": "hydra.launcher.array_parallelism jobs of the sweep already run",
}


class SlurmRequestError(CompactHydraException, ValueError):
    """The jobs' request can never run on the cluster (the message names the key to change). Hydra prints a
    CompactHydraException as its message alone, without the launcher's stack."""


@dataclass(frozen=True)
class NodeGroup:
    """`count` identical nodes of `partition` as one line of `sinfo --exact` describes them."""

    partition: str
    default: bool
    count: int
    cpus: int
    memory_mb: int
    gres: str

    @property
    def gpus(self) -> int:
        return gpu_count(self.gres)


@dataclass(frozen=True)
class Request:
    """What each job of the multirun asks SLURM for, per node (the launcher's keys as submitit passes them)."""

    cpus_per_task: int | None
    tasks_per_node: int
    mem_gb: float | None
    gpus_per_node: int | None
    nodes: int
    partition: str | None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Request:
        return cls(
            cpus_per_task=params.get("cpus_per_task"),
            tasks_per_node=params.get("tasks_per_node") or 1,
            mem_gb=params.get("mem_gb") or None,
            gpus_per_node=params.get("gpus_per_node") or None,
            nodes=params.get("nodes") or 1,
            partition=params.get("partition"),
        )

    @property
    def cpus(self) -> int:
        """CPUs on one node: SLURM gives a task one CPU unless cpus_per_task is set."""
        return (self.cpus_per_task or 1) * self.tasks_per_node

    @property
    def memory_mb(self) -> int | None:
        """sbatch's --mem in SLURM's MB (MiB): submitit passes a whole mem_gb as `<n>GB` (n × 1024 MB), any other
        as `<int(mem_gb × 1024)>MB` (submitit.slurm.slurm._convert_mem)."""
        if self.mem_gb is None:
            return None
        return int(self.mem_gb) * 1024 if self.mem_gb == int(self.mem_gb) else int(self.mem_gb * 1024)

    def fits(self, group: NodeGroup) -> bool:
        return (
            self.cpus <= group.cpus
            and (self.memory_mb is None or self.memory_mb <= group.memory_mb)
            and (self.gpus_per_node is None or self.gpus_per_node <= group.gpus)
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _leading_int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def gpu_count(gres: str) -> int:
    """GPUs in a node's GRES as sinfo's %G prints it: `gpu:4`, `gpu:a100:4(S:0-1)`, `gpu:a100:2,gpu:v100:2,shard:8`
    (types add up: gpus_per_node asks for any type); `(null)`: none."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres):
        name, _, rest = item.strip().partition(":")
        if name != "gpu":
            continue
        count = rest.split("(")[0].rsplit(":", 1)[-1]
        total += int(count) if count.isdigit() else 1
    return total


def parse_sinfo(text: str) -> list[NodeGroup]:
    """The node groups of `sinfo --noheader --all --exact --format=%P|%D|%c|%m|%G` (SINFO)."""
    groups = []
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, count, cpus, memory, gres = line.strip().split("|", 4)
        groups.append(
            NodeGroup(
                partition=partition.rstrip("*"),
                default=partition.endswith("*"),
                count=_leading_int(count),
                cpus=_leading_int(cpus),
                memory_mb=_leading_int(memory),
                gres=gres,
            )
        )
    return groups


def _partitions(groups: Sequence[NodeGroup]) -> dict[str, list[NodeGroup]]:
    partitions: dict[str, list[NodeGroup]] = {}
    for group in groups:
        partitions.setdefault(group.partition, []).append(group)
    return partitions


def _listing(groups: Sequence[NodeGroup]) -> str:
    defaults = {g.partition for g in groups if g.default}
    names = _partitions(groups)
    return ", ".join(f"{n} (the default)" if n in defaults else n for n in names) or "none"


def partition_names(request: Request, groups: Sequence[NodeGroup]) -> tuple[list[str], list[str]]:
    """The partitions the jobs go to (hydra.launcher.partition, a comma list, or sinfo's default) and the problems
    with that choice."""
    if request.partition is None:
        defaults = [g.partition for g in groups if g.default]
        if defaults:
            return defaults[:1], []
        return [], [
            "hydra.launcher.partition=null asks for the cluster's default partition, but sinfo marks none as the "
            f"default (partitions: {_listing(groups)}): set hydra.launcher.partition"
        ]
    names = [n.strip() for n in str(request.partition).split(",") if n.strip()]
    known = _partitions(groups)
    unknown = [n for n in names if n not in known]
    if unknown:
        return names, [
            f"hydra.launcher.partition={request.partition} names no partition of this cluster "
            f"({', '.join(unknown)}); sinfo lists {_listing(groups)}: set hydra.launcher.partition to one of them"
        ]
    return names, []


def partition_problems(request: Request, name: str, groups: Sequence[NodeGroup]) -> list[str]:
    """Why no `request.nodes` nodes of partition `name` (its sinfo groups) can take the request; [] if they can."""
    nodes = [g for g in groups if g.count > 0]
    total = sum(g.count for g in nodes)
    if total == 0:
        return [f"partition {name} has no nodes (sinfo): choose another hydra.launcher.partition"]
    problems = []
    most_cpus = max(g.cpus for g in nodes)
    if request.cpus > most_cpus:
        typed = "null (1 CPU)" if request.cpus_per_task is None else str(request.cpus_per_task)
        fix = "hydra.launcher.cpus_per_task"
        if request.tasks_per_node > 1:
            fix += " or trainer.devices (hydra.launcher.tasks_per_node follows it)"
        problems.append(
            f"hydra.launcher.cpus_per_task={typed} × tasks_per_node={request.tasks_per_node} needs "
            f"{request.cpus} CPUs on one node; the largest node of partition {name} has {most_cpus}: lower {fix}"
        )
    most_mb = max(g.memory_mb for g in nodes)
    if request.memory_mb is not None and request.memory_mb > most_mb:
        problems.append(
            f"hydra.launcher.mem_gb={request.mem_gb:g} needs {request.memory_mb} MB on one node (sbatch --mem, "
            f"1 GB = 1024 MB); the largest node of partition {name} has {most_mb} MB: lower "
            f"hydra.launcher.mem_gb to at most {most_mb // 1024}, or set it to null for the partition's default"
        )
    most_gpus = max(g.gpus for g in nodes)
    if request.gpus_per_node is not None and request.gpus_per_node > most_gpus:
        wanted = (
            f"hydra.launcher.gpus_per_node={request.gpus_per_node} needs {_count(request.gpus_per_node, 'GPU')} "
            "on one node"
        )
        if most_gpus == 0:
            gres = ", ".join(sorted({"none" if g.gres == "(null)" else g.gres for g in nodes}))
            problems.append(
                f"{wanted}; no node of partition {name} has a GPU (GRES: {gres}): set "
                "hydra.launcher.gpus_per_node=null, or choose a GPU partition with hydra.launcher.partition"
            )
        else:
            problems.append(
                f"{wanted}; the node with the most GPUs in partition {name} has {most_gpus}: lower "
                "hydra.launcher.gpus_per_node (and trainer.devices)"
            )
    if request.nodes > total:
        problems.append(
            f"hydra.launcher.nodes={request.nodes} needs {request.nodes} nodes; partition {name} has {total}: "
            "lower trainer.num_nodes (hydra.launcher.nodes follows it)"
        )
    if not problems:
        problems += _combined_problems(request, name, nodes, total)
    return problems


def _combined_problems(request: Request, name: str, nodes: Sequence[NodeGroup], total: int) -> list[str]:
    """Each resource fits some node, but not enough nodes hold all of them at once."""
    fitting = sum(g.count for g in nodes if request.fits(g))
    if fitting >= request.nodes:
        return []
    each = [_count(request.cpus, "CPU")]
    each += [] if request.memory_mb is None else [f"{request.memory_mb} MB"]
    each += [] if request.gpus_per_node is None else [_count(request.gpus_per_node, "GPU")]
    if request.nodes == 1:
        return [
            f"no node of partition {name} has {', '.join(each)} at once (hydra.launcher.cpus_per_task × "
            "tasks_per_node, mem_gb, gpus_per_node): lower one of them"
        ]
    return [
        f"hydra.launcher.nodes={request.nodes} needs {request.nodes} nodes with {', '.join(each)} "
        f"each; partition {name} has {fitting} such node(s) of {total}: lower the request or trainer.num_nodes"
    ]


def check_request(request: Request, groups: Sequence[NodeGroup]) -> list[str]:
    """Why the request can never run on the cluster sinfo describes (one sentence per problem); [] if it can run in
    at least one of its partitions."""
    names, problems = partition_names(request, groups)
    if problems:
        return problems
    known = _partitions(groups)
    per_partition = [partition_problems(request, name, known[name]) for name in names]
    if any(not p for p in per_partition):
        return []
    return [problem for problems in per_partition for problem in problems]


def pending_reasons(squeue: str) -> dict[str, str]:
    """Job id -> SLURM's reason, for the PENDING jobs of `squeue -h -r -o "%i %T %r"` (SQUEUE_FORMAT)."""
    pending = {}
    for line in squeue.splitlines():
        fields = line.split(maxsplit=2)
        if len(fields) >= 2 and fields[1] == "PENDING":
            pending[fields[0]] = fields[2].strip() if len(fields) == 3 else "None"
    return pending


def reason_code(reason: str) -> str:
    """`ReqNodeNotAvail, UnavailableNodes:n1` -> `ReqNodeNotAvail`."""
    return reason.split(",")[0].strip()


def pending_report(pending: Mapping[str, str], waited_s: float) -> list[str]:
    """One line per reason for jobs that wait their turn; they stay queued."""
    by_reason: dict[str, list[str]] = {}
    for job, reason in pending.items():
        by_reason.setdefault(reason, []).append(job)
    lines = []
    for reason, jobs in by_reason.items():
        meaning = TEMPORARY_REASONS.get(reason_code(reason), "see JOB REASON CODES in `man squeue`")
        lines.append(
            f"SLURM job(s) {', '.join(jobs)} still PENDING after {waited_s:.0f} s, Reason={reason}: {meaning}. "
            "Usually temporary: they stay queued and this launcher keeps waiting "
            f"(`squeue -j {','.join(jobs)}` to follow, `scancel {' '.join(jobs)}` to give up)"
        )
    return lines


def final_report(final: Mapping[str, str], cancelled: Sequence[str], partition: str | None) -> str:
    """The error for jobs whose pending reason never clears; `cancelled`: the jobs scancel was given."""
    where = f"partition {partition}" if partition else "its partition"
    reasons = sorted({reason_code(r) for r in final.values()})
    meaning = "; ".join(f"Reason={r}: {FINAL_REASONS[r].format(partition=where)}" for r in reasons)
    return (
        f"SLURM job(s) {', '.join(final)} stay PENDING with {meaning}. Cancelled the multirun's jobs "
        f"(scancel {' '.join(cancelled)}). Lower hydra.launcher.cpus_per_task, mem_gb, gpus_per_node or nodes, "
        f"or choose another hydra.launcher.partition; `scontrol show partition {partition or '<name>'}` lists its "
        "limits."
    )


def _run(*args: str) -> subprocess.CompletedProcess | None:
    """A SLURM client command (exit code 124 once it runs past TIMEOUT_S); None where it is not on PATH."""
    if shutil.which(args[0]) is None:
        return None
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"no answer in {TIMEOUT_S} s")


@contextmanager
def _on_submission(hook: Callable[[list[str]], None]) -> Iterator[None]:
    """Call `hook(job ids)` right after submitit's sbatch, before the plugin waits for the results. The plugin builds
    its `submitit.AutoExecutor` and waits inside one method, so for that call the executor class is a subclass that
    calls the hook; restored afterwards."""
    import submitit

    base = submitit.AutoExecutor

    class Executor(base):  # type: ignore[misc, valid-type]
        def _internal_process_submissions(self, delayed_submissions: list) -> list:
            jobs = super()._internal_process_submissions(delayed_submissions)
            hook([str(job.job_id) for job in jobs])
            return jobs

    submitit.AutoExecutor = Executor
    try:
        yield
    finally:
        submitit.AutoExecutor = base


class CheckedSlurmLauncher(SlurmLauncher):
    """SlurmLauncher that refuses a request no node can run (before sbatch) and reports jobs that stay pending
    (`pending_check_s` seconds after sbatch; 0: no report). Jobs pending with a final reason (FINAL_REASONS) are
    cancelled and the launch fails: they could only wait forever, and so would this launcher."""

    def __init__(self, pending_check_s: float = 10, **params: Any) -> None:
        # Not a submitit parameter: the plugin passes every other key on to the executor, which refuses unknown ones.
        self.pending_check_s = float(pending_check_s)
        self.partition: str | None = None
        super().__init__(**params)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        self._check_request()
        with _on_submission(self._check_pending):
            return super().launch(job_overrides, initial_job_idx)

    def _check_request(self) -> None:
        request = Request.from_params(self.params)
        self.partition = request.partition
        proc = _run(*SINFO)
        if proc is None or proc.returncode != 0:
            why = "sinfo is not on PATH" if proc is None else f"sinfo failed: {proc.stderr.strip()}"
            log.warning(
                f"{why}: skipped checking hydra.launcher's request (CPUs, memory, GPUs, nodes) against the "
                "partition's nodes before sbatch"
            )
            return
        groups = parse_sinfo(proc.stdout)
        names, _ = partition_names(request, groups)
        self.partition = ",".join(names) or request.partition
        problems = check_request(request, groups)
        if problems:
            raise SlurmRequestError(
                "hydra/launcher=slurm: no node can run these jobs (they would wait in the queue forever), so "
                "nothing was submitted:\n" + "\n".join(f"  {p}" for p in problems)
            )

    def _check_pending(self, jobs: list[str]) -> None:
        """Report the jobs still pending after pending_check_s; cancel them and raise on a final reason."""
        if self.pending_check_s <= 0 or not jobs:
            return
        start = time.monotonic()
        while True:
            proc = _run("squeue", "-h", "-r", "-j", ",".join(jobs), "-o", SQUEUE_FORMAT)
            if proc is None or (proc.returncode != 0 and "Invalid job id" not in proc.stderr):
                why = "squeue is not on PATH" if proc is None else f"squeue failed: {proc.stderr.strip()}"
                log.warning(f"{why}: skipped reporting jobs that stay pending")
                return
            pending = pending_reasons(proc.stdout) if proc.returncode == 0 else {}
            final = {j: r for j, r in pending.items() if reason_code(r) in FINAL_REASONS}
            if final:
                _run("scancel", *jobs)
                raise SlurmRequestError(final_report(final, jobs, self.partition))
            waited = time.monotonic() - start
            if not pending:
                return
            if waited >= self.pending_check_s:
                for line in pending_report(pending, waited):
                    log.warning(line)
                return
            time.sleep(min(1.0, self.pending_check_s - waited))
