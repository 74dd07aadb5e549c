"""``python -m caltech_cam.prepare``: fetch pretrained weights, then index, decode-check, split and summarize the
configured dataset: everything a run needs from the network or from a full pass over the files, done once, before
any (possibly offline, possibly many-rank) training job starts.

Writes ``split_manifest.csv`` (reusable as ``data.split_file=...``) and ``data_summary.json`` into the run
directory. With ``data.cache=uint8`` it also builds the uint8 cache at the preset's resize (``data.resize``, else
256; pass the size training will use, e.g. ``data.resize=64`` for the demo) and prints where it is. Exits non-zero when ``data.bad_images=error`` meets an undecodable file (Hydra reports the error).
``weights=[resnet50,inception_v3]`` puts those models' ImageNet weights into the torch hub cache; ``~data``
skips the data.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from caltech_cam.data import CaltechDataModule, format_summary
from caltech_cam.models import get_spec
from caltech_cam.models.weights import prefetch
from caltech_cam.run.config import config_dir, register_resolvers
from caltech_cam.utils.files import write_text

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="prepare")
def main(cfg: DictConfig) -> None:
    for name in cfg.get("weights") or []:
        spec = get_spec(name)
        if spec.weights is None:
            raise ValueError(
                f"weights=[{name}]: {name} has no pretrained weights to fetch (it trains from scratch)."
            )
        path = prefetch(spec.weights)
        print(f"{name}: {spec.weights} in {path} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)
    if cfg.get("data") is None:
        return
    datamodule: CaltechDataModule = hydra.utils.instantiate(cfg.data, progress=True)
    datamodule.prepare_data()
    datamodule.setup()
    summary = datamodule.summary()
    print(format_summary(summary))
    if summary.get("cache"):
        print(f"uint8 cache ({datamodule.preset.resize} px): {summary['cache']}")
    if datamodule.output_dir is not None:
        write_text(Path(datamodule.output_dir) / "data_summary.json", json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
