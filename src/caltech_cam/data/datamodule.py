"""From a Caltech-layout folder to batches: the dataset and the LightningDataModule that builds it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from caltech_cam.data.boxes import ImageBoxes
from caltech_cam.data.cache import CachedDataset, cache_folder, check_cache_mode, ensure_cache, open_cache
from caltech_cam.data.check import (
    FileCheck,
    cache_file_for,
    check_images,
    check_policy,
    enforce_policy,
    load_checks,
)
from caltech_cam.data.decode import MAX_PIXELS, load_rgb
from caltech_cam.data.device_aug import finish_preset
from caltech_cam.data.download import download_caltech256, download_folder
from caltech_cam.data.index import ClassFolders, DataNotPreparedError, DatasetIndex, DatasetNotFoundError
from caltech_cam.data.layouts import Layout, get_layout
from caltech_cam.data.presets import Preset, make_preset
from caltech_cam.data.sampler import eval_sampler
from caltech_cam.data.splits import (
    MANIFEST_NAME,
    SPLITS,
    ManifestRow,
    NearDuplicateConfig,
    SplitConfig,
    duplicate_groups,
    large_group_warnings,
    make_split,
    near_duplicate_groups,
    near_duplicate_pairs,
    official_crossings,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from caltech_cam.data.synthetic import ensure_synthetic, load_synthetic, planned_class_dirs, requested_params
from caltech_cam.utils.configs import plain

# Where prepare_data leaves its decode-check verdicts for every rank when data.cache_dir is null.
CHECKS_NAME = "decode_check.tsv"


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


class CaltechDataModule(L.LightningDataModule, ClassFolders):
    """Caltech-256 (or the synthetic stand-in) as train/val/test loaders, following Lightning's data contract.

    - :attr:`class_dirs` (and from it :attr:`num_classes`, :attr:`class_names`) come from a cheap look at the class
      folders (one folder listing, or the synthetic parameters): nothing is generated, downloaded, decoded or
      written, so the model can be built before a Trainer exists, on every rank.
    - :meth:`prepare_data` (one process per node, called by the Trainer) does all the expensive or writing work:
      generates the synthetic set, downloads with ``download=True``, and decode-checks every file (hash + full
      decode + perceptual hash), writing the verdicts to :attr:`checks_file`.
    - :meth:`setup` (every rank) indexes the root, reads those verdicts (it never decodes; a missing or stale
      verdict is a :class:`DataNotPreparedError`), applies ``bad_images``, finds near-duplicates from the cached
      perceptual hashes (``near_duplicates``), builds the split (deterministic from ``seed`` and the files, or
      ``split_file``) and the datasets; global rank 0 writes ``split_manifest.csv`` into ``output_dir`` atomically.
    - ``cache="uint8"``: :meth:`prepare_data` also builds (or checks) the uint8 cache of every usable file at the
      preset's resize (:mod:`caltech_cam.data.cache`, in :attr:`cache_path`), :meth:`setup` opens it read-only,
      the datasets return uint8 (3, R, R), and :meth:`on_after_batch_transfer` runs the rest of the preset on the
      device batch (:meth:`finish_batch`).

    All arguments are plain values (Hydra's ``data`` group); nested mappings may be DictConfigs.
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
        prefetch_factor: int | None = None,
        split: Mapping[str, Any] | None = None,
        split_file: str | Path | None = None,
        near_duplicates: Mapping[str, Any] | None = None,
        bad_images: str = "error",
        download: bool = False,
        synthetic: Mapping[str, Any] | None = None,
        seed: int = 0,
        output_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        max_pixels: int = MAX_PIXELS,
        progress: bool = False,
        cache: str | None = None,
        layout: str = "caltech256",
    ) -> None:
        super().__init__()
        self.layout_name = get_layout(layout).name
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        if prefetch_factor is not None and prefetch_factor < 1:
            raise ValueError(f"data.prefetch_factor must be null or >= 1, got {prefetch_factor}")
        self.root = Path(root)
        self.preset: Preset = make_preset(
            preset, resize=resize, crop=crop, random_resized_crop=random_resized_crop, hflip=hflip
        )
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        # DataLoader refuses a prefetch_factor without workers; null keeps its default (2).
        self.prefetch_factor = int(prefetch_factor) if prefetch_factor and self.num_workers > 0 else None
        self.cache = check_cache_mode(cache)
        self._generators: dict[tuple[torch.device, int], torch.Generator] = {}
        self.split_config = SplitConfig.from_mapping(plain(split))
        if self.split_config.mode == "official" and not self.layout.official:
            raise ValueError(
                f"data.split.mode=official: data.layout={self.layout_name} ships no official split (cub200 does); "
                "use data.split.mode=fractions or per_class"
            )
        self.split_file = Path(split_file) if split_file else None
        self.near_duplicates = NearDuplicateConfig.from_mapping(plain(near_duplicates))
        self.bad_images = check_policy(bad_images)
        self.download = bool(download)
        if self.download and not self.layout.download:
            raise ValueError(
                f"data.download=true: data.layout={layout} has no downloader; put the data under data.root"
            )
        self.synthetic: dict[str, Any] | None = plain(synthetic) or None
        self.seed = int(seed)
        self.output_dir = Path(output_dir) if output_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_pixels = int(max_pixels)
        self.progress = bool(progress)
        self._class_dirs: tuple[str, ...] | None = None
        self._index: DatasetIndex | None = None
        self._checks: dict[str, FileCheck] | None = None
        self._rows: list[ManifestRow] | None = None
        self._summary: dict[str, Any] = {}
        self.manifest_path: Path | None = None
        self.train_dataset: CaltechDataset | CachedDataset | None = None
        self.val_dataset: CaltechDataset | CachedDataset | None = None
        self.test_dataset: CaltechDataset | CachedDataset | None = None

    # -- what the model needs before a Trainer exists (cheap, writes nothing) ----------------------------
    @property
    def layout(self) -> Layout:
        """The dataset layout (``data.layout``): how the root is found, indexed and its boxes read."""
        return get_layout(self.layout_name)

    @property
    def class_dirs(self) -> tuple[str, ...]:
        """Class folder names in label order (``001.ak47``, ..., ``257.clutter``), from a cheap index.

        Caltech layout: the names of the ``NNN.name`` folders (one directory listing). ``synthetic``: an existing
        set's folders, else those its parameters will generate. Nothing is generated, downloaded, decoded or
        written. A missing root with ``download=True`` is a :class:`DatasetNotFoundError` saying to fetch it
        first with ``python -m caltech_cam.prepare`` (one process, before any rank needs the class names).
        """
        if self._class_dirs is None:
            self._class_dirs = self._list_class_dirs()
        return self._class_dirs

    @property
    def checks_file(self) -> Path | None:
        """Where :meth:`prepare_data` writes the decode-check verdicts that :meth:`setup` reads: the cache in
        ``cache_dir`` (kept across runs), else ``<output_dir>/decode_check.tsv`` (this run's ranks share it),
        else ``None`` (only this process's :meth:`setup` can use them). Needs the root to exist."""
        if self.cache_dir is not None:
            return cache_file_for(self.cache_dir, self.layout.resolve(self.root), self.max_pixels)
        return self.output_dir / CHECKS_NAME if self.output_dir is not None else None

    @property
    def cache_path(self) -> Path:
        """The folder of the uint8 cache: ``cache_dir`` when set, else ``caltech_cam_cache/`` beside the class
        folders' root. Needs the root to exist."""
        return cache_folder(self.cache_dir, self.layout.resolve(self.root))

    @property
    def split_rows(self) -> list[ManifestRow]:
        """After :meth:`setup`: every usable file with its label, split and sha1 (the manifest's rows)."""
        if self._rows is None:
            raise RuntimeError("call setup() before split_rows")
        return self._rows

    # -- Lightning hooks ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate or download what is missing, then decode-check every file and store the verdicts in
        :attr:`checks_file` (Lightning calls this on one process per node; files already checked with the same
        size and mtime are trusted, so a second call decodes nothing). With ``cache="uint8"`` it then builds the
        uint8 cache, or rebuilds a stale one (the log says what changed)."""
        self._materialize()
        index = self._prepared_index()
        self._checks = check_images(
            index,
            cache_file=self.checks_file,
            num_threads=max(1, self.num_workers),
            progress=self.progress,
            max_pixels=self.max_pixels,
        )
        if self.cache is not None:
            # data.bad_images=error stops here, before minutes of building, not in setup after it.
            enforce_policy(index, self._checks, self.bad_images)
            ensure_cache(
                index,
                self._checks,
                self.preset.resize,
                self.cache_path,
                num_threads=max(1, self.num_workers),
                progress=self.progress,
                max_pixels=self.max_pixels,
            )

    def setup(self, stage: str | None = None) -> None:
        """Index, read the verdicts of :meth:`prepare_data` (never decode), split, and build the datasets."""
        if self._rows is not None:
            return
        index = self._prepared_index()
        checks = self._checks if self._checks is not None else load_checks(index, self.checks_file)
        bad = enforce_policy(index, checks, self.bad_images)
        usable = [f for f in index.files if checks[f.path].ok]
        hashes = {f.path: checks[f.path].sha1 for f in usable}
        phashes = {f.path: checks[f.path].phash for f in usable}
        near = near_duplicate_pairs(usable, hashes, phashes, self.near_duplicates)
        near_groups = near_duplicate_groups(usable, hashes, near)
        warnings = [*self._synthetic_warnings(), *index.warnings, *large_group_warnings(near_groups)]
        if index.official is not None and self.split_config.mode == "official":
            warnings += official_crossings(usable, hashes, near, index.official)
        if self.split_file is not None:
            rows = read_manifest(self.split_file)
            warnings += validate_manifest(rows, usable, hashes, self.split_file, near)
        else:
            rows = make_split(
                usable, hashes, self.split_config, self.seed, index.class_dirs, near, index.official
            )
        if self.output_dir is not None and self._is_global_zero():
            self.manifest_path = write_manifest(rows, self.output_dir / MANIFEST_NAME)

        cached = (
            open_cache(self.cache_path, index.root, self.preset.resize, {r.path: r.sha1 for r in rows})
            if self.cache is not None
            else None
        )
        for split in SPLITS:
            chosen = [r for r in rows if r.split == split]
            if cached is not None:
                dataset = CachedDataset(
                    cached, [r.path for r in chosen], [r.label for r in chosen], index.root
                )
            else:
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
            "near_duplicates": {
                "enabled": self.near_duplicates.enabled,
                "max_distance": self.near_duplicates.max_distance,
                "pairs": len(near),
            },
            "near_duplicate_groups": near_groups,
            "warnings": warnings,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "cache": str(cached.file) if cached is not None else None,
        }

    def boxes_for(self, paths: Sequence[str | Path]) -> ImageBoxes | None:
        """The ground-truth boxes of ``paths`` (a dataset's ``.paths``) as the layout stores them, or None when the
        data has none (Caltech-256): what ``evaluate`` and the Grad-CAM callback score localization against."""
        return self.layout.boxes(self.layout.resolve(self.root), paths)

    def summary(self) -> dict[str, Any]:
        """After ``setup``: classes, per-split counts, skipped files with reasons, bad images, exact and
        near-duplicate groups (with the near-duplicate settings and pair count), warnings (e.g. counts that differ
        from the released Caltech-256), and the manifest's path."""
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

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With the uint8 cache: the rest of the preset on the device batch (random per image in training)."""
        if self.cache is None:
            return batch
        images, labels = batch
        trainer = getattr(self, "trainer", None)
        return self.finish_batch(images, train=trainer is not None and trainer.training), labels

    def finish_batch(self, images: Tensor, train: bool) -> Tensor:
        """The model input for ``images``: a uint8 RGB batch (B, 3, R, R) from the cache gets the preset's
        remaining steps (:func:`caltech_cam.data.device_aug.finish_preset`); an already-normalized float batch
        (the live path's) is returned as it is."""
        if images.is_floating_point():
            return images
        return finish_preset(images, self.preset, train, self._generator(images.device) if train else None)

    # -- internals ---------------------------------------------------------------------------------------
    def _generator(self, device: torch.device) -> torch.Generator:
        """One generator per device and epoch for the device augmentation, seeded from the run's seed, the global
        rank and the epoch: every rank draws its own crops (a shared global seed would give all ranks the same
        sequence), and a run resumed at epoch e draws what the uninterrupted run drew in epoch e."""
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        epoch = int(getattr(trainer, "current_epoch", 0) or 0)
        key = (device, epoch)
        if key not in self._generators:
            self._generators = {k: g for k, g in self._generators.items() if k[0] != device}  # past epochs'
            seed = ((self.seed * 1_000_003 + rank) * 1_000_033 + epoch) % 2**63
            self._generators[key] = torch.Generator(device).manual_seed(seed)
        return self._generators[key]

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
            prefetch_factor=self.prefetch_factor,
        )

    def _list_class_dirs(self) -> tuple[str, ...]:
        if self.synthetic is not None:
            return planned_class_dirs(self.root, **self.synthetic)
        try:
            return self.layout.classes(self.root)
        except DatasetNotFoundError as exc:
            if not self.download:
                raise
            raise DatasetNotFoundError(
                f"{exc}\ndata.download=true: the class names (hence the model) are needed before any process "
                "downloads, and under DDP every rank would fetch 1.2 GB. Fetch it once first:\n"
                f"  python -m caltech_cam.prepare data=caltech256 data.root={self.root} data.download=true\n"
                f"(it lands in {download_folder(self.root)}), then run again."
            ) from exc

    def _materialize(self) -> None:
        """Make the root exist: generate the synthetic set, or download Caltech-256 when asked to."""
        if self.synthetic is not None:
            ensure_synthetic(self.root, **self.synthetic)
            return
        try:
            self.layout.resolve(self.root)
        except DatasetNotFoundError:
            if not self.download:
                raise
            download_caltech256(self.root)

    def _prepared_index(self) -> DatasetIndex:
        """The index of what :meth:`prepare_data` made, checked against the classes the model was built for."""
        if self._index is None:
            if self.synthetic is not None and load_synthetic(self.root) is None:
                raise DataNotPreparedError(
                    f"no complete synthetic set at {self.root}: prepare_data() generates it, and setup() never "
                    "does. A Lightning Trainer calls prepare_data() before setup(); outside one, call "
                    "datamodule.prepare_data() first."
                )
            index = self.layout.index(self.root)
            if self._class_dirs is not None and index.class_dirs != self._class_dirs:
                raise RuntimeError(
                    f"the class folders under {index.root} changed since the model was sized: "
                    f"{len(self._class_dirs)} classes {list(self._class_dirs[:3])}... before, "
                    f"{index.num_classes} {list(index.class_dirs[:3])}... now"
                )
            self._class_dirs = index.class_dirs
            self._index = index
        return self._index

    def _synthetic_warnings(self) -> list[str]:
        """A set made with other parameters than configured is used as it is (never rewritten): say so."""
        info = load_synthetic(self.root) if self.synthetic is not None else None
        if info is None or info.params == requested_params(**self.synthetic):
            return []
        return [
            f"the synthetic set at {self.root} was made with {info.params}, not the configured "
            f"{requested_params(**self.synthetic)}; using it as it is (delete the folder to regenerate)"
        ]

    def _is_global_zero(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is None or trainer.is_global_zero
