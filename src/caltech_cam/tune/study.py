"""`python -m caltech_cam.tune [tune=<space>] [train overrides] [tune.n_trials=20 ...]`: an Optuna study over the
train config. Each trial composes conf/train.yaml with the same overrides plus its sampled values and trains
in-process, in <study dir>/trials/<number>."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import optuna
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import FrozenTrial

from caltech_cam.callbacks.pruning import PruningCallback
from caltech_cam.run.config import config_dir, register_resolvers
from caltech_cam.train import train
from caltech_cam.tune.results import best_trial, log_summary, summary_line, write_hparams, write_results
from caltech_cam.tune.space import Param, check_space, parse_space
from caltech_cam.tune.storage import open_storage
from caltech_cam.utils.configs import plain

log = logging.getLogger(__name__)


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / "trials" / f"{number:04d}"


def make_objective(params: list[Param], train_overrides: list[str], study_dir: Path) -> Callable:
    """Trial -> sampled overrides -> composed train config -> `train()` in <study dir>/trials/<number> -> metric."""

    def objective(trial: optuna.Trial) -> float:
        sampled = [p.override(p.suggest(trial)) for p in params]
        run_dir = trial_dir(study_dir, trial.number)
        if run_dir.exists() and any(run_dir.iterdir()):
            # train() would resume whatever last.ckpt is there, with that run's optimizer and best score.
            raise FileExistsError(
                f"trial {trial.number}'s folder {run_dir} already holds a run (from an earlier study of the same "
                f"name whose storage was replaced?); it would be resumed instead of trained. Use another "
                f"tune.study_name, or move {study_dir / 'trials'} away."
            )
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("overrides", sampled)
        cfg = compose(config_name="train", overrides=[*train_overrides, *sampled])
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
        # What a CLI run leaves behind, so that evaluate/explain/resume find the trial's config and overrides.
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create([*train_overrides, *sampled]), run_dir / ".hydra" / "overrides.yaml")
        log.info("Trial %d starts in %s: %s", trial.number, run_dir, " ".join(sampled))
        try:
            results = train(cfg, callbacks=[PruningCallback(trial, cfg.optimized_metric)])
        except SystemExit as e:
            # Lightning turns Ctrl-C into sys.exit(1); Optuna records a KeyboardInterrupt as a failed trial, but a
            # SystemExit not at all (the trial would stay RUNNING in the storage forever).
            raise KeyboardInterrupt(f"trial {trial.number} interrupted") from e
        value = results.get("optimized_value")
        return float("nan") if value is None else float(value)  # NaN: Optuna records the trial as FAIL

    return objective


def train_overrides_of(task_overrides: list[str]) -> list[str]:
    """The command line minus the `tune` group and `tune.*` keys: what every trial's train config starts from."""
    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return [
        o.input_line
        for o in parsed
        if not (o.key_or_group == "tune" or o.key_or_group.startswith(("tune.", "tune/")))
    ]


def run_study(tcfg: DictConfig, train_overrides: list[str], study_dir: Path) -> optuna.Study:
    """Check everything, open (or resume) the study, run up to n_trials/timeout trials, write the results."""
    params = check_space(parse_space(tcfg.space), train_overrides)
    base = compose(config_name="train", overrides=train_overrides)
    metric, mode = base.optimized_metric, base.optimized_mode
    if mode not in ("max", "min"):
        raise ValueError(f"optimized_mode={mode!r}; expected 'max' or 'min'.")
    direction = (
        optuna.study.StudyDirection.MAXIMIZE if mode == "max" else optuna.study.StudyDirection.MINIMIZE
    )
    pruner = instantiate(tcfg.pruner) if tcfg.pruner is not None else optuna.pruners.NopPruner()
    storage = open_storage(tcfg.storage, study_dir)

    study = optuna.create_study(
        storage=storage,
        study_name=tcfg.study_name,
        direction=direction,
        pruner=pruner,
        load_if_exists=True,
    )
    # Seeded apart: by the worker's number (the array index under SLURM; the process id when none is given, so two
    # identical commands differ) and by the trials already in the study (a resumed or requeued worker does not
    # replay its own first draws). A lone worker with tune.worker=0 on a new study is reproducible.
    worker = int(tcfg.worker) if tcfg.get("worker") is not None else os.getpid()
    offset = worker + 1009 * len(study.get_trials(deepcopy=False))
    study.sampler = instantiate(tcfg.sampler, seed=int(tcfg.seed) + offset)
    if study.direction != direction:
        raise ValueError(
            f"Study {tcfg.study_name!r} in {tcfg.storage or study_dir / 'journal.log'} was created to "
            f"{study.direction.name.lower()}, but optimized_mode={mode!r}; use another tune.study_name."
        )
    _record_or_compare(
        study, {"metric": metric, "train_overrides": train_overrides, "space": plain(tcfg.space)}
    )
    done = len(study.get_trials(deepcopy=False))
    log.info(
        "Study %r (%s %s, %d trials so far) in %s; this worker runs up to %s trials (timeout %s s).",
        study.study_name,
        direction.name.lower(),
        metric,
        done,
        study_dir,
        tcfg.n_trials,
        tcfg.timeout,
    )

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        write_hparams(trial, metric)
        write_results(study, params, train_overrides, study_dir)
        log.info(summary_line(study, trial, metric))

    try:
        study.optimize(
            make_objective(params, train_overrides, study_dir),
            n_trials=tcfg.n_trials,
            timeout=tcfg.timeout,
            callbacks=[after_trial],
            gc_after_trial=True,
        )
    finally:
        write_results(study, params, train_overrides, study_dir)
        log_summary(study, train_overrides, study_dir)
    return study


def _record_or_compare(study: optuna.Study, attrs: dict[str, Any]) -> None:
    """The first worker records what the study searches; a resumed or extra worker that differs is warned."""
    for key, value in attrs.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
        elif study.user_attrs[key] != value:
            log.warning(
                "Study %r was started with %s=%r; this worker has %r. Its trials join the same study.",
                study.study_name,
                key,
                study.user_attrs[key],
                value,
            )


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="tune")
def main(cfg: DictConfig) -> float | None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one summary line per trial comes from us
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        raise ValueError(
            "python -m caltech_cam.tune runs one worker; with -m each job would open its own study in its own sweep "
            "folder. Start more workers as separate processes on one storage (the same command again, or "
            "`sbatch --array=0-7 --wrap='python -m caltech_cam.tune ...'` on SLURM; README: Sweeps)."
        )
    study = run_study(
        cfg.tune, train_overrides_of(hydra_cfg.overrides.task), Path(hydra_cfg.runtime.output_dir)
    )
    best = best_trial(study)
    return None if best is None else best.value


if __name__ == "__main__":
    main()
