"""What a study leaves behind: trials.csv, tuned/best.yaml, TensorBoard hparams, one log line per trial."""

from __future__ import annotations

import csv
import io
import logging
import shlex
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from caltech_cam.tune.space import Param
from caltech_cam.utils.files import write_text

log = logging.getLogger(__name__)


# Where the best parameters go, relative to the study dir: `--config-dir <study dir> +tuned=best` picks it up.
BEST_GROUP, BEST_NAME = "tuned", "best"


def _reported(trial: FrozenTrial) -> float | None:
    """A completed trial's value, a pruned trial's last reported value; None for failed or running trials."""
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return trial.value


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def summary_line(study: optuna.Study, trial: FrozenTrial, metric: str) -> str:
    """One line per finished trial: state, metric, duration, params, and the study's best so far."""
    value = _reported(trial)
    shown = "n/a" if value is None else f"{value:.4f}"
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        shown += f" at epoch {max(trial.intermediate_values)}"
    seconds = trial.duration.total_seconds() if trial.duration else float("nan")
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    best = best_trial(study)
    best_text = f"best: trial {best.number} = {best.value:.4f}" if best else "best: none complete yet"
    return f"Trial {trial.number} {trial.state.name} {metric}={shown} in {seconds:.1f} s | {params} | {best_text}"


def write_hparams(trial: FrozenTrial, metric: str) -> None:
    """One TensorBoard hparams entry for the trial, in its own run's tensorboard/ folder (beside its curves)."""
    value = _reported(trial)
    if value is None:
        return
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    params = {**trial.params, "trial": trial.number, "state": trial.state.name}
    exp, ssi, sei = hparams(params, {f"hparams/{metric}": value})
    with SummaryWriter(log_dir=str(Path(trial.user_attrs["run_dir"]) / "tensorboard")) as writer:
        for summary in (exp, ssi, sei):
            writer.file_writer.add_summary(summary)
        writer.add_scalar(f"hparams/{metric}", value, 0)


# ------------------------------------------------------------------------------------------------ results
def write_trials_csv(study: optuna.Study, path: Path) -> None:
    """Every trial of the study (all workers): number, state, value, duration, run dir, then one column per param."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    rows = [["number", "state", "value", "duration_s", "started", "worker", "run_dir", *keys]]
    for t in trials:
        value = _reported(t)
        rows.append(
            [
                t.number,
                t.state.name,
                "" if value is None else repr(value),
                "" if t.duration is None else f"{t.duration.total_seconds():.1f}",
                "" if t.datetime_start is None else t.datetime_start.isoformat(timespec="seconds"),
                t.user_attrs.get("worker", ""),
                t.user_attrs.get("run_dir", ""),
                *(t.params.get(k, "") for k in keys),
            ]
        )
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    write_text(path, text.getvalue())


def reuse_command(study_dir: Path, train_overrides: list[str]) -> str:
    args = ["--config-dir", str(study_dir), *train_overrides, f"+{BEST_GROUP}={BEST_NAME}"]
    return "python -m caltech_cam.train " + " ".join(shlex.quote(a) for a in args)


def best_yaml(
    study: optuna.Study, params: list[Param], train_overrides: list[str], study_dir: Path
) -> str | None:
    """The best trial as a `# @package _global_` config: group choices as defaults overrides, values nested."""
    best = best_trial(study)
    if best is None:
        return None
    groups = {p.key for p in params if p.group}
    body: dict[str, Any] = {}
    defaults = [{f"override /{k}": v} for k, v in best.params.items() if k in groups]
    if defaults:
        body["defaults"] = defaults
    for key, value in best.params.items():
        if key in groups:
            continue
        *parents, leaf = key.split(".")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    states = [t.state for t in study.get_trials(deepcopy=False)]
    header = [
        "# @package _global_",
        f"# Best trial {best.number} of study {study.study_name!r}: {metric_of(study)} = {best.value!r} "
        f"({study.direction.name.lower()}), out of {len(states)} trials "
        f"({states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} pruned).",
        f"# Its run: {best.user_attrs.get('run_dir', '?')}",
        "# Train with it (the study's own overrides, then this file):",
        f"#   {reuse_command(study_dir, train_overrides)}",
    ]
    return "\n".join(header) + "\n" + OmegaConf.to_yaml(OmegaConf.create(body))


def metric_of(study: optuna.Study) -> str:
    return study.user_attrs.get("metric", "value")


def write_results(
    study: optuna.Study, params: list[Param], train_overrides: list[str], study_dir: Path
) -> None:
    write_trials_csv(study, study_dir / "trials.csv")
    text = best_yaml(study, params, train_overrides, study_dir)
    if text is not None:
        write_text(study_dir / BEST_GROUP / f"{BEST_NAME}.yaml", text)


def log_summary(study: optuna.Study, train_overrides: list[str], study_dir: Path) -> None:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in TrialState if states.count(s))
    lines = [
        f"Study {study.study_name!r}: {len(states)} trials ({counts or 'none'}). Trials: {study_dir / 'trials.csv'}"
    ]
    best = best_trial(study)
    if best is None:
        lines.append("No trial completed yet: no best parameters written.")
    else:
        lines += [
            f"Best: trial {best.number}, {metric_of(study)} = {best.value:.4f}, {best.params}",
            f"Best parameters: {study_dir / BEST_GROUP / f'{BEST_NAME}.yaml'}; train with them:",
            f"  {reuse_command(study_dir, train_overrides)}",
        ]
    log.info("\n".join(lines))
