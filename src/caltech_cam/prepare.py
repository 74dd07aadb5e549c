"""``python -m caltech_cam.prepare``: index, decode-check, split and summarize the configured dataset.

Writes ``split_manifest.csv`` (reusable as ``data.split_file=...``) and ``data_summary.json`` into the run
directory. Exits non-zero when ``data.bad_images=error`` meets an undecodable file (Hydra reports the error).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from caltech_cam.config import config_dir
from caltech_cam.data import CaltechDataModule, format_summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="prepare")
def main(cfg: DictConfig) -> None:
    datamodule: CaltechDataModule = hydra.utils.instantiate(cfg.data, progress=True)
    datamodule.prepare_data()
    datamodule.setup()
    summary = datamodule.summary()
    print(format_summary(summary))
    if datamodule.output_dir is not None:
        out = Path(datamodule.output_dir) / "data_summary.json"
        out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
