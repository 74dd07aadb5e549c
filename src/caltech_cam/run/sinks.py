"""Where a run's pictures and scalars go: one seam in front of every Lightning logger.

`Sinks.of(loggers)` puts one sink in front of each logger. `Sinks.image(tag, grid, step)` takes one uint8
(C, H, W) picture per tag and step, and each logger encodes it once, its own way:

| logger | pictures | scalars |
|---|---|---|
| `TensorBoardLogger` | `experiment.add_image` (the run's one event file) | `add_scalar` |
| `CSVLogger` | `<log_dir>/images/<tag>/step_<step>.png`, one folder per tag | its `metrics.csv` |
| `MLFlowLogger` | `MlflowClient.log_image(run_id, image, key=tag, step=step)` | `log_metrics` |
| `WandbLogger` | `WandbLogger.log_image(key=tag, images=[image], step=step)` | `log_metrics` |
| any other logger | none (`Sinks.without_pictures` names it) | `log_metrics` |

A sink touches its logger's `experiment` only when something is written (global rank 0), never when built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from torch import Tensor

from caltech_cam.utils.files import write_atomically

# The loggers that need a package this project does not install by default: class name -> (module, pip extra).
OPTIONAL_LOGGERS = {"MLFlowLogger": ("mlflow", "mlflow"), "WandbLogger": ("wandb", "wandb")}


def check_logger_packages(targets: Mapping[str, str]) -> None:
    """Refuse a configured logger (name -> `_target_`) whose package is missing, naming the pip extra."""
    for name, target in targets.items():
        needed = OPTIONAL_LOGGERS.get(target.rsplit(".", 1)[-1])
        if needed is not None and importlib.util.find_spec(needed[0]) is None:
            raise ModuleNotFoundError(
                f"logger.{name} ({target}) needs the package {needed[0]!r}, which is not installed: "
                f"pip install 'caltech_cam[{needed[1]}]'"
            )


def _hwc(grid: Tensor) -> np.ndarray:
    """uint8 (C, H, W) on the host -> (H, W, C) numpy, or (H, W) for one channel (what PIL and W&B take)."""
    array = grid.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def tag_path(tag: str) -> PurePosixPath:
    """`tag` as a relative folder (`gradcam/layer1` -> gradcam/layer1); a part that could leave the folder is
    refused."""
    if "\\" in tag or any(part in ("", ".", "..") for part in tag.split("/")):
        raise ValueError(f"picture tag {tag!r} cannot name a folder (expected e.g. 'gradcam/layer1')")
    return PurePosixPath(tag)


class _Sink:
    """Scalars through the logger's `log_metrics`; no pictures."""

    pictures = False

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def image(self, tag: str, grid: Tensor, step: int) -> None:
        pass

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.logger.log_metrics(dict(values), step=step)

    def flush(self) -> None:
        pass


class TensorBoardSink(_Sink):
    """The logger's own SummaryWriter: pictures and scalars in the run's one event file."""

    pictures = True

    def image(self, tag: str, grid: Tensor, step: int) -> None:
        self.logger.experiment.add_image(tag, grid, step, dataformats="CHW")

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        writer = self.logger.experiment
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.logger.experiment.flush()


class CSVSink(_Sink):
    """Scalars in the logger's metrics.csv; pictures as PNG files, `<log_dir>/images/<tag>/step_<step>.png`."""

    pictures = True

    def folder(self, tag: str) -> Path:
        return Path(self.logger.log_dir) / "images" / tag_path(tag)

    def image(self, tag: str, grid: Tensor, step: int) -> None:
        from PIL import Image

        with write_atomically(self.folder(tag) / f"step_{step:06d}.png", mode="wb") as handle:
            Image.fromarray(_hwc(grid)).save(handle, format="PNG")

    def flush(self) -> None:
        self.logger.save()


class MLflowSink(_Sink):
    """`MlflowClient.log_image` into the logger's run: stored as `images/<tag with ~ for />+step+<step>+...png`."""

    pictures = True

    def image(self, tag: str, grid: Tensor, step: int) -> None:
        client = self.logger.experiment
        client.log_image(self.logger.run_id, _hwc(grid), key=tag, step=step)


class WandbSink(_Sink):
    """`WandbLogger.log_image`: a `wandb.Image` under the tag (offline: the run folder's files/media/images/)."""

    pictures = True

    def image(self, tag: str, grid: Tensor, step: int) -> None:
        self.logger.log_image(key=tag, images=[_hwc(grid)], step=step)


def sink_for(logger: Logger) -> _Sink:
    """The sink in front of `logger` (matched by class name for the optional loggers: no import needed)."""
    if isinstance(logger, TensorBoardLogger):
        return TensorBoardSink(logger)
    if isinstance(logger, CSVLogger):
        return CSVSink(logger)
    kinds = {type(logger).__name__, *(base.__name__ for base in type(logger).__mro__)}
    if "MLFlowLogger" in kinds:
        return MLflowSink(logger)
    if "WandbLogger" in kinds:
        return WandbSink(logger)
    return _Sink(logger)


class Sinks:
    """Every logger's sink; one call writes a picture or a set of scalars to all of them."""

    def __init__(self, sinks: Sequence[_Sink]) -> None:
        self.sinks = list(sinks)

    @classmethod
    def of(cls, loggers: Sequence[Logger]) -> Sinks:
        return cls([sink_for(logger) for logger in loggers])

    def __bool__(self) -> bool:
        return bool(self.sinks)

    @property
    def without_pictures(self) -> list[str]:
        """The class names of the loggers that keep scalars only."""
        return [type(s.logger).__name__ for s in self.sinks if not s.pictures]

    def image(self, tag: str, grid: Tensor, step: int) -> None:
        """One uint8 (C, H, W) picture (C = 1 or 3) at `step`, read to the host once for every logger."""
        if grid.dtype != torch.uint8:
            raise TypeError(f"picture {tag!r}: expected a uint8 tensor, got {grid.dtype}")
        if grid.ndim != 3 or grid.shape[0] not in (1, 3):
            raise ValueError(f"picture {tag!r}: expected (C, H, W) with C = 1 or 3, got {tuple(grid.shape)}")
        host = grid.detach().cpu()
        for sink in self.sinks:
            if sink.pictures:
                sink.image(tag, host, step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if values:
            for sink in self.sinks:
                sink.scalars(values, step)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()
