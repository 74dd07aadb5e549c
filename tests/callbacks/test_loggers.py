"""The callback's pictures and scalars through `run.sinks` to every logger, read back from what each one keeps:
the CSV logger's PNG files and metrics.csv, a real `mlflow server`, W&B's offline run folder. The oracle is what
TensorBoard got in the same run (its pictures are the callback's grids, PNG-encoded by TensorBoard)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image

from caltech_cam.callbacks.grad_cam import GradCAMLogger
from caltech_cam.run.build import build_datamodule, build_module, check_loggers
from caltech_cam.run.results import viewing_hint
from caltech_cam.run.sinks import Sinks, tag_path
from tests.callbacks.test_grad_cam import events_of
from tests.callbacks.test_tensorboard_http import free_port, stop
from tests.helpers import compose_train, require, tiny_overrides

TAGS = ["gradcam/layer1", "gradcam/layer2", "gradcam/layer3", "gradcam/layer4", "gradcam/overview"]


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def tensorboard_pictures(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, float], int]:
    """The last picture of each tag, the last value of each gradcam/ scalar, and the step, from the one event file."""
    (events,) = events_of(folder)
    pictures = {tag: decoded(events.Images(tag)[-1].encoded_image_string) for tag in events.Tags()["images"]}
    scalars = {t: events.Scalars(t)[-1].value for t in events.Tags()["scalars"] if t.startswith("gradcam/")}
    return pictures, scalars, events.Images("gradcam/overview")[-1].step


def validate(tmp_path: Path, root: Path, *loggers) -> None:
    """One validation (3 probe images at 64 px, the synthetic set's boxes) with the callback and `loggers`."""
    cfg = compose_train(tiny_overrides(root, tmp_path))
    cfg.paths.output_dir = str(tmp_path / "built")
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=list(loggers),
        callbacks=[GradCAMLogger(num_images=3, strict=True)],
        enable_progress_bar=False,
        limit_val_batches=1,
    )
    trainer.validate(module, datamodule=datamodule)


# ------------------------------------------------------------------------------------------------ the seam
def test_the_seam_refuses_what_no_logger_can_encode():
    sinks = Sinks([])
    with pytest.raises(TypeError, match=r"'gradcam/x'.*uint8.*float32"):
        sinks.image("gradcam/x", torch.zeros(3, 4, 4), 0)
    with pytest.raises(ValueError, match=r"\(C, H, W\).*\(4, 4\)"):
        sinks.image("gradcam/x", torch.zeros(4, 4, dtype=torch.uint8), 0)
    assert tag_path("gradcam/blocks.11.norm1").parts == ("gradcam", "blocks.11.norm1")
    for tag in ("../x", "/abs", "a//b", "a\\b", ""):
        with pytest.raises(ValueError, match="cannot name a folder"):
            tag_path(tag)


def test_a_logger_whose_package_is_missing_names_the_extra(monkeypatch):
    cfg = compose_train(["logger=[tensorboard,mlflow,wandb]"])
    monkeypatch.setitem(sys.modules, "mlflow", None)  # find_spec then answers None: "not installed"
    with pytest.raises(ModuleNotFoundError, match=r"logger\.mlflow .*pip install 'caltech_cam\[mlflow\]'"):
        check_loggers(cfg.logger)
    monkeypatch.delitem(sys.modules, "mlflow")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'caltech_cam\[wandb\]'"):
        check_loggers(cfg.logger)


def test_the_logger_configs_keep_everything_under_the_run_directory(tmp_path):
    cfg = compose_train(["logger=[many,mlflow,wandb]", f"paths.output_dir={tmp_path}/run"])
    assert sorted(cfg.logger) == ["csv", "mlflow", "tensorboard", "wandb"]
    assert cfg.logger.csv.save_dir == f"{tmp_path}/run"
    # sqlite:/// + an absolute path: four slashes, as SQLAlchemy reads an absolute file.
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path}/run/mlflow.db"
    assert cfg.logger.mlflow.artifact_location == f"{tmp_path}/run/mlruns"
    assert cfg.logger.wandb.offline is True and cfg.logger.wandb.save_dir == f"{tmp_path}/run"


def test_the_viewing_hint_has_a_line_per_logger(tmp_path):
    loggers = [
        TensorBoardLogger(str(tmp_path), name="", version=""),
        CSVLogger(str(tmp_path), name="csv", version=""),
    ]
    hint = viewing_hint(loggers, tmp_path).splitlines()
    assert hint == [
        f"Pictures and curves: tensorboard --logdir {tmp_path}",
        f"CSV: curves in {tmp_path}/csv/metrics.csv, pictures in {tmp_path}/csv/images/<tag>/",
    ]


