"""data=cub200 on a CUB-200-2011 replica of real JPEGs: its metadata is the index, its official split is kept
exactly (validation carved from train, seeded and stratified), its boxes reach localization, and broken metadata
is named."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from caltech_cam.data import CaltechDataModule
from caltech_cam.data.cub import MetadataError, index_cub
from caltech_cam.data.splits import apportion
from tests.helpers import compose_train, make_cub_tree, tiny_overrides


@pytest.fixture
def tree(tmp_path):
    return make_cub_tree(tmp_path)


def _dm(root: Path, tmp_path: Path, seed: int = 0, **kwargs) -> CaltechDataModule:
    split = kwargs.pop("split", {"mode": "official", "val_fraction": 0.5})
    dm = CaltechDataModule(
        root, layout="cub200", resize=64, split=split, seed=seed, output_dir=tmp_path / f"run{seed}", **kwargs
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_the_metadata_is_the_index_from_the_folder_or_its_parent(tree):
    for root in (tree.root, tree.folder):
        index = index_cub(root)
        assert index.root == tree.folder and index.class_dirs == tree.classes
        assert [f.path for f in index.files][:2] == [
            "images/001.Black_footed_Albatross/bird_001.jpg",
            "images/001.Black_footed_Albatross/bird_002.jpg",
        ]
        assert [f.label for f in index.files] == [i // 8 for i in range(24)]
        assert [index.official[f.path] for f in index.files] == ["train", "test"] * 12
        assert [s.path for s in index.skipped] == [tree.stray]


def test_the_official_split_is_kept_and_val_is_carved_from_train(tree, tmp_path):
    dm = _dm(tree.root, tmp_path)
    assert dm.class_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    official = index_cub(tree.root).official
    with (tmp_path / "run0" / "split_manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows if r["split"] == "test"] == [
        p for p, s in official.items() if s == "test"
    ]
    assert all(official[r["path"]] == "train" for r in rows if r["split"] != "test")
    # Stratified: every class's 4 official training images give apportion's 2 val, 2 train.
    val = Counter(int(r["label"]) for r in rows if r["split"] == "val")
    assert val == {y: apportion(4, (0.5, 0.5))[1] for y in range(3)} == {0: 2, 1: 2, 2: 2}
    # Seeded: the same seed carves the same validation set, and some other seed another one.
    assert [r.path for r in _dm(tree.root, tmp_path).split_rows] == [r["path"] for r in rows]
    carve = {
        seed: {r.path for r in _dm(tree.root, tmp_path, seed).split_rows if r.split == "val"}
        for seed in (1, 2, 3)
    }
    assert (
        len(
            {frozenset(v) for v in carve.values()}
            | {frozenset(r["path"] for r in rows if r["split"] == "val")}
        )
        > 1
    )
    # The byte copy across the official split is reported and left where the split puts it.
    (warning,) = [w for w in dm.summary()["warnings"] if "official" in w]
    assert " ~ ".join(tree.crossing) in warning
    assert {r["path"]: r["split"] for r in rows}[tree.crossing[1]] == "test"


def test_the_boxes_are_bounding_boxes_txt_in_xyxy(tree, tmp_path):
    dm = _dm(tree.root, tmp_path)
    paths = dm.test_dataset.paths + dm.val_dataset.paths
    boxes = dm.boxes_for(paths)
    ids = [int(p.stem.split("_")[1]) for p in paths]
    expected = torch.tensor([[x, y, min(x + w, 48), y + h] for x, y, w, h in map(tree.box, ids)])
    assert torch.equal(boxes.boxes, expected) and bool(boxes.present.all())
    assert torch.equal(boxes.sizes, torch.tensor([[40, 48]] * len(paths)))
    assert 24 in ids and boxes.boxes[ids.index(24), 2] == 48, "one pixel past the edge is clipped"


def test_missing_or_disagreeing_metadata_is_named(tree, tmp_path):
    labels = tree.folder / "image_class_labels.txt"
    text = labels.read_text()
    labels.write_text(text.replace("24 3\n", ""))
    with pytest.raises(
        MetadataError, match=r"image_class_labels\.txt disagrees with images\.txt: ids \['24'\]"
    ):
        index_cub(tree.root)
    labels.write_text(text.replace("\n9 2\n", "\n9 3\n"))
    with pytest.raises(MetadataError, match="each class id needs its own folder"):
        index_cub(tree.root)
    labels.write_text(text)
    (tree.folder / tree.crossing[0]).unlink()
    with pytest.raises(
        MetadataError, match=re.escape(f"not found under {tree.folder}: ['{tree.crossing[0]}']")
    ):
        index_cub(tree.root)
    (tree.folder / "bounding_boxes.txt").unlink()
    with pytest.raises(MetadataError, match=r"missing \['bounding_boxes\.txt'\]"):
        CaltechDataModule(tree.root, layout="cub200").num_classes  # noqa: B018
    with pytest.raises(ValueError, match="ships no official split"):
        CaltechDataModule(tree.root, split={"mode": "official"})


def test_a_short_run_scores_localization_on_the_boxes(tree, tmp_path, one_thread):
    from caltech_cam.train import train

    extra = [
        "data=cub200",
        "data.split.val_fraction=0.5",
        "trainer.max_epochs=1",
        "callbacks.grad_cam.layers=[layer4]",
        "callbacks.grad_cam.localization_images=6",
        "test=false",
    ]
    cfg = compose_train([*tiny_overrides(tree.root, tmp_path), *extra])
    cfg.paths.output_dir = str(tmp_path / "run")
    train(cfg)
    (events,) = (tmp_path / "run").rglob("events.out.tfevents.*")
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"gradcam/pointing_game/layer4", "gradcam/energy_pointing_game/layer4"} <= set(tags)
