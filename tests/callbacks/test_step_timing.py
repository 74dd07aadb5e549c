"""StepTimer: a loader that really sleeps makes a data-bound run; its numbers are read back from TensorBoard files."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from caltech_cam.callbacks import StepTimer
from caltech_cam.callbacks.step_timing import COMPUTE_TAG, FRACTION_TAG, THROUGHPUT_TAG, WAIT_TAG

BATCH = 4
BATCHES = 6  # per epoch
EPOCHS = 2
SKIP = 2


class SleepyItems(Dataset):
    """Each item costs `delay` seconds to "decode": the loader, not the model, sets the pace."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return BATCH * BATCHES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.delay:
            time.sleep(self.delay)
        return torch.full((8,), float(index % 3)), index % 2


class Linear(L.LightningModule):
    """A linear classifier whose step takes at least `delay` seconds (a stand-in for a heavy network)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 2)
        self.delay = delay

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        x, y = batch
        return F.cross_entropy(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def timed_fit(tmp_path: Path, data_delay: float, compute_delay: float) -> dict[str, dict[int, float]]:
    """A real 2-epoch fit with the StepTimer and a TensorBoardLogger; the timing scalars read back by tag/step."""
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="", version=""),
        callbacks=[StepTimer(skip_steps=SKIP)],
        limit_val_batches=0,
        log_every_n_steps=4,  # flushes mid-epoch too
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(SleepyItems(data_delay), batch_size=BATCH, num_workers=0)
    trainer.fit(Linear(compute_delay), loader)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    return {
        tag: {e.step: e.value for e in events.Scalars(tag)}
        for tag in (WAIT_TAG, COMPUTE_TAG, FRACTION_TAG, THROUGHPUT_TAG)
    }


def check_epoch_identities(scalars: dict[str, dict[int, float]]) -> None:
    """Each epoch's fraction and images/s are the per-step values' sums over the steps after the first SKIP."""
    assert sorted(scalars[WAIT_TAG]) == sorted(scalars[COMPUTE_TAG]) == list(range(EPOCHS * BATCHES))
    assert (
        sorted(scalars[FRACTION_TAG])
        == sorted(scalars[THROUGHPUT_TAG])
        == [BATCHES * (e + 1) - 1 for e in range(EPOCHS)]
    )
    for epoch in range(EPOCHS):
        steps = range(epoch * BATCHES + SKIP, (epoch + 1) * BATCHES)
        wait = sum(scalars[WAIT_TAG][s] for s in steps)
        total = wait + sum(scalars[COMPUTE_TAG][s] for s in steps)
        end = BATCHES * (epoch + 1) - 1
        assert math.isclose(scalars[FRACTION_TAG][end], wait / total, rel_tol=1e-5)
        assert math.isclose(scalars[THROUGHPUT_TAG][end], len(steps) * BATCH / total, rel_tol=1e-5)


def hints(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "data-bound" in r.getMessage()]


def test_a_slow_loader_is_data_bound_and_hinted_once(tmp_path, caplog):
    delay = 0.05
    with caplog.at_level(logging.WARNING, logger="caltech_cam.callbacks.step_timing"):
        scalars = timed_fit(tmp_path, data_delay=delay, compute_delay=0.0)
    check_epoch_identities(scalars)
    # Every step's wait holds its batch's loading: BATCH sleeps of `delay`.
    for step, wait in scalars[WAIT_TAG].items():
        assert wait >= BATCH * delay, f"step {step} waited {wait:.4f} s < the loader's {BATCH * delay} s"
    for step, fraction in scalars[FRACTION_TAG].items():
        assert fraction > 0.5, f"epoch ending at step {step}: data-bound fraction {fraction:.3f}"
    (hint,) = hints(caplog)  # both epochs are data-bound: one hint
    assert "data.cache=uint8" in hint and "data.num_workers (now 0)" in hint


def test_a_heavy_step_is_not_data_bound(tmp_path, caplog):
    delay = 0.15  # large against Lightning's own time between steps on a busy machine (~10-20 ms seen)
    with caplog.at_level(logging.WARNING, logger="caltech_cam.callbacks.step_timing"):
        scalars = timed_fit(tmp_path, data_delay=0.0, compute_delay=delay)
    check_epoch_identities(scalars)
    assert min(scalars[COMPUTE_TAG].values()) >= delay
    for step, fraction in scalars[FRACTION_TAG].items():
        assert fraction < 0.2, f"epoch ending at step {step}: data-bound fraction {fraction:.3f}"
    assert hints(caplog) == []


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"skip_steps": -1}, "skip_steps"), ({"hint_threshold": 1.5}, "hint_threshold")]
)
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StepTimer(**kwargs)
