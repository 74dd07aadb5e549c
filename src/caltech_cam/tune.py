"""`python -m caltech_cam.tune [tune=<space>] [train overrides] [tune.n_trials=20 ...]`: an Optuna study over the train
config. Each trial composes conf/train.yaml with the same overrides plus its sampled values and trains in-process."""

from __future__ import annotations

import csv
import difflib
import io
import logging
import os
import shlex
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import optuna
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from caltech_cam.config import config_dir, plain
from caltech_cam.train import train

log = logging.getLogger(__name__)

# Where the best parameters go, relative to the study dir: `--config-dir <study dir> +tuned=best` picks it up.
BEST_GROUP, BEST_NAME = "tuned", "best"
_DISTRIBUTIONS = ("float", "int", "categorical")


# ------------------------------------------------------------------------------------------------ search space
@dataclass(frozen=True)
class Param:
    """One `tune.space` entry: the train-config key (or config group) it sets and the distribution it draws from."""

    key: str
    distribution: BaseDistribution
    group: bool

    def suggest(self, trial: optuna.Trial) -> Any:
        d = self.distribution
        if isinstance(d, FloatDistribution):
            return trial.suggest_float(self.key, d.low, d.high, log=d.log, step=d.step)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.key, d.low, d.high, log=d.log, step=d.step)
        return trial.suggest_categorical(self.key, d.choices)

    def override(self, value: Any) -> str:
        """The Hydra command-line override that sets this key to `value` (strings quoted, so `'1'` stays a str)."""
        if self.group:
            return f"{self.key}={value}"
        if value is None or isinstance(value, bool):
            return f"{self.key}={'null' if value is None else str(value).lower()}"
        if isinstance(value, int | float):
            return f"{self.key}={value!r}"
        escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
        return f"{self.key}='{escaped}'"


def parse_space(space: DictConfig | None) -> list[Param]:
    """`tune.space` -> Params; a malformed entry is an error that names it. Entries set to null are skipped."""
    params: list[Param] = []
    for name, entry in (plain(space) or {}).items():
        if entry is None:
            continue
        where = f"tune.space.{name}"
        kinds = [k for k in _DISTRIBUTIONS if k in entry]
        if not isinstance(entry.get("key"), str) or len(kinds) != 1:
            raise ValueError(
                f"{where}={entry!r}: expected {{key: <train-config key or group>, <kind>: {{...}}}} with exactly "
                f"one kind out of {list(_DISTRIBUTIONS)}."
            )
        kind, args = kinds[0], entry[kinds[0]] or {}
        try:
            distribution = {
                "float": FloatDistribution,
                "int": IntDistribution,
                "categorical": CategoricalDistribution,
            }[kind](**args)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}.{kind}={args!r} is not a valid {kind} distribution: {e}") from e
        params.append(Param(key=entry["key"], distribution=distribution, group=False))
    keys = [p.key for p in params]
    if len(set(keys)) != len(keys):
        raise ValueError(f"tune.space sets a key twice: {sorted(k for k in set(keys) if keys.count(k) > 1)}.")
    return params


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    return [k for key, value in node.items() for k in _leaf_keys(value, f"{prefix}{key}.")] or [prefix]


