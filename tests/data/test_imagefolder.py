"""data=imagefolder on a tree of real JPEGs: torchvision's ImageFolder is the oracle for samples and labels, and
the decode check, duplicate grouping, manifest, uint8 cache and a resumed run work on it as on Caltech-256."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from torchvision.datasets import ImageFolder

from caltech_cam.data import BadImageError, CaltechDataModule, DatasetNotFoundError
from caltech_cam.data.imagefolder import index_imagefolder
from tests.helpers import compose_train, make_imagefolder_tree, tiny_overrides


@pytest.fixture
def tree(tmp_path):
    return make_imagefolder_tree(tmp_path / "fruit")


def _dm(root: Path, tmp_path: Path, **kwargs) -> CaltechDataModule:
    dm = CaltechDataModule(
        root, layout="imagefolder", resize=64, output_dir=tmp_path / "run", cache_dir=tmp_path / "c", **kwargs
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_the_index_is_torchvisions_imagefolder(tree):
    oracle = ImageFolder(str(tree.root))
    index = index_imagefolder(tree.root)
    assert oracle.classes == ["Mango", "apple", "kiwi"] == list(index.class_dirs)
    expected = [(Path(p).relative_to(tree.root).as_posix(), y) for p, y in oracle.samples]
    assert [(f.path, f.label) for f in index.files] == expected
    assert len(expected) == 26 and {"Mango/sub/m_00.jpeg", "kiwi/deep/er/k_01.jpg", "kiwi/k_png.PNG"} <= {
        p for p, _ in expected
    }
    assert sorted(s.path for s in index.skipped) == sorted(tree.skipped)


def test_prepare_and_setup_write_a_manifest_in_imagefolder_terms(tree, tmp_path):
    with pytest.raises(BadImageError, match=r"broken\.jpg"):
        _dm(tree.root, tmp_path)
    dm = _dm(tree.root, tmp_path, bad_images="skip")
    oracle = ImageFolder(str(tree.root))
    assert (dm.num_classes, dm.class_names) == (3, ["Mango", "apple", "kiwi"])
    summary = dm.summary()
    assert [b["path"] for b in summary["bad_images"]] == [tree.bad]
    assert summary["duplicate_groups"] == [list(tree.duplicate)]
    with (tmp_path / "run" / "split_manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    label_of = {Path(p).relative_to(tree.root).as_posix(): y for p, y in oracle.samples}
    assert len(rows) == 25 and all(int(r["label"]) == label_of[r["path"]] for r in rows)
    assert all((tree.root / r["path"]).is_file() and "\\" not in r["path"] for r in rows)
    split_of = {r["path"]: r["split"] for r in rows}
    assert split_of[tree.duplicate[0]] == split_of[tree.duplicate[1]]
    train = dm.train_dataset
    assert train.labels == [label_of[p.relative_to(tree.root).as_posix()] for p in train.paths]
    assert train[0][0].shape == (3, 64, 64)


def test_the_cache_serves_the_live_tensors(tree, tmp_path):
    live = _dm(tree.root, tmp_path, bad_images="skip")
    cached = _dm(tree.root, tmp_path, bad_images="skip", cache="uint8")
    a, b = live.val_dataset, cached.val_dataset
    assert b.paths == a.paths and b.labels == a.labels
    raw = torch.stack([b[i][0] for i in range(len(b))])
    assert torch.equal(cached.finish_batch(raw, train=False), torch.stack([a[i][0] for i in range(len(a))]))
    crops = cached.finish_batch(raw, train=True)
    assert crops.dtype == torch.float32 and crops.shape == (len(b), 3, 64, 64)


def test_fewer_than_two_classes_or_an_empty_class_is_named(tmp_path, tree):
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    for root in (one, tmp_path / "missing"):
        with pytest.raises(DatasetNotFoundError, match=re.escape(str(root))):
            _ = CaltechDataModule(root, layout="imagefolder").num_classes
    (tree.root / "zucchini").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"\['zucchini'\]"):
        index_imagefolder(tree.root)


def test_a_short_run_trains_and_resumes_in_its_directory(tree, tmp_path, one_thread):
    from caltech_cam.train import train

    extra = [
        "data=imagefolder",
        "data.bad_images=skip",
        "data.cache=uint8",
        f"data.cache_dir={tmp_path / 'cache'}",
        "logger=none",
        "callbacks.grad_cam.enabled=false",
        "test=false",
    ]
    overrides = [*tiny_overrides(tree.root, tmp_path), *extra]
    cfg = compose_train([*overrides, "trainer.max_epochs=1"])
    assert cfg.data.layout == "imagefolder"
    cfg.paths.output_dir = str(tmp_path / "run")
    first = train(cfg)
    manifest = (tmp_path / "run" / "split_manifest.csv").read_text()
    cfg = compose_train([*overrides, "trainer.max_epochs=2"])
    cfg.paths.output_dir = str(tmp_path / "run")
    second = train(cfg)
    assert (tmp_path / "run" / "split_manifest.csv").read_text() == manifest
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and first["data"]["splits"] == second["data"]["splits"]
