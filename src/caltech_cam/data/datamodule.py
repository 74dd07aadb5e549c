"""From a Caltech-layout folder to batches: the dataset and the LightningDataModule that builds it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from caltech_cam.config import plain
from caltech_cam.data.check import BAD_IMAGE_POLICIES, FileCheck, cache_file_for, check_images, enforce_policy
from caltech_cam.data.decode import MAX_PIXELS, load_rgb
from caltech_cam.data.index import DatasetIndex, DatasetNotFoundError, index_root, resolve_root
from caltech_cam.data.presets import Preset, make_preset
from caltech_cam.data.splits import (
    MANIFEST_NAME,
    SPLITS,
    ManifestRow,
    SplitConfig,
    duplicate_groups,
    make_split,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from caltech_cam.data.synthetic import ensure_synthetic, requested_params
from caltech_cam.distributed import eval_sampler


class CaltechDataset(Dataset):
    """Image files with labels; ``__getitem__`` decodes to RGB and applies ``transform``.

    Holds only paths, ints and a transform (a torchvision ``Compose``): it pickles into spawned workers.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        transform: Callable[[Tensor], Tensor] | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.labels = [int(y) for y in labels]
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image = self.raw(i)
        return (self.transform(image) if self.transform is not None else image), self.labels[i]

    def raw(self, i: int) -> Tensor:
        """The untransformed image: uint8 RGB (3, H, W) at its file's size."""
        return load_rgb(self.paths[i], max_pixels=self.max_pixels)