def check_space(params: list[Param], train_overrides: list[str]) -> list[Param]:
    """Mark config groups and check every key against the composed train config (for every group choice searched),
    before any trial runs. Returns the params with `group` set."""
    loader = GlobalHydra.instance().config_loader()
    # A group is overridden by its path (model/optimizer=adamw), a value by its dotted key.
    checked = [
        Param(p.key.replace(".", "/"), p.distribution, group=True)
        if loader.get_group_options(p.key.replace(".", "/"))
        else p
        for p in params
    ]
    given = {o.key_or_group: o.input_line for o in OverridesParser.create().parse_overrides(train_overrides)}
    groups = [p for p in checked if p.group]
    for p in checked:
        if p.key in given:
            raise ValueError(
                f"{p.key} is searched by tune.space and also set on the command line ({given[p.key]}); drop one."
            )
        if p.group:
            options = loader.get_group_options(p.key)
            choices = getattr(p.distribution, "choices", None)
            if choices is None:
                raise ValueError(
                    f"tune.space key {p.key!r} is a config group: expected categorical choices out of {options}, "
                    f"got {p.distribution}."
                )
            unknown = [c for c in choices if c not in options]
            if unknown:
                raise ValueError(
                    f"tune.space key {p.key!r} is a config group without the option(s) {unknown}; "
                    f"expected choices out of {options}."
                )
    # Group choices change the config's shape: check the value keys under each choice.
    variants = [[]] + [[p.override(c)] for p in groups for c in p.distribution.choices]
    for extra in variants:
        cfg = compose(config_name="train", overrides=[*train_overrides, *extra])
        known = [k.rstrip(".") for k in _leaf_keys(OmegaConf.to_container(cfg, resolve=False))]
        for p in checked:
            if (
                not p.group
                and OmegaConf.select(cfg, p.key, default=_MISSING, throw_on_resolution_failure=False)
                is _MISSING
            ):
                close = difflib.get_close_matches(p.key, known, n=3, cutoff=0.6)
                hint = f"; did you mean {' or '.join(close)}?" if close else "."
                under = f" (with {extra[0]})" if extra else ""
                raise KeyError(f"tune.space key {p.key!r} does not exist in the train config{under}{hint}")
        _check_single_device(cfg)
    return checked


_MISSING = object()


def _check_single_device(cfg: DictConfig) -> None:
    """Trials train in this process, one after another: a multi-process strategy would re-launch the tuner."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    single = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
    if not single or nodes != 1 or "ddp" in str(cfg.trainer.get("strategy") or ""):
        raise ValueError(
            f"tune trains each trial in this process on one device, but trainer.devices={devices}, "
            f"trainer.num_nodes={nodes}, trainer.strategy={cfg.trainer.get('strategy')}. Run one worker per device "
            "instead (e.g. CUDA_VISIBLE_DEVICES=<i> python -m caltech_cam.tune ... per GPU, or a SLURM array)."
        )


# ------------------------------------------------------------------------------------------------ storage
def open_storage(spec: str | None, study_dir: Path) -> optuna.storages.BaseStorage:
    """null -> journal file <study dir>/journal.log; a path -> journal file there; a URL -> that database."""
    if spec and "://" in spec:
        return _open_database(spec)
    path = Path(spec) if spec else study_dir / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _open_database(url: str) -> optuna.storages.RDBStorage:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError as e:
        raise ValueError(f"tune.storage={url!r} is not a database URL ({e}).") from e
    expected = (
        "expected a reachable database such as postgresql://user:password@host:5432/optuna or "
        "mysql+pymysql://user:password@host/optuna (sqlite:///file.db for one process), or a journal file path"
    )
    try:
        # A heartbeat lets other workers mark the trial of a killed worker (SLURM preemption) as failed.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except ImportError as e:
        raise ImportError(
            f"tune.storage={shown}: no database driver for this URL is installed ({e}). Install one, e.g. "
            "`pip install 'psycopg[binary]'` for postgresql://, `pip install PyMySQL` for mysql+pymysql://."
        ) from e
    except Exception as e:  # sqlalchemy reports an unreachable server or unopenable file at connect time
        reason = str(e).strip().splitlines()[0]
        raise ConnectionError(
            f"tune.storage={shown}: cannot open the study database ({reason}); {expected}."
        ) from e


# ------------------------------------------------------------------------------------------------ pruning
class PruningCallback(L.Callback):
    """Reports `monitor` to the Optuna trial after every validation epoch; raises optuna.TrialPruned when its pruner
    says so (Lightning re-raises it out of `fit`)."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(
                f"The pruner watches {self.monitor!r} (optimized_metric), which was not logged; "
                f"logged: {sorted(trainer.callback_metrics)}."
            )
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor}={float(value):.4f} at epoch {epoch}")


# ------------------------------------------------------------------------------------------------ trials
def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / "trials" / f"{number:04d}"


