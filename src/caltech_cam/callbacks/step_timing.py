"""`StepTimer`: where each training step's time goes, waiting for data or computing, logged per step and epoch."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.data import extract_batch_size

log = logging.getLogger(__name__)

WAIT_TAG = "timing/data_wait_s"
COMPUTE_TAG = "timing/compute_s"
FRACTION_TAG = "timing/data_bound_fraction"
THROUGHPUT_TAG = "timing/images_per_s"


class _HostClock:
    """Wall time on the host (CPU training: the step's work is done when its hook returns)."""

    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, start: float, end: float, block: bool) -> float | None:
        return end - start


class _CudaClock:
    """CUDA events on the current stream: they time the device's work without stopping the host; an interval is
    read once its end event has completed (`query`), so only `block=True` (once per epoch) waits for the device."""

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: torch.cuda.Event, end: torch.cuda.Event, block: bool) -> float | None:
        if not block and not end.query():
            return None
        end.synchronize()
        return start.elapsed_time(end) / 1000.0


@dataclass
class _Step:
    step: int
    wait: float
    images: int
    counted: bool
    start: Any
    end: Any


class StepTimer(L.Callback):
    """Splits every training step into the time it waited for data and the time it computed (global rank 0).

    - `timing/data_wait_s` (per step): host time from the end of the previous training batch (or the epoch's start,
      or the end of a validation pass) to this batch's start: the loader, the copy to the device and
      `on_after_batch_transfer` (the device augmentation of `data.cache=uint8`). On CUDA the copy and the
      augmentation are queued asynchronously before the start event: the host wait holds only their launch, and
      their GPU time is counted in neither bucket (not yet measured on a GPU).
    - `timing/compute_s` (per step): this batch's start to its end: forward, backward, optimizer step. On CUDA it is
      timed by CUDA events read lazily, so no step synchronizes the device.
    - `timing/data_bound_fraction` (per epoch): Σ wait / Σ (wait + compute) over the epoch's steps after its first
      `skip_steps` (worker start-up, compilation, cuDNN autotuning).
    - `timing/images_per_s` (per epoch): the images of those steps / Σ (wait + compute) of the same steps.

    The first epoch whose fraction exceeds `hint_threshold` logs one warning per run naming `data.cache=uint8` and
    `data.num_workers`. Values reach every logger through `log_metrics`, buffered and written every
    `trainer.log_every_n_steps` steps and at each epoch's end.
    """

    def __init__(self, skip_steps: int = 2, hint_threshold: float = 0.2) -> None:
        super().__init__()
        if skip_steps < 0:
            raise ValueError(f"skip_steps must be >= 0, got {skip_steps}.")
        if not 0.0 < hint_threshold < 1.0:
            raise ValueError(f"hint_threshold must be in (0, 1), got {hint_threshold}.")
        self.skip_steps = skip_steps
        self.hint_threshold = hint_threshold
        self._clock: _HostClock | _CudaClock = _HostClock()
        self._pending: deque[_Step] = deque()
        self._rows: list[tuple[int, float, float]] = []  # (step, wait, compute) resolved, not yet logged
        self._reference = 0.0  # host time the next batch's wait counts from
        self._start: Any = None  # the running batch's start mark, its wait, images and global step
        self._wait = 0.0
        self._images_now = 0
        self._step_now = 0
        self._batch_in_epoch = 0
        self._wait_sum = self._compute_sum = 0.0
        self._images = 0
        self._hinted = False
        self._short_epoch_noted = False

    # ------------------------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock = _CudaClock() if pl_module.device.type == "cuda" else _HostClock()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending.clear()
        self._start = None  # a batch skipped by on_train_batch_start returning -1 never ended
        self._batch_in_epoch = 0
        self._wait_sum = self._compute_sum = 0.0
        self._images = 0
        self._reference = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation pass inside the epoch is neither data wait nor training compute.
        self._reference = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero:
            return
        now = time.perf_counter()
        self._wait = now - self._reference
        self._images_now = extract_batch_size(batch)
        self._step_now = trainer.global_step
        self._start = self._clock.mark()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero or self._start is None:
            return
        end = self._clock.mark()
        counted = self._batch_in_epoch >= self.skip_steps
        self._pending.append(_Step(self._step_now, self._wait, self._images_now, counted, self._start, end))
        self._batch_in_epoch += 1
        self._start = None
        self._resolve(block=False)
        if len(self._rows) >= max(trainer.log_every_n_steps, 1):
            self._flush(trainer)
        self._reference = time.perf_counter()  # after our own bookkeeping: it is no step's compute

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._resolve(block=True)
        self._flush(trainer)
        total = self._wait_sum + self._compute_sum
        if self._images == 0 or total <= 0.0:
            if not self._short_epoch_noted and self._batch_in_epoch:
                log.info(
                    "StepTimer: epoch %d had %d step(s), none after the first skip_steps=%d; no epoch summary.",
                    trainer.current_epoch,
                    self._batch_in_epoch,
                    self.skip_steps,
                )
                self._short_epoch_noted = True
            return
        fraction = self._wait_sum / total
        images_per_s = self._images / total
        # At the epoch's last batch, where Lightning files its own epoch-end scalars.
        self._log(
            trainer, {FRACTION_TAG: fraction, THROUGHPUT_TAG: images_per_s}, max(trainer.global_step - 1, 0)
        )
        if fraction > self.hint_threshold and not self._hinted:
            workers = getattr(trainer.train_dataloader, "num_workers", "?")
            log.warning(
                "Training is data-bound: %.0f%% of epoch %d's step time waited for data (%.1f images/s). Decode "
                "once and augment on the device with data.cache=uint8, and/or raise data.num_workers (now %s).",
                100 * fraction,
                trainer.current_epoch,
                images_per_s,
                workers,
            )
            self._hinted = True

    # ------------------------------------------------------------------------------------------------- helpers
    def _resolve(self, block: bool) -> None:
        """Read the finished steps' compute times in order; on CUDA, without `block`, stop at the first step whose
        end event the device has not reached yet."""
        while self._pending:
            step = self._pending[0]
            compute = self._clock.seconds(step.start, step.end, block)
            if compute is None:
                return
            self._pending.popleft()
            self._rows.append((step.step, step.wait, compute))
            if step.counted:
                self._wait_sum += step.wait
                self._compute_sum += compute
                self._images += step.images

    def _flush(self, trainer: L.Trainer) -> None:
        for step, wait, compute in self._rows:
            self._log(trainer, {WAIT_TAG: wait, COMPUTE_TAG: compute}, step)
        self._rows.clear()

    @staticmethod
    def _log(trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
