"""The data half: index a Caltech-layout folder, decode-check it, split it, and serve preset-transformed batches."""

from caltech_cam.data.boxes import ImageBoxes, boxes_for
from caltech_cam.data.cache import CachedDataset, CacheError, ensure_cache
from caltech_cam.data.check import FileCheck, check_images
from caltech_cam.data.datamodule import CaltechDataModule, CaltechDataset
from caltech_cam.data.decode import MAX_PIXELS, BadImageError, decode_rgb, load_rgb
from caltech_cam.data.device_aug import finish_preset
from caltech_cam.data.download import DownloadError, download_caltech256
from caltech_cam.data.index import (
    IMAGE_EXTENSIONS,
    DataNotPreparedError,
    DatasetIndex,
    DatasetNotFoundError,
    ImageFile,
    Skipped,
    index_root,
    list_class_dirs,
)
from caltech_cam.data.presets import PRESET_NAMES, Preset, make_preset
from caltech_cam.data.report import format_summary
from caltech_cam.data.splits import (
    MANIFEST_NAME,
    SPLITS,
    ManifestRow,
    NearDuplicateConfig,
    SplitConfig,
    make_split,
    read_manifest,
    write_manifest,
)
from caltech_cam.data.synthetic import SyntheticInfo, ensure_synthetic, generate_synthetic, load_synthetic

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_NAME",
    "MAX_PIXELS",
    "PRESET_NAMES",
    "SPLITS",
    "BadImageError",
    "CacheError",
    "CachedDataset",
    "CaltechDataModule",
    "CaltechDataset",
    "DataNotPreparedError",
    "DatasetIndex",
    "DatasetNotFoundError",
    "DownloadError",
    "FileCheck",
    "ImageBoxes",
    "ImageFile",
    "ManifestRow",
    "NearDuplicateConfig",
    "Preset",
    "Skipped",
    "SplitConfig",
    "SyntheticInfo",
    "boxes_for",
    "check_images",
    "decode_rgb",
    "download_caltech256",
    "ensure_cache",
    "ensure_synthetic",
    "finish_preset",
    "format_summary",
    "generate_synthetic",
    "index_root",
    "list_class_dirs",
    "load_rgb",
    "load_synthetic",
    "make_preset",
    "make_split",
    "read_manifest",
    "write_manifest",
]