def make_objective(params: list[Param], train_overrides: list[str], study_dir: Path) -> Callable:
    """Trial -> sampled overrides -> composed train config -> `train()` in <study dir>/trials/<number> -> metric."""

    def objective(trial: optuna.Trial) -> float:
        sampled = [p.override(p.suggest(trial)) for p in params]
        run_dir = trial_dir(study_dir, trial.number)
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


def _reported(trial: FrozenTrial) -> float | None:
    """The trial's value, or for a pruned trial the last value it reported."""
    if trial.value is not None:
        return trial.value
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def _best(study: optuna.Study) -> FrozenTrial | None:
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
    best = _best(study)
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
def _replace(path: Path, text: str) -> None:
    """Write atomically: concurrent workers rewrite these files after each of their trials."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    _replace(path, text.getvalue())


def reuse_command(study_dir: Path, train_overrides: list[str]) -> str:
    args = ["--config-dir", str(study_dir), *train_overrides, f"+{BEST_GROUP}={BEST_NAME}"]
    return "python -m caltech_cam.train " + " ".join(shlex.quote(a) for a in args)


def best_yaml(
    study: optuna.Study, params: list[Param], train_overrides: list[str], study_dir: Path
) -> str | None:
    """The best trial as a `# @package _global_` config: group choices as defaults overrides, values nested."""
    best = _best(study)
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
        f"# Best trial {best.number} of study {study.study_name!r}: {_metric(study)} = {best.value!r} "
        f"({study.direction.name.lower()}), out of {len(states)} trials "
        f"({states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} pruned).",
        f"# Its run: {best.user_attrs.get('run_dir', '?')}",
        "# Train with it (the study's own overrides, then this file):",
        f"#   {reuse_command(study_dir, train_overrides)}",
    ]
    return "\n".join(header) + "\n" + OmegaConf.to_yaml(OmegaConf.create(body))


def _metric(study: optuna.Study) -> str:
    return study.user_attrs.get("metric", "value")


def write_results(
    study: optuna.Study, params: list[Param], train_overrides: list[str], study_dir: Path
) -> None:
    write_trials_csv(study, study_dir / "trials.csv")
    text = best_yaml(study, params, train_overrides, study_dir)
    if text is not None:
        _replace(study_dir / BEST_GROUP / f"{BEST_NAME}.yaml", text)


# ------------------------------------------------------------------------------------------------ study
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
    sampler = instantiate(tcfg.sampler, seed=int(tcfg.seed) + int(tcfg.worker))
    pruner = instantiate(tcfg.pruner) if tcfg.pruner is not None else optuna.pruners.NopPruner()
    storage = open_storage(tcfg.storage, study_dir)

    study = optuna.create_study(
        storage=storage,
        study_name=tcfg.study_name,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
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
        _log_summary(study, train_overrides, study_dir)
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


def _log_summary(study: optuna.Study, train_overrides: list[str], study_dir: Path) -> None:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in TrialState if states.count(s))
    lines = [
        f"Study {study.study_name!r}: {len(states)} trials ({counts or 'none'}). Trials: {study_dir / 'trials.csv'}"
    ]
    best = _best(study)
    if best is None:
        lines.append("No trial completed yet: no best parameters written.")
    else:
        lines += [
            f"Best: trial {best.number}, {_metric(study)} = {best.value:.4f}, {best.params}",
            f"Best parameters: {study_dir / BEST_GROUP / f'{BEST_NAME}.yaml'}; train with them:",
            f"  {reuse_command(study_dir, train_overrides)}",
        ]
    log.info("\n".join(lines))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="tune")
def main(cfg: DictConfig) -> float | None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one summary line per trial comes from us
    hydra_cfg = HydraConfig.get()
    study = run_study(
        cfg.tune, train_overrides_of(hydra_cfg.overrides.task), Path(hydra_cfg.runtime.output_dir)
    )
    best = _best(study)
    return None if best is None else best.value


if __name__ == "__main__":
    main()
