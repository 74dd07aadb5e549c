"""Feed the trial's metric to its pruner after every validation epoch."""

from __future__ import annotations

import lightning as L
import optuna


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
