"""`python -m caltech_cam.tune`: Optuna studies over the train config, on the tiny synthetic set."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from caltech_cam.run.config import config_dir
from caltech_cam.tune import (
    BEST_GROUP,
    BEST_NAME,
    Param,
    check_space,
    parse_space,
    reuse_command,
    run_study,
    train_overrides_of,
    write_results,
)
from tests.helpers import tiny_overrides

# A trial here: one train batch, one val batch, one epoch, no test, no logger, no checkpoint files.
FAST = [
    "logger=none",
    "test=false",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "+trainer.num_sanity_val_steps=0",
    "callbacks.model_checkpoint.enabled=false",
    "callbacks.last_checkpoint.enabled=false",
]
# Two searched values; the model stays the one tiny_overrides picks.
SPACE = [
    "~tune.space.model",
    "~tune.space.weight_decay",
    "~tune.space.backbone_lr_mult",
    "~tune.space.freeze_backbone_epochs",
]


def train_args(data_root: Path, tmp_path: Path) -> list[str]:
    return [*tiny_overrides(data_root, tmp_path), *FAST]


@contextmanager
def configs():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def study_in_process(args: list[str], study_dir: Path) -> optuna.Study:
    """What `python -m caltech_cam.tune <args>` does inside its Hydra app, with `study_dir` as its run dir."""
    with configs():
        cfg = compose(config_name="tune", overrides=args)
        return run_study(cfg.tune, train_overrides_of(args), study_dir)


def journal(study_dir: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------ a 4-trial study
@pytest.fixture(scope="module")
def four_trials(tmp_path_factory, synthetic_root, one_thread):
    tmp = tmp_path_factory.mktemp("tune4")
    args = [*train_args(synthetic_root, tmp), *SPACE, "tune.study_name=four", "tune.n_trials=4"]
    study_dir = tmp / "study"
    study_in_process(args, study_dir)
    return study_dir, args


def test_four_trials_are_recorded_in_the_storage_with_their_runs(four_trials):
    study_dir, _ = four_trials
    study = journal(study_dir, "four")  # read back from the journal file, not from the object that ran
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        run = study_dir / "trials" / f"{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run)
        metrics = json.loads((run / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["fit"]["val/acc_top1"])
        # The trial trained with the values Optuna drew: its saved config says so.
        trained = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert trained["model"]["optimizer"]["lr"] == t.params["model.optimizer.lr"]
        assert trained["model"]["label_smoothing"] == t.params["model.label_smoothing"]
        assert 1e-4 <= t.params["model.optimizer.lr"] <= 3e-2
    # Seeded TPE: four distinct draws, not one repeated.
    assert len({t.params["model.optimizer.lr"] for t in trials}) == 4


def test_csv_lists_every_trial_as_the_storage_has_it(four_trials):
    study_dir, _ = four_trials
    study = journal(study_dir, "four")
    rows = read_csv(study_dir / "trials.csv")
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    for row, t in zip(rows, study.trials, strict=True):
        assert row["state"] == "COMPLETE"
        assert float(row["value"]) == t.value
        assert float(row["model.optimizer.lr"]) == t.params["model.optimizer.lr"]
        assert row["run_dir"] == t.user_attrs["run_dir"]


def test_each_trial_has_one_tensorboard_hparams_entry_with_its_metric(four_trials):
    study_dir, _ = four_trials
    for t in journal(study_dir, "four").trials:
        events = EventAccumulator(str(study_dir / "trials" / f"{t.number:04d}" / "tensorboard"))
        events.Reload()
        (scalar,) = events.Scalars("hparams/val/acc_top1")
        assert scalar.value == pytest.approx(t.value)
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = start.session_start_info.hparams
        assert hparams["model.optimizer.lr"].number_value == pytest.approx(t.params["model.optimizer.lr"])
        assert hparams["state"].string_value == "COMPLETE"


@pytest.mark.slow
def test_best_params_compose_back_into_the_train_config(four_trials, tmp_path):
    study_dir, args = four_trials
    best = journal(study_dir, "four").best_trial
    text = (study_dir / BEST_GROUP / f"{BEST_NAME}.yaml").read_text()
    assert text.startswith("# @package _global_") and f"Best trial {best.number} " in text
    # The documented command, exactly as the file and the log print it, run through the real CLI.
    command = reuse_command(study_dir, train_overrides_of(args))
    assert command in text
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "caltech_cam.train"]
    proc = subprocess.run(
        [sys.executable, *argv[1:], "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["optimizer"]["lr"] == best.params["model.optimizer.lr"]
    assert cfg["model"]["label_smoothing"] == best.params["model.label_smoothing"]
    assert cfg["model"]["model_name"] == "resnet50" and cfg["trainer"]["max_epochs"] == 1


def test_resuming_the_study_adds_trials_until_the_timeout(four_trials, tmp_path, one_thread):
    study_dir, args = four_trials
    # Resume a copy of the journal (the module's other tests read the original).
    (tmp_path / "study").mkdir()
    shutil.copy(study_dir / "journal.log", tmp_path / "study" / "journal.log")
    before = journal(study_dir, "four").trials
    # Building a ResNet50 alone takes longer than 0.5 s: the timeout stops the worker after its first trial.
    study_in_process([*args, "tune.n_trials=3", "tune.timeout=0.5"], tmp_path / "study")
    after = journal(tmp_path / "study", "four").trials
    assert [t.number for t in after] == [0, 1, 2, 3, 4]
    assert [(t.params, t.value) for t in after[:4]] == [(t.params, t.value) for t in before]
    assert after[4].state == TrialState.COMPLETE
    assert (tmp_path / "study" / "trials" / "0004" / "metrics.json").is_file()
    assert len(read_csv(tmp_path / "study" / "trials.csv")) == 5


# ------------------------------------------------------------------------------------------------ pruning
def test_threshold_pruner_prunes_after_the_first_validation(tmp_path, synthetic_root, one_thread):
    # Accuracy never exceeds 1: a floor of 1.01 prunes every trial at its first report.
    args = [
        *train_args(synthetic_root, tmp_path),
        "trainer.max_epochs=3",
        *SPACE,
        "tune/pruner=threshold",
        "tune.pruner.lower=1.01",
        "tune.study_name=pruned",
        "tune.n_trials=2",
        f"tune.storage={tmp_path / 'elsewhere' / 'pruned.journal'}",  # a journal file at a given path
    ]
    study_in_process(args, tmp_path / "study")
    assert not (tmp_path / "study" / "journal.log").exists()
    storage = optuna.storages.JournalStorage(
        JournalFileBackend(str(tmp_path / "elsewhere" / "pruned.journal"))
    )
    trials = optuna.load_study(study_name="pruned", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    for t in trials:
        # Reported once, at epoch 0, and stopped there although max_epochs=3.
        assert list(t.intermediate_values) == [0]
        assert 0.0 <= t.intermediate_values[0] <= 1.0
        assert not (Path(t.user_attrs["run_dir"]) / "metrics.json").exists()
    assert [r["state"] for r in read_csv(tmp_path / "study" / "trials.csv")] == ["PRUNED", "PRUNED"]
    assert not (tmp_path / "study" / BEST_GROUP / f"{BEST_NAME}.yaml").exists(), "no trial completed"


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "tune.space.lr.key=model.optimizer.lrr",
            r"'model.optimizer.lrr' does not exist.*model\.optimizer\.lr\b",
        ),
        (
            "tune.space.label_smoothing.key=model.label_smothing",
            r"model.label_smothing.*model\.label_smoothing",
        ),
        (
            "tune.space.model.categorical.choices=[resnet50,vgg16]",
            r"config group without the option\(s\) \['vgg16'\].*inception_v3",
        ),
        ("tune.space.lr.float.low=0.1", r"tune.space.lr.float=.*not a valid float distribution"),
    ],
)
def test_bad_search_space_is_refused_before_any_trial(tmp_path, synthetic_root, entry, message):
    args = [
        *[a for a in train_args(synthetic_root, tmp_path) if not a.startswith("model=")],
        entry,
        "tune.study_name=bad",
    ]
    with pytest.raises((KeyError, ValueError), match=message):
        study_in_process(args, tmp_path / "study")
    assert not (tmp_path / "study").exists(), "nothing was created"


def test_searched_key_also_given_on_the_command_line_is_refused(tmp_path, synthetic_root):
    args = [
        *train_args(synthetic_root, tmp_path),
        "tune.study_name=both",
    ]  # tiny_overrides sets model=resnet50
    with pytest.raises(ValueError, match=r"model is searched by tune.space and also set.*model=resnet50"):
        study_in_process(args, tmp_path / "study")


def test_a_multi_process_trainer_is_refused(tmp_path, synthetic_root):
    args = [*train_args(synthetic_root, tmp_path), *SPACE, "trainer=ddp_cpu", "tune.study_name=ddp"]
    with pytest.raises(
        ValueError, match=r"one device, but trainer.devices=2.*strategy=ddp_spawn.*one worker per"
    ):
        study_in_process(args, tmp_path / "study")
    assert not (tmp_path / "study").exists()


def test_resuming_a_study_that_optimizes_the_other_way_is_refused(tmp_path, synthetic_root):
    (tmp_path / "study").mkdir()
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "study" / "journal.log")))
    optuna.create_study(study_name="loss", storage=storage, direction="minimize")
    args = [*train_args(synthetic_root, tmp_path), *SPACE, "tune.study_name=loss"]  # optimized_mode=max
    with pytest.raises(ValueError, match=r"'loss' .* was created to minimize, but optimized_mode='max'"):
        study_in_process(args, tmp_path / "study")
    assert optuna.load_study(study_name="loss", storage=storage).trials == []


def test_group_choice_keys_are_checked_under_every_choice(tmp_path):
    with configs():
        space = compose(config_name="tune", overrides=["tune.study_name=x"]).tune.space
        params = check_space(parse_space(space), [])
    assert {p.key: p.group for p in params}["model"] is True
    assert {p.key: p.group for p in params}["model.optimizer.lr"] is False


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:////nonexistent-dir/study.db", "sqlite:////nonexistent-dir/study.db"),
        ("postgresql://tuner:secret@127.0.0.1:1/optuna", "postgresql://tuner:***@127.0.0.1:1/optuna"),
    ],
)
def test_unreachable_database_is_refused_before_any_trial(tmp_path, synthetic_root, url, shown):
    if url.startswith("postgresql"):
        pytest.importorskip("psycopg", reason="the postgresql:// case needs the psycopg driver (dev extra)")
    args = [*train_args(synthetic_root, tmp_path), *SPACE, f"tune.storage='{url}'", "tune.study_name=db"]
    with pytest.raises(ConnectionError, match="cannot open the study database") as err:
        study_in_process(args, tmp_path / "study")
    assert shown in str(err.value) and "secret" not in str(err.value)
    assert not (tmp_path / "study" / "trials").exists()


# ------------------------------------------------------------------------------------------------ overrides
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.label_smoothing", 1e-05),
        ("model.label_smoothing", 0.1),
        ("model.freeze_backbone_epochs", 0),
        ("model.freeze_backbone_epochs", 1),  # not `true`: 1 == True in Python
        ("model.channels_last", True),
        ("model.channels_last", None),
        ("model.channels_last", "auto"),
        ("model.channels_last", "1"),  # a string that looks like an int stays a string
        ("model.channels_last", "it's a=b, c"),
    ],
)
def test_a_sampled_value_composes_back_to_itself(key, value):
    param = Param(key=key, distribution=CategoricalDistribution([value]), group=False)
    with configs():
        cfg = compose(config_name="train", overrides=[param.override(value)])
    got = OmegaConf.select(cfg, key)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_each_shipped_pruner_instantiates(choice, expected):
    with configs():
        cfg = compose(config_name="tune", overrides=[f"tune/pruner={choice}", "tune.study_name=x"])
    assert type(instantiate(cfg.tune.pruner)) is expected


# ------------------------------------------------------------------------------------------------ group choices
def test_best_group_choice_is_written_as_a_defaults_override(tmp_path):
    # A study whose best trial chose another model: the file must switch the config group, not set a string.
    study = optuna.create_study(direction="maximize")
    dists = {
        "model": CategoricalDistribution(["resnet50", "inception_v3"]),
        "model.optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
    }
    study.add_trial(
        optuna.trial.create_trial(
            params={"model": "resnet50", "model.optimizer.lr": 0.01}, distributions=dists, value=0.25
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params={"model": "inception_v3", "model.optimizer.lr": 0.002}, distributions=dists, value=0.5
        )
    )
    with configs():
        params = check_space(
            parse_space(compose(config_name="tune", overrides=["tune.study_name=x"]).tune.space), []
        )
        write_results(study, params, ["experiment=demo"], tmp_path)
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=demo",
                f"+{BEST_GROUP}={BEST_NAME}",
                f"hydra.searchpath=[file://{tmp_path}]",
            ],
        )
    assert cfg.model.model_name == "inception_v3" and cfg.data.preset == "inception"
    assert cfg.model.optimizer.lr == 0.002
    assert cfg.data.crop == 80, "the demo experiment still adapts its input size to the chosen model"


# ------------------------------------------------------------------------------------------------ workers
@pytest.mark.slow
def test_two_worker_processes_share_one_journal_and_lose_no_trial(tmp_path, synthetic_root):
    study_dir = tmp_path / "outputs" / "tune" / "shared"
    args = [
        *train_args(synthetic_root, tmp_path),
        *SPACE,
        "tune.study_name=shared",
        "tune.n_trials=2",
    ]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "caltech_cam.tune", *args, f"tune.worker={i}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 0, out[-4000:]
    trials = journal(study_dir, "shared").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Each worker ran its own two trials, in its own run directory.
    workers_of = [t.user_attrs["worker"] for t in trials]
    assert len(set(workers_of)) == 2 and all(workers_of.count(w) == 2 for w in workers_of)
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4
    for out in outputs:
        assert len(re.findall(r"Trial \d+ COMPLETE val/acc_top1=", out)) == 2
    assert len(read_csv(study_dir / "trials.csv")) == 4


@pytest.mark.slow
def test_slurm_array_tasks_share_one_study(slurm_cluster, tmp_path, synthetic_root):
    """`sbatch --array=0-1` running the same tune command: each task is a worker (tune.worker = the array index)
    on one journal, and the study holds every task's trials."""
    from tests.helpers.slurm_cluster import wait_for

    study_dir = tmp_path / "outputs" / "tune" / "array"
    args = [*train_args(synthetic_root, tmp_path), *SPACE, "tune.study_name=array", "tune.n_trials=1"]
    command = shlex.join([sys.executable, "-m", "caltech_cam.tune", *args])
    job = slurm_cluster.run(
        "sbatch", "--parsable", "--array=0-1", f"--partition={slurm_cluster.partition}", "--ntasks=1",
        "--cpus-per-task=1", f"--chdir={tmp_path}", f"--output={tmp_path}/array-%a.log",
        f"--wrap=OMP_NUM_THREADS=1 {command}",
    ).strip()  # fmt: skip
    wait_for(lambda: not [j for j in slurm_cluster.jobs() if j.startswith(f"{job}_")], 400, "the array job")
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("array-*.log")))
    trials = journal(study_dir, "array").trials
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials), logs[-4000:]
    # One trial per array task: two worker processes, seeded apart by their array index (tune.worker defaults to
    # SLURM_ARRAY_TASK_ID), so their first draws differ; the same seed would draw the same point twice.
    assert len({t.user_attrs["worker"] for t in trials}) == 2, logs[-4000:]
    assert trials[0].params != trials[1].params
    assert len({t.user_attrs["run_dir"] for t in trials}) == 2
    assert len(read_csv(study_dir / "trials.csv")) == 2


def test_a_trial_folder_left_by_another_study_is_not_resumed(tmp_path, synthetic_root, one_thread):
    """A study restarted with a fresh storage under the same name would train trial 0 into the old trial 0's folder,
    and train() would resume that run's last.ckpt (its optimizer, its best score): refused instead."""
    study_dir = tmp_path / "study"
    old = study_dir / "trials" / "0000" / "checkpoints"
    old.mkdir(parents=True)
    (old / "last.ckpt").write_bytes(b"an earlier study's run")
    args = [*train_args(synthetic_root, tmp_path), *SPACE, "tune.study_name=again", "tune.n_trials=1"]
    with pytest.raises(FileExistsError, match=r"trial 0's folder .*0000 already holds a run"):
        study_in_process(args, study_dir)
    assert (old / "last.ckpt").read_bytes() == b"an earlier study's run"


@pytest.mark.slow
def test_a_multirun_of_the_tuner_is_refused(tmp_path, synthetic_root):
    proc = subprocess.run(
        [sys.executable, "-m", "caltech_cam.tune", "-m", *train_args(synthetic_root, tmp_path), "tune.worker=0,1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "with -m each job would open its own study" in proc.stderr, proc.stderr[-3000:]
    assert not list(tmp_path.rglob("journal.log"))
