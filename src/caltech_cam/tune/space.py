"""The search space: `tune.space` entries -> Optuna distributions, checked against the composed train config."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import optuna
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from caltech_cam.utils.configs import plain

_DISTRIBUTIONS = ("float", "int", "categorical")


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
