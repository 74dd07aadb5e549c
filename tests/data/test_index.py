"""Indexing a Caltech-layout root: classes, files, skipped entries, and helpful errors."""

from __future__ import annotations

import shutil

import pytest

from caltech_cam.data import DatasetNotFoundError, index_root


def test_classes_labels_and_display_names(caltech_tree):
    index = index_root(caltech_tree.folder)
    assert index.class_dirs == ("001.ak47", "056.dog", "198.spider", "257.clutter")
    assert index.class_names == ["ak47", "dog", "spider", "clutter"]
    assert index.num_classes == 4
    # 10 + 9 + 8 + 7 files with an image extension (bad ones included: decoding is the next step).
    assert len(index.files) == 34
    per_label = [sum(f.label == k for f in index.files) for k in range(4)]
    assert per_label == [10, 9, 8, 7]
    assert all(f.path.startswith(index.class_dirs[f.label] + "/") for f in index.files)


def test_the_parent_folder_and_torchvision_layout_are_accepted(caltech_tree, tmp_path):
    assert index_root(caltech_tree.root).root == caltech_tree.folder
    # torchvision's Caltech256(download=True) extracts into <root>/caltech256/256_ObjectCategories.
    tv_root = tmp_path / "tv"
    shutil.copytree(caltech_tree.folder, tv_root / "caltech256" / "256_ObjectCategories")
    index = index_root(tv_root)
    assert index.root == tv_root / "caltech256" / "256_ObjectCategories"
    assert len(index.files) == 34


def test_the_archive_quirks_are_skipped_with_their_reason(caltech_tree):
    skipped = {s.path: s.reason for s in index_root(caltech_tree.root).skipped}
    assert set(skipped) == {"056.dog/greg", "198.spider/RENAME2"}
    assert "nested folder" in skipped["056.dog/greg"]
    assert "0 file(s)" in skipped["056.dog/greg"]
    assert "not an image file" in skipped["198.spider/RENAME2"]


def test_stray_entries_at_the_top_level_are_listed(caltech_tree):
    (caltech_tree.folder / "README.txt").write_text("hi")
    (caltech_tree.folder / "extras").mkdir()
    (caltech_tree.folder / "001.ak47" / ".DS_Store").write_bytes(b"\0")
    skipped = {s.path: s.reason for s in index_root(caltech_tree.folder).skipped}
    assert skipped["README.txt"] == "file outside the class folders"
    assert "not a class folder" in skipped["extras"]
    assert skipped["001.ak47/.DS_Store"] == "hidden file"


def test_class_order_is_numeric(tmp_path):
    for name in ("10.ten", "9.nine", "257.clutter"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.jpg").write_bytes(b"x")
    assert index_root(tmp_path).class_dirs == ("9.nine", "10.ten", "257.clutter")


def test_a_missing_root_explains_the_layout_and_how_to_get_the_data(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        index_root(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert "256_ObjectCategories/001.ak47/001_0001.jpg" in message
    assert "data.download=true" in message
    assert "tar -xf" in message
    assert isinstance(info.value, FileNotFoundError)


def test_an_empty_root_is_an_error_that_points_at_the_archive(tmp_path):
    (tmp_path / "256_ObjectCategories.tar").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match=r"holds no NNN\.name class folders") as info:
        index_root(tmp_path)
    assert f"Found the archive {tmp_path / '256_ObjectCategories.tar'}" in str(info.value)


def test_counts_that_differ_from_the_released_archive_are_reported(caltech_tree):
    # 001.ak47 and 257.clutter mark the real dataset: 34 files in 4 classes is not 30,607 in 257.
    warnings = index_root(caltech_tree.root).warnings
    assert len(warnings) == 1
    assert "34 image files in 4 classes" in warnings[0]
    assert "30,607 in 257" in warnings[0]


def test_an_empty_class_folder_is_kept_and_reported(caltech_tree):
    (caltech_tree.folder / "300.empty").mkdir()
    index = index_root(caltech_tree.folder)
    assert index.class_dirs[-1] == "300.empty"
    assert "class folder 300.empty holds no image files" in index.warnings
