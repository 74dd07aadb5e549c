"""What a run leaves behind: `metrics.json` (atomically) and the summary lines printed for the user."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor

from caltech_cam.utils.files import write_text


def training_run_dir(ckpt_path: Path) -> Path | None:
    """`<run dir>` for `<run dir>/checkpoints/x.ckpt` when it holds the run's Hydra config."""
    run = ckpt_path.resolve().parent.parent
    return run if (run / ".hydra" / "config.yaml").is_file() else None


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a Lightning metrics dict as plain floats, sorted by name."""
    return {k: float(v) for k, v in sorted(metrics.items()) if isinstance(v, (int, float, Tensor))}


def viewing_hint(loggers: Sequence[Any], output_dir: Path) -> str:
    """How to look at a run's pictures and curves: one line per logger, with its viewer or its files."""
    if not loggers:
        return "No logger was configured (logger=none): pictures were not kept; add logger=tensorboard to see them."
    return "\n".join(_viewer_line(logger, output_dir) for logger in loggers)


def _viewer_line(logger: Any, output_dir: Path) -> str:
    kinds = {base.__name__ for base in type(logger).__mro__}
    if isinstance(logger, TensorBoardLogger):
        return f"Pictures and curves: tensorboard --logdir {output_dir}"
    if isinstance(logger, CSVLogger):
        folder = Path(logger.log_dir)
        return f"CSV: curves in {folder / 'metrics.csv'}, pictures in {folder / 'images'}/<tag>/"
    if "MLFlowLogger" in kinds:
        uri = logger._tracking_uri  # what the logger was given (no public getter in Lightning 2.6)
        if uri.startswith(("http://", "https://")):
            return f"MLflow: {uri}/#/experiments/{logger.experiment_id}/runs/{logger.run_id}"
        return f"MLflow: mlflow ui --backend-store-uri {uri} (run {logger.run_id})"
    if "WandbLogger" in kinds:
        run = logger.experiment
        if getattr(run, "offline", False):
            return f"W&B (offline): wandb sync {Path(run.dir).parent}"
        return f"W&B: {run.url}"
    return f"{type(logger).__name__}: curves in its own viewer (it keeps no pictures)"


def write_results(
    results: dict[str, Any], output_dir: Path, stages: tuple[str, ...], footer: str | None = None
) -> None:
    """`<output_dir>/metrics.json` (atomically), and the val/test numbers of `stages` printed for the user,
    then `footer` as the last line (e.g. `viewing_hint`)."""
    write_text(output_dir / "metrics.json", json.dumps(results, indent=2, default=str))
    lines = [f"Run directory: {output_dir}"]
    for stage in stages:
        for key, value in results.get(stage, {}).items():
            if key.startswith(("val/", "test/")):
                lines.append(f"  {key:<22} {value:.4f}")
    if results.get("best_checkpoint") is not None:
        lines.append(f"  best checkpoint: {results['best_checkpoint'] or '(none)'}")
    if footer:
        lines.append(footer)
    print("\n".join(lines), flush=True)
