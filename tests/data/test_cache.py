"""The uint8 cache (data.cache=uint8) on real JPEGs: the live path's exact tensors, stale caches rebuilt with a
message, a full disk refused before writing, datasets that pickle small and load in worker processes."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from caltech_cam.data import CaltechDataModule, load_rgb
from caltech_cam.data.cache import CachedDataset, CacheError, open_cache
from tests.helpers import compose_train, tiny_overrides

SIZES = {"resnet": {"resize": 64}, "inception": {"resize": 80, "crop": 76}}


def datamodule(root: Path, cache_dir: Path, preset: str = "resnet", **kwargs) -> CaltechDataModule:
    sizes = {**SIZES[preset], **kwargs.pop("sizes", {})}
    dm = CaltechDataModule(root, preset=preset, cache_dir=cache_dir, batch_size=8, seed=0, **sizes, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture
def root_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the shared synthetic set (48 small JPEGs)."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "data"))


@pytest.mark.parametrize("preset", ["resnet", "inception"])
def test_cached_evaluation_tensors_equal_the_live_ones(preset, synthetic_root, tmp_path, one_thread):
    live = datamodule(synthetic_root, tmp_path / "cache", preset)
    cached = datamodule(synthetic_root, tmp_path / "cache", preset, cache="uint8")
    resize = cached.preset.resize
    for split in ("train", "val", "test"):
        a, b = getattr(live, f"{split}_dataset"), getattr(cached, f"{split}_dataset")
        assert isinstance(b, CachedDataset) and b.paths == a.paths and b.labels == a.labels
        raw = torch.stack([b[i][0] for i in range(len(b))])
        assert raw.dtype == torch.uint8 and raw.shape == (len(b), 3, resize, resize)
        # The cached bytes are the live path's resize of the decoded file.
        assert torch.equal(raw[0], v2.Resize((resize, resize), antialias=True)(load_rgb(a.paths[0])))
        if split != "train":
            expected = torch.stack([a[i][0] for i in range(len(a))])
            # Same elementwise float ops on the same bytes: bit-identical, no tolerance needed.
            assert torch.equal(cached.finish_batch(raw, train=False), expected)
    # The live path's float batch passes through finish_batch untouched (what the CAM callback relies on).
    floats = torch.stack([live.val_dataset[i][0] for i in range(2)])
    assert cached.finish_batch(floats, train=True) is floats


def test_training_crops_are_per_image_windows_of_the_cached_image(synthetic_root, tmp_path, one_thread):
    dm = datamodule(synthetic_root, tmp_path / "cache", "inception", cache="uint8", sizes={"hflip": True})
    image = dm.train_dataset[0][0]
    batch = image.expand(6, -1, -1, -1).contiguous()
    # The whole cached image through the colour steps; they are elementwise, so any window of it is exact.
    full = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Grayscale(1), v2.Normalize(dm.preset.mean, dm.preset.std)]
    )(image)
    out = dm.finish_batch(batch, train=True)
    crop, last = dm.preset.crop, dm.preset.resize - dm.preset.crop
    windows = {}
    for top in range(last + 1):
        for left in range(last + 1):
            window = full[:, top : top + crop, left : left + crop]
            windows[top, left, False], windows[top, left, True] = window, window.flip(-1)
    found = [next((k for k, w in windows.items() if torch.equal(w, o)), None) for o in out]
    assert None not in found  # each training input is an exact (possibly mirrored) window of the cached image
    assert len(set(found)) > 1  # drawn per image, not one crop for the batch


def test_the_hook_follows_the_trainers_stage(synthetic_root, tmp_path, one_thread):
    dm = datamodule(synthetic_root, tmp_path / "cache", "inception", cache="uint8")
    batch = (dm.val_dataset[0][0].expand(4, -1, -1, -1).contiguous(), torch.arange(4))
    dm.trainer = SimpleNamespace(training=False, global_rank=0)
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(images, dm.finish_batch(batch[0][:1], train=False).expand(4, -1, -1, -1))
    assert labels is batch[1]
    dm.trainer = SimpleNamespace(training=True, global_rank=0)
    images, _ = dm.on_after_batch_transfer(batch, 0)
    assert len({tuple(x.flatten()[:8].tolist()) for x in images}) > 1  # random crops, drawn per image


def test_device_crops_are_drawn_per_rank_and_epoch_and_resume_alike(synthetic_root, tmp_path, one_thread):
    dm = datamodule(synthetic_root, tmp_path / "cache", "inception", cache="uint8", sizes={"hflip": True})
    batch = dm.train_dataset[0][0].expand(8, -1, -1, -1).contiguous()

    def crops(rank: int, epochs: list[int]) -> list[Tensor]:
        fresh = datamodule(
            synthetic_root, tmp_path / "cache", "inception", cache="uint8", sizes={"hflip": True}
        )
        out = []
        for epoch in epochs:
            fresh.trainer = SimpleNamespace(training=True, global_rank=rank, current_epoch=epoch)
            out.append(fresh.finish_batch(batch, train=True))
        return out

    epoch0, epoch1 = crops(0, [0, 1])
    (resumed,) = crops(0, [1])  # a run resumed at epoch 1 draws what the uninterrupted run drew there
    assert torch.equal(resumed, epoch1) and not torch.equal(epoch0, epoch1)
    assert not torch.equal(crops(1, [0])[0], epoch0)  # another rank, another stream


def test_a_rewritten_file_rebuilds_the_cache_with_a_message(root_copy, tmp_path, caplog, one_thread):
    datamodule(root_copy, tmp_path / "cache", cache="uint8")
    victim = sorted(root_copy.glob("001.*/*.jpg"))[0]
    other = sorted(root_copy.glob("002.*/*.jpg"))[0]
    shutil.copyfile(other, victim)  # new content (and size) for one file
    caplog.set_level(logging.INFO, logger="caltech_cam.data.cache")
    dm = datamodule(root_copy, tmp_path / "cache", cache="uint8")
    rel = f"{victim.parent.name}/{victim.name}"
    assert f"1 file(s) changed content ({rel})" in caplog.text and "rebuilding" in caplog.text
    images = dm.train_dataset.images
    assert torch.equal(images[images.rows[rel]], v2.Resize((64, 64), antialias=True)(load_rgb(other)))
    assert len(list((tmp_path / "cache").glob("uint8-*.bin"))) == 1  # the stale data file is gone
    caplog.clear()
    datamodule(root_copy, tmp_path / "cache", cache="uint8")
    assert "uint8 cache" not in caplog.text  # up to date: nothing rebuilt


def test_a_changed_file_list_and_torchvision_rebuild_with_a_message(root_copy, tmp_path, caplog, one_thread):
    dm = datamodule(root_copy, tmp_path / "cache", cache="uint8")
    index_path = next((tmp_path / "cache").glob("uint8-*-64.json"))
    gone = sorted(root_copy.glob("003.*/*.jpg"))[-1]
    gone.unlink()
    caplog.set_level(logging.INFO, logger="caltech_cam.data.cache")
    datamodule(root_copy, tmp_path / "cache", cache="uint8")
    assert f"1 file(s) are gone ({gone.parent.name}/{gone.name})" in caplog.text
    assert len(json.loads(index_path.read_text())["entries"]) == len(dm.split_rows) - 1

    body = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**body, "torchvision": "0.1.0"}))
    caplog.clear()
    datamodule(root_copy, tmp_path / "cache", cache="uint8")
    assert "resized by torchvision 0.1.0" in caplog.text and "rebuilding" in caplog.text


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_an_index_without_its_data_file_is_rebuilt(synthetic_root, tmp_path, caplog, damage, one_thread):
    dm = datamodule(synthetic_root, tmp_path / "cache", cache="uint8")
    rel, data = next(iter(dm.train_dataset.images.rows)), next((tmp_path / "cache").glob("uint8-*.bin"))
    expected = dm.train_dataset.images[dm.train_dataset.images.rows[rel]].clone()
    if damage == "deleted":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:100])
    caplog.set_level(logging.INFO, logger="caltech_cam.data.cache")
    again = datamodule(synthetic_root, tmp_path / "cache", cache="uint8")
    found = "missing" if damage == "deleted" else "100 bytes"
    assert f"its data file {data} is {found}" in caplog.text and "rebuilding" in caplog.text
    assert torch.equal(again.train_dataset.images[again.train_dataset.images.rows[rel]], expected)


def test_another_size_is_another_cache(synthetic_root, tmp_path, caplog, one_thread):
    datamodule(synthetic_root, tmp_path / "cache", cache="uint8")
    caplog.set_level(logging.INFO, logger="caltech_cam.data.cache")
    dm = datamodule(synthetic_root, tmp_path / "cache", cache="uint8", sizes={"resize": 48})
    assert "there is no cache yet at 48 px (this root's cache at 64 px is kept)" in caplog.text
    assert dm.train_dataset[0][0].shape == (3, 48, 48)
    assert len(list((tmp_path / "cache").glob("uint8-*.bin"))) == 2  # 64 px kept for the other preset


def test_setup_refuses_a_stale_cache_it_did_not_build(synthetic_root, tmp_path, one_thread):
    dm = datamodule(synthetic_root, tmp_path / "cache", cache="uint8")
    wanted = {r.path: r.sha1 for r in dm.split_rows}
    first = next(iter(wanted))
    with pytest.raises(CacheError, match=f"1 file\\(s\\) changed content \\({first}\\).*prepare_data"):
        open_cache(tmp_path / "cache", dm._index.root, 64, {**wanted, first: "0" * 40})
    with pytest.raises(CacheError, match="there is no cache yet"):
        open_cache(tmp_path / "cache", dm._index.root, 32, wanted)


def test_a_full_disk_fails_before_writing(synthetic_root, tmp_path, monkeypatch, one_thread):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    needed = 48 * 3 * 64 * 64
    with pytest.raises(CacheError, match=f"needs 0.00 GB \\({needed} bytes\\) in {tmp_path / 'cache'}"):
        datamodule(synthetic_root, tmp_path / "cache", cache="uint8")
    assert not list((tmp_path / "cache").glob("*uint8*"))  # nothing written


def test_an_unknown_cache_mode_is_refused(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match=r"data.cache must be null or one of \('uint8',\), got 'float16'"):
        CaltechDataModule(synthetic_root, cache="float16")


@pytest.mark.slow
def test_the_dataset_pickles_small_and_loads_in_workers(synthetic_root, tmp_path, one_thread):
    dm = datamodule(synthetic_root, tmp_path / "cache", cache="uint8")
    dataset = dm.train_dataset
    first = dataset[0][0]  # maps the file in this process
    blob = pickle.dumps(dataset)
    assert len(blob) < 10_000 and b"torch" not in blob  # paths and row numbers only, no array
    assert torch.equal(pickle.loads(blob)[0][0], first)
    # Zero-copy: an item is a view into the one mapped file.
    assert dataset[1][0].untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
    serial = [x for x, _ in DataLoader(dataset, batch_size=8)]
    # Unpickled above, the copy mapped the file itself (what a spawned worker or ddp_spawn rank does); spawn
    # workers would add ~30 s of imports here, so the loader test uses the default (fork) workers.
    parallel = [x for x, _ in DataLoader(dataset, batch_size=8, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True)) and len(serial) > 1


@pytest.mark.slow
def test_a_short_fit_and_test_with_the_cache(synthetic_root, tmp_path):
    from caltech_cam.train import train

    extra = [
        "data.cache=uint8",
        f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks.grad_cam.enabled=false",
    ]
    cfg = compose_train([*tiny_overrides(synthetic_root, tmp_path, "inception_v3"), *extra])
    cfg.paths.output_dir = str(tmp_path / "run")
    seen: list[tuple[torch.dtype, tuple[int, ...]]] = []

    class Seen(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((batch[0].dtype, tuple(batch[0].shape[1:])))

    results = train(cfg, callbacks=[Seen()])
    assert results["data"]["cache"] is not None and Path(results["data"]["cache"]).is_file()
    assert seen and set(seen) == {(torch.float32, (1, 76, 76))}  # the device-finished model input
    assert results["test"]["test/images"] == results["data"]["splits"]["test"]
