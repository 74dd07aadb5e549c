"""Resume a run from its own directory, unasked: a requeued SLURM job (preempted or out of time) lands in the same
run directory and continues from its ``checkpoints/last.ckpt`` with its ``split_manifest.csv``.

The same holds for any re-run into an existing run directory (``hydra.run.dir=<old run>``). An explicit
``ckpt_path`` or ``data.split_file`` always wins.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

from omegaconf import DictConfig, open_dict

from caltech_cam.data import MANIFEST_NAME
from caltech_cam.run.results import training_run_dir

log = logging.getLogger(__name__)


def last_checkpoint_path(cfg: DictConfig) -> Path | None:
    """Where `callbacks.last_checkpoint` writes its rolling checkpoint (`<dirpath>/<filename>.ckpt`), or None when
    that callback is absent or disabled."""
    node = (cfg.get("callbacks") or {}).get("last_checkpoint")
    if not node or not node.get("enabled", True) or not node.get("dirpath"):
        return None
    return Path(node.dirpath) / f"{node.get('filename') or 'last'}.ckpt"


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint that is not a complete torch zip archive (e.g. cut short by a SIGKILL mid-write)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a complete checkpoint (torch zip archive); it was probably cut short while being "
            "written. Delete it to restart this run from scratch, or pass ckpt_path=<another checkpoint>."
        )


def resume_checkpoint(cfg: DictConfig) -> tuple[str | None, str | None]:
    """`(ckpt_path, split_file)` to start this run with: the config's own values when set; otherwise the run
    directory's last checkpoint and split manifest when they exist (a requeued or re-run job), or the split of the
    run a given `ckpt_path` belongs to."""
    ckpt = cfg.get("ckpt_path")
    split = cfg.data.get("split_file")
    if ckpt is None:
        last = last_checkpoint_path(cfg)
        if last is not None and last.is_file():
            check_checkpoint(last)
            ckpt = str(last)
    if split is None:
        # This run directory's own split (a requeued or re-run job: a fresh run writes the file itself), else the
        # split of the run an explicit ckpt_path comes from: resuming must not draw a new split.
        runs = [Path(cfg.paths.output_dir)]
        if ckpt is not None and (origin := training_run_dir(Path(ckpt))) is not None:
            runs.append(origin)
        split = next((str(run / MANIFEST_NAME) for run in runs if (run / MANIFEST_NAME).is_file()), None)
    return ckpt, split


def apply_resume(cfg: DictConfig) -> None:
    """Fill `ckpt_path` and `data.split_file` from the run directory (see `resume_checkpoint`), logging it."""
    ckpt, split = resume_checkpoint(cfg)
    restarts = os.environ.get("SLURM_RESTART_COUNT")
    attempt = f" (SLURM restart {restarts})" if restarts else ""
    with open_dict(cfg):
        if ckpt != cfg.get("ckpt_path"):
            cfg.ckpt_path = ckpt
            log.info("Resuming from %s found in the run directory%s", ckpt, attempt)
        if split != cfg.data.get("split_file"):
            cfg.data.split_file = split
            log.info("Reusing the split of %s found in the run directory%s", split, attempt)