class CaltechDataModule(L.LightningDataModule):
    """Caltech-256 (or the synthetic stand-in) as train/val/test loaders.

    ``prepare_data`` fetches what is missing (generates the synthetic set; downloads with ``download=True``)
    and runs the decode check (hash + full decode of every file, cached in ``cache_dir``), so a bad file
    stops the run -- or is dropped and reported with ``bad_images="skip"`` -- before training starts.
    ``setup`` splits (or reuses ``split_file``), writes ``split_manifest.csv`` to ``output_dir`` and builds
    the datasets. All arguments are plain values (Hydra's ``data`` group); nested mappings may be DictConfigs.
    """

    def __init__(
        self,
        root: str | Path,
        preset: str = "resnet",
        resize: int | None = None,
        crop: int | None = None,
        random_resized_crop: bool = False,
        hflip: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        split: Mapping[str, Any] | None = None,
        split_file: str | Path | None = None,
        bad_images: str = "error",
        download: bool = False,
        synthetic: Mapping[str, Any] | None = None,
        seed: int = 0,
        output_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        max_pixels: int = MAX_PIXELS,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"data.bad_images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.root = Path(root)
        self.preset: Preset = make_preset(
            preset, resize=resize, crop=crop, random_resized_crop=random_resized_crop, hflip=hflip
        )
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.split_config = SplitConfig.from_mapping(plain(split))
        self.split_file = Path(split_file) if split_file else None
        self.bad_images = bad_images
        self.download = bool(download)
        self.synthetic: dict[str, Any] | None = plain(synthetic) or None
        self.seed = int(seed)
        self.output_dir = Path(output_dir) if output_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_pixels = int(max_pixels)
        self.progress = bool(progress)
        self._index: DatasetIndex | None = None
        self._checks: dict[str, FileCheck] | None = None
        self._rows: list[ManifestRow] | None = None
        self._summary: dict[str, Any] = {}
        self._warnings: list[str] = []
        self.manifest_path: Path | None = None
        self.train_dataset: CaltechDataset | None = None
        self.val_dataset: CaltechDataset | None = None
        self.test_dataset: CaltechDataset | None = None

    # -- what the model needs before setup --------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self._ensure_index().num_classes

    @property
    def class_names(self) -> list[str]:
        """Display names in label order (``ak47``, ..., ``clutter``)."""
        return self._ensure_index().class_names

    # -- Lightning hooks ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Fetch what is missing and decode-check every file (rank 0; results cached in ``cache_dir``)."""
        self._checked()

    def setup(self, stage: str | None = None) -> None:
        if self._rows is not None:
            return
        index = self._ensure_index()
        checks = self._checked()
        bad = enforce_policy(index, checks, self.bad_images)
        usable = [f for f in index.files if checks[f.path].ok]
        hashes = {f.path: checks[f.path].sha1 for f in usable}
        warnings = [*self._warnings, *index.warnings]
        if self.split_file is not None:
            rows = read_manifest(self.split_file)
            warnings += validate_manifest(rows, usable, hashes, self.split_file)
        else:
            rows = make_split(usable, hashes, self.split_config, self.seed, index.class_dirs)
        if self.output_dir is not None and self._is_global_zero():
            self.manifest_path = write_manifest(rows, self.output_dir / MANIFEST_NAME)

        for split in SPLITS:
            chosen = [r for r in rows if r.split == split]
            dataset = CaltechDataset(
                [index.abspath(r.path) for r in chosen],
                [r.label for r in chosen],
                self.preset.transform(train=split == "train"),
                self.max_pixels,
            )
            setattr(self, f"{split}_dataset", dataset)
        self._rows = rows
        self._summary = {
            "root": str(index.root),
            "classes": index.num_classes,
            "class_names": index.class_names,
            "images": len(index.files),
            "splits": {s: sum(r.split == s for r in rows) for s in SPLITS},
            "split_source": str(self.split_file) if self.split_file else self.split_config.mode,
            "skipped": [{"path": s.path, "reason": s.reason} for s in index.skipped],
            "bad_images": [{"path": p, "error": e} for p, e in bad],
            "duplicate_groups": duplicate_groups(usable, hashes),
            "warnings": warnings,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
        }

    def summary(self) -> dict[str, Any]:
        """After ``setup``: classes, per-split counts, skipped files with reasons, bad images, duplicate groups,
        warnings (e.g. counts that differ from the released Caltech-256), and the manifest's path."""
        if not self._summary:
            raise RuntimeError("call setup() before summary()")
        return self._summary

    def train_dataloader(self) -> DataLoader:
        # Drop the last incomplete batch: one of size 1 breaks BatchNorm in train mode (1x1 maps late in the net).
        return self._loader(
            self.train_dataset, shuffle=True, drop_last=len(self.train_dataset) > self.batch_size
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False, drop_last=False, every_image_once=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False, drop_last=False, every_image_once=True)

    # -- internals ---------------------------------------------------------------------------------------
    def _loader(
        self, dataset: CaltechDataset, shuffle: bool, drop_last: bool, every_image_once: bool = False
    ) -> DataLoader:
        # Evaluation under DDP: each rank scores its own shard and no image twice (no padding to equal shards).
        sampler = eval_sampler(dataset, getattr(self, "trainer", None)) if every_image_once else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
        )

    def _materialize(self) -> None:
        """Make the root exist: generate the synthetic set, or download Caltech-256 when asked to."""
        if self.synthetic is not None:
            info = ensure_synthetic(self.root, **self.synthetic)
            if info.params != requested_params(**self.synthetic):
                self._warnings.append(
                    f"the synthetic set at {self.root} was made with {info.params}, not the configured "
                    f"{requested_params(**self.synthetic)}; using it as it is (delete the folder to regenerate)"
                )
            return
        try:
            resolve_root(self.root)
        except DatasetNotFoundError:
            if not self.download:
                raise
            from torchvision.datasets import Caltech256

            # Lands in <root>/caltech256/256_ObjectCategories, which index_root accepts.
            Caltech256(str(self.root), download=True)

    def _ensure_index(self) -> DatasetIndex:
        if self._index is None:
            self._materialize()
            self._index = index_root(self.root)
        return self._index

    def _checked(self) -> dict[str, FileCheck]:
        if self._checks is None:
            index = self._ensure_index()
            cache = cache_file_for(self.cache_dir, index.root, self.max_pixels) if self.cache_dir else None
            self._checks = check_images(
                index,
                cache_file=cache,
                num_threads=max(1, self.num_workers),
                progress=self.progress,
                max_pixels=self.max_pixels,
            )
        return self._checks

    def _is_global_zero(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is None or trainer.is_global_zero