# ------------------------------------------------------------------------------------------------ CSV
def test_csv_files_hold_what_tensorboard_got(tmp_path, synthetic_root):
    validate(
        tmp_path,
        synthetic_root,
        TensorBoardLogger(str(tmp_path / "tb"), name="", version=""),
        CSVLogger(str(tmp_path), name="csv", version=""),
    )
    pictures, scalars, step = tensorboard_pictures(tmp_path / "tb")
    assert sorted(pictures) == TAGS
    folder = tmp_path / "csv" / "images"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert files == [f"{tag}/step_{step:06d}.png" for tag in TAGS]  # one folder per tag, one file per step
    for tag, expected in pictures.items():
        np.testing.assert_array_equal(decoded((folder / tag / f"step_{step:06d}.png").read_bytes()), expected)
    with (tmp_path / "csv" / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("gradcam/average_drop/layer4")]
    assert len(rows) == 1 and int(rows[0]["step"]) == step
    assert {t for t in scalars} <= set(rows[0]), "every gradcam scalar is a column"
    for tag, value in scalars.items():  # TensorBoard keeps float32
        assert float(rows[0][tag]) == pytest.approx(value, rel=1e-6, abs=1e-7)


# ------------------------------------------------------------------------------------------------ W&B
@pytest.mark.slow  # W&B starts its own service process
def test_wandb_offline_run_folder_holds_the_pictures(tmp_path, synthetic_root):
    require("wandb", "wandb")
    from lightning.pytorch.loggers import WandbLogger

    wandb_logger = WandbLogger(project="caltech_cam", save_dir=str(tmp_path), offline=True)
    try:
        validate(
            tmp_path,
            synthetic_root,
            TensorBoardLogger(str(tmp_path / "tb"), name="", version=""),
            wandb_logger,
        )
        run_dir = Path(wandb_logger.experiment.dir).parent
    finally:
        wandb_logger.experiment.finish()
    pictures, _scalars, _step = tensorboard_pictures(tmp_path / "tb")
    assert run_dir.parent == tmp_path / "wandb" and run_dir.name.startswith("offline-run-")
    media = run_dir / "files" / "media" / "images"
    found = {p.relative_to(media).as_posix().rsplit("_", 2)[0]: p for p in media.rglob("*.png")}
    assert sorted(found) == TAGS
    for tag, expected in pictures.items():
        np.testing.assert_array_equal(decoded(found[tag].read_bytes()), expected)
    assert list(run_dir.glob("run-*.wandb")), "the offline run's record file, for `wandb sync`"


# ------------------------------------------------------------------------------------------------ MLflow
def mlflow_command() -> list[str]:
    script = Path(sys.executable).parent / "mlflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 (its own sqlite store and artifact folder); yields its URL; stopped by
    its PID afterwards, its process group (the web workers) with it."""
    require("mlflow", "mlflow")
    log_file = tmp_path / "mlflow-server.log"
    proc = None
    try:
        with log_file.open("wb") as log:
            for _attempt in range(3):  # another process may take the free port between the probe and the bind
                port = free_port()
                proc = subprocess.Popen(
                    [
                        *mlflow_command(),
                        "server",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--workers",
                        "1",
                        "--backend-store-uri",
                        f"sqlite:///{tmp_path}/server.db",
                        "--artifacts-destination",
                        str(tmp_path / "server-artifacts"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                url = f"http://127.0.0.1:{port}"
                if wait_for_health(url, proc, timeout=120) or proc.poll() is None:
                    break
        assert proc is not None and proc.poll() is None, log_file.read_text(errors="replace")[-3000:]
        yield url
    finally:
        if proc is not None and proc.poll() is None:
            stop(proc)


def wait_for_health(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.read().strip() == b"OK":
                    return True
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.5)
    return False


@pytest.mark.slow  # a real MLflow server in a subprocess, and a 1-epoch train
def test_mlflow_server_serves_the_callbacks_pictures(mlflow_server, tmp_path, synthetic_root):
    from mlflow.tracking import MlflowClient

    from caltech_cam.train import train

    extra = [
        "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri={mlflow_server}",
        "logger.mlflow.artifact_location=null",  # the server's artifact store
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.num_sanity_val_steps=0",
        "test=false",
    ]
    cfg = compose_train([*tiny_overrides(synthetic_root, tmp_path), *extra])
    cfg.paths.output_dir = str(tmp_path / "run")
    train(cfg)
    pictures, scalars, step = tensorboard_pictures(tmp_path / "run" / "tensorboard")

    client = MlflowClient(tracking_uri=mlflow_server)
    (experiment,) = [e for e in client.search_experiments() if e.name == "train"]
    (run,) = client.search_runs([experiment.experiment_id])
    stored = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    # images/<tag with / as ~>+step+<step>+timestamp+<ms>+<uuid>.png (and a compressed .webp beside it)
    full = {p.split("/", 1)[1].split("+")[0].replace("~", "/"): p for p in stored if p.endswith(".png")}
    assert sorted(full) == TAGS
    assert all(f"+step+{step}+" in p for p in full.values())
    downloads = tmp_path / "downloaded"
    for tag, expected in pictures.items():
        local = client.download_artifacts(run.info.run_id, full[tag], str(downloads))
        np.testing.assert_array_equal(decoded(Path(local).read_bytes()), expected)
    for tag, value in scalars.items():
        (point,) = client.get_metric_history(run.info.run_id, tag)
        assert point.step == step and point.value == pytest.approx(value, rel=1e-6, abs=1e-7)
