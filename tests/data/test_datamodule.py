"""The datamodule end to end on real files: batches, both bad-image policies, split reuse, pickling, Hydra."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader

from caltech_cam.data import BadImageError, CaltechDataModule, check_images, format_summary, index_root
from caltech_cam.run.config import config_dir


def _dm(root, tmp_path, **kwargs):
    settings = {"preset": "resnet", "resize": 64, "batch_size": 8, "seed": 0, "output_dir": tmp_path / "run"}
    dm = CaltechDataModule(root=root, **{**settings, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_batches_counts_and_manifest_on_the_synthetic_set(synthetic_root, tmp_path):
    dm = _dm(synthetic_root, tmp_path)
    assert dm.num_classes == 4
    assert dm.class_names == ["red-circle", "green-triangle", "blue-square", "clutter"]
    # 12 images per class at 0.7/0.15/0.15: 8/2/2 per class.
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (32, 8, 8)
    assert [dm.train_dataset.labels.count(k) for k in range(4)] == [8, 8, 8, 8]
    batches = list(dm.train_dataloader())
    assert len(batches) == 4
    images, labels = batches[0]
    assert (images.shape, images.dtype, labels.dtype) == ((8, 3, 64, 64), torch.float32, torch.int64)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(dm.train_dataset.labels)
    manifest = (tmp_path / "run" / "split_manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 48
    summary = dm.summary()
    assert summary["splits"] == {"train": 32, "val": 8, "test": 8}
    assert summary["manifest"] == str(tmp_path / "run" / "split_manifest.csv")
    assert "classes: 4  images: 48  train: 32  val: 8  test: 8" in format_summary(summary)


def test_raw_is_the_file_in_rgb_at_its_own_size(synthetic_root, tmp_path):
    dm = _dm(synthetic_root, tmp_path, preset="inception")
    raw = dm.val_dataset.raw(0)
    width, height = Image.open(dm.val_dataset.paths[0]).size
    assert (raw.shape, raw.dtype) == ((3, height, width), torch.uint8)
    image, _ = dm.val_dataset[0]
    assert image.shape == (1, 56, 56)  # inception at resize 64 crops 56 (the study's 224/256)


def test_num_classes_is_known_before_setup(synthetic_root):
    dm = CaltechDataModule(root=synthetic_root)
    assert dm.num_classes == 4
    with pytest.raises(RuntimeError, match="call setup"):
        dm.summary()


def test_error_policy_stops_naming_every_bad_file(caltech_tree, tmp_path):
    with pytest.raises(BadImageError) as info:
        _dm(caltech_tree.root, tmp_path)
    message = str(info.value)
    assert str(caltech_tree.folder / "056.dog" / "056_0009.jpg") in message
    assert "truncated" in message
    assert str(caltech_tree.folder / "257.clutter" / "257_0007.jpg") in message
    assert "empty file" in message


def test_skip_policy_drops_counts_and_reports(caltech_tree, tmp_path):
    dm = _dm(caltech_tree.root, tmp_path, bad_images="skip")
    summary = dm.summary()
    assert [b["path"] for b in summary["bad_images"]] == list(caltech_tree.bad)
    assert sum(summary["splits"].values()) == 32
    assert summary["images"] == 34
    assert summary["duplicate_groups"] == [list(caltech_tree.duplicate)]
    assert {s["path"] for s in summary["skipped"]} == {"056.dog/greg", "198.spider/RENAME2"}
    assert any("30,607" in w for w in summary["warnings"])
    text = format_summary(summary)
    assert "bad images (dropped): 2" in text
    assert "duplicate groups (each kept in one split): 1" in text
    # The grayscale and CMYK JPEGs are in, as RGB.
    datasets = (dm.train_dataset, dm.val_dataset, dm.test_dataset)
    where = {p: (ds, i) for ds in datasets for i, p in enumerate(ds.paths)}
    gray = where[caltech_tree.folder / caltech_tree.gray][0].raw(
        where[caltech_tree.folder / caltech_tree.gray][1]
    )
    cmyk = where[caltech_tree.folder / caltech_tree.cmyk][0].raw(
        where[caltech_tree.folder / caltech_tree.cmyk][1]
    )
    assert gray.shape[0] == cmyk.shape[0] == 3
    assert torch.equal(gray[0], gray[2])


def test_a_split_file_reproduces_the_split_whatever_the_seed(synthetic_root, tmp_path):
    first = _dm(synthetic_root, tmp_path / "a", seed=1)
    again = _dm(synthetic_root, tmp_path / "b", seed=999, split_file=first.manifest_path)
    for name in ("train_dataset", "val_dataset", "test_dataset"):
        assert getattr(first, name).paths == getattr(again, name).paths
    assert again.summary()["split_source"] == str(first.manifest_path)


def test_a_split_file_listing_a_lost_file_is_an_error_naming_it(caltech_tree, tmp_path):
    first = _dm(caltech_tree.root, tmp_path / "a", bad_images="skip")
    (caltech_tree.folder / "001.ak47" / "001_0003.jpg").unlink()
    with pytest.raises(ValueError, match=r"missing or unusable: 001\.ak47/001_0003\.jpg"):
        _dm(caltech_tree.root, tmp_path / "b", bad_images="skip", split_file=first.manifest_path)


def test_per_class_split_through_the_datamodule(synthetic_root, tmp_path):
    dm = _dm(synthetic_root, tmp_path, split={"mode": "per_class", "train_per_class": 6, "val_fraction": 0.5})
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (24, 12, 12)


def test_datamodule_and_datasets_pickle_and_feed_spawned_workers(synthetic_root, tmp_path):
    dm = _dm(synthetic_root, tmp_path)
    clone = pickle.loads(pickle.dumps(dm))
    x, y = clone.val_dataset[3]
    x0, y0 = dm.val_dataset[3]
    assert torch.equal(x, x0) and y == y0
    serial = next(iter(DataLoader(dm.val_dataset, batch_size=8)))
    spawned = DataLoader(dm.val_dataset, batch_size=8, num_workers=1, multiprocessing_context="spawn")
    images, labels = next(iter(spawned))
    assert torch.equal(images, serial[0]) and torch.equal(labels, serial[1])


def test_the_decode_check_cache_trusts_unchanged_files_and_rechecks_changed_ones(caltech_tree, tmp_path):
    index = index_root(caltech_tree.root)
    cache = tmp_path / "cache.tsv"
    first = check_images(index, cache_file=cache)
    assert cache.is_file()
    victim = caltech_tree.folder / "001.ak47" / "001_0001.jpg"
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)  # same size...
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and same mtime: looks unchanged
    assert check_images(index, cache_file=cache)["001.ak47/001_0001.jpg"] == first["001.ak47/001_0001.jpg"]
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rechecked = check_images(index, cache_file=cache)["001.ak47/001_0001.jpg"]
    assert not rechecked.ok
    assert rechecked.sha1 != first["001.ak47/001_0001.jpg"].sha1


def test_the_synthetic_set_is_generated_on_first_use(tmp_path):
    root = tmp_path / "data" / "synthetic"
    synthetic = {"num_classes": 3, "images_per_class": 10, "seed": 0, "min_size": 64, "max_size": 72}
    dm = _dm(root, tmp_path, synthetic=synthetic, cache_dir=tmp_path / "cache")
    assert (root / "synthetic.json").is_file()
    assert dm.num_classes == 3
    assert sum(dm.summary()["splits"].values()) == 30
    assert dm.summary()["warnings"] == []


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="prepare", overrides=overrides)


def test_hydra_data_configs_instantiate_with_nested_nodes(synthetic_root, tmp_path):
    base = [f"paths.data_dir={tmp_path}", f"data.output_dir={tmp_path / 'run'}", "data.resize=64"]
    cfg = _compose([*base, f"data.root={synthetic_root}"])
    assert cfg.data.crop is None and cfg.data.split.mode == "fractions" and cfg.data.seed == 42
    dm = instantiate(cfg.data)
    assert dm.split_config.fractions == (0.7, 0.15, 0.15)
    dm.prepare_data()
    dm.setup()
    # The shared set was made with other parameters than data=synthetic's: used as it is, and said so.
    assert "using it as it is" in dm.summary()["warnings"][0]
    assert dm.summary()["splits"] == {"train": 32, "val": 8, "test": 8}
    cfg = _compose([*base, "data=caltech256", "model.preset=inception", f"data.root={synthetic_root}"])
    assert cfg.data.synthetic is None
    assert cfg.data.cache_dir == f"{tmp_path}/cache"
    dm = instantiate(cfg.data)
    assert (dm.preset.in_channels, dm.preset.output_size) == (1, 56)
