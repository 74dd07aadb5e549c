"""Splits: stratified counts computed by hand, seeded, disjoint, duplicates kept together, manifest round trip."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from caltech_cam.data import ImageFile, SplitConfig, check_images, index_root, make_split, read_manifest
from caltech_cam.data.splits import apportion, duplicate_groups, validate_manifest, write_manifest


def _usable(tree):
    index = index_root(tree.root)
    checks = check_images(index)
    files = [f for f in index.files if checks[f.path].ok]
    return index, files, {f.path: checks[f.path].sha1 for f in files}


def _counts(rows, label):
    c = Counter(r.split for r in rows if r.label == label)
    return (c["train"], c["val"], c["test"])


@pytest.mark.parametrize(
    ("n", "shares", "expected"),
    [
        (12, (0.7, 0.15, 0.15), [8, 2, 2]),  # 8.4 / 1.8 / 1.8
        (10, (0.7, 0.15, 0.15), [7, 2, 1]),  # 7 / 1.5 / 1.5: the tie goes to the earlier share
        (8, (0.7, 0.15, 0.15), [6, 1, 1]),  # 5.6 / 1.2 / 1.2
        (6, (0.7, 0.15, 0.15), [4, 1, 1]),  # 4.2 / 0.9 / 0.9
        (80, (0.7, 0.15, 0.15), [56, 12, 12]),
        (100, (0.29, 0.71), [29, 71]),  # 0.29 * 100 is 28.999... in floating point
        (0, (0.7, 0.15, 0.15), [0, 0, 0]),
    ],
)
def test_apportion_by_hand(n, shares, expected):
    assert apportion(n, shares) == expected


def test_fraction_split_is_stratified_with_hand_computed_counts(caltech_tree):
    index, files, hashes = _usable(caltech_tree)
    assert len(files) == 32
    rows = make_split(files, hashes, SplitConfig(), seed=42, class_dirs=index.class_dirs)
    assert _counts(rows, 0) == (7, 2, 1)  # ak47: 10 usable
    assert _counts(rows, 1) == (6, 1, 1)  # dog: 8 usable (the truncated file is out)
    assert _counts(rows, 3) == (4, 1, 1)  # clutter: 6 usable (the empty file is out)
    # spider: 8 files, targets 6/1/1, but its duplicate pair is one unit and may shift a boundary by 1.
    spider = _counts(rows, 2)
    assert sum(spider) == 8
    assert all(abs(a - b) <= 1 for a, b in zip(spider, (6, 1, 1), strict=True))


def test_every_file_in_exactly_one_split_and_the_duplicate_pair_together(caltech_tree):
    index, files, hashes = _usable(caltech_tree)
    for seed in range(20):
        rows = make_split(files, hashes, SplitConfig(), seed=seed, class_dirs=index.class_dirs)
        assert sorted(r.path for r in rows) == sorted(f.path for f in files)
        split = {r.path: r.split for r in rows}
        first, second = caltech_tree.duplicate
        assert split[first] == split[second]


def test_same_seed_same_split_other_seed_other_split(caltech_tree):
    index, files, hashes = _usable(caltech_tree)
    a = make_split(files, hashes, SplitConfig(), seed=1, class_dirs=index.class_dirs)
    b = make_split(files, hashes, SplitConfig(), seed=1, class_dirs=index.class_dirs)
    c = make_split(files, hashes, SplitConfig(), seed=2, class_dirs=index.class_dirs)
    assert a == b
    assert [r.split for r in a] != [r.split for r in c]


def test_many_duplicate_groups_never_cross_splits_even_across_classes():
    # 3 classes x 40 files; every 5th file shares content with the next one, and some groups span classes.
    files = [ImageFile(f"{c:03d}.c{c}/{i:04d}.jpg", c) for c in range(3) for i in range(40)]
    hashes = {f.path: f.path for f in files}
    for k in range(0, len(files) - 1, 5):
        hashes[files[k + 1].path] = hashes[files[k].path]
    hashes[files[45].path] = hashes[files[2].path]  # a class-1 file identical to a class-0 file
    groups = duplicate_groups(files, hashes)
    assert len(groups) == 24
    assert [files[2].path, files[45].path] in groups
    for seed in range(10):
        rows = make_split(files, hashes, SplitConfig(), seed, ["000.c0", "001.c1", "002.c2"])
        splits_of = defaultdict(set)
        for r in rows:
            splits_of[r.sha1].add(r.split)
        assert all(len(s) == 1 for s in splits_of.values())


def test_one_class_split_does_not_depend_on_the_others():
    files = [ImageFile(f"{c:03d}.c/{i}.jpg", c) for c in range(3) for i in range(20)]
    hashes = {f.path: f.path for f in files}
    dirs = ["000.a", "001.b", "002.c"]
    full = make_split(files, hashes, SplitConfig(), 7, dirs)
    only_b = make_split([f for f in files if f.label == 1], hashes, SplitConfig(), 7, dirs)
    assert [r for r in full if r.label == 1] == only_b


def test_per_class_mode_counts():
    # 12 per class, 5 for training, half of the other 7 for validation: 3.5/3.5 -> 4 val, 3 test.
    files = [ImageFile(f"{c:03d}.c/{i}.jpg", c) for c in range(4) for i in range(12)]
    hashes = {f.path: f.path for f in files}
    config = SplitConfig(mode="per_class", train_per_class=5, val_fraction=0.5)
    rows = make_split(files, hashes, config, 0, [f"{c:03d}.c" for c in range(4)])
    assert all(_counts(rows, c) == (5, 4, 3) for c in range(4))
    # Caltech-256-60 on the smallest real class (80 images), 20% of the rest for validation: 60 / 4 / 16.
    files = [ImageFile(f"001.x/{i}.jpg", 0) for i in range(80)]
    rows = make_split(files, {f.path: f.path for f in files}, SplitConfig(mode="per_class"), 0, ["001.x"])
    assert _counts(rows, 0) == (60, 4, 16)


def test_per_class_mode_refuses_a_class_that_is_too_small():
    files = [ImageFile(f"001.a/{i}.jpg", 0) for i in range(61)] + [
        ImageFile(f"002.b/{i}.jpg", 1) for i in range(60)
    ]
    with pytest.raises(ValueError, match=r"class 002.b has 60 usable images.*train_per_class=60"):
        make_split(
            files, {f.path: f.path for f in files}, SplitConfig(mode="per_class"), 0, ["001.a", "002.b"]
        )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"fractions": [0.7, 0.2, 0.2]}, "sum to 1"),
        ({"fractions": [0.5, 0.5]}, "3 non-negative"),
        ({"mode": "random"}, "mode must be one of"),
        ({"val_fraction": 1.5}, r"val_fraction must be in \[0, 1\]"),
        ({"shuffle": True}, "unknown data.split keys"),
    ],
)
def test_split_settings_are_validated(values, message):
    with pytest.raises(ValueError, match=message):
        SplitConfig.from_mapping(values)


def test_manifest_round_trip_and_validation(caltech_tree, tmp_path):
    index, files, hashes = _usable(caltech_tree)
    rows = make_split(files, hashes, SplitConfig(), 3, index.class_dirs)
    path = write_manifest(rows, tmp_path / "m.csv")
    assert path.read_text().splitlines()[0] == "path,label,split,sha1"
    assert read_manifest(path) == rows
    assert validate_manifest(rows, files, hashes, path) == []
    # A file the split lists but the root lost is an error that names it.
    gone = rows[4].path
    with pytest.raises(ValueError, match=f"1 listed file.*missing or unusable: {gone}"):
        validate_manifest(rows, [f for f in files if f.path != gone], hashes, path)
    edited = {**hashes, rows[0].path: "0" * 40}
    with pytest.raises(ValueError, match=f"changed content: {rows[0].path}"):
        validate_manifest(rows, files, edited, path)
    # Files the split does not list are reported, not used.
    assert validate_manifest(rows[1:], files, hashes, path) == [
        "1 file(s) in the root are not in the split file (not used)"
    ]


def test_a_malformed_manifest_is_refused_with_its_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("path,label,split,sha1\n001.a/1.jpg,0,train,abc\n001.a/2.jpg,0,holdout,def\n")
    with pytest.raises(ValueError, match=r"m.csv:3"):
        read_manifest(path)
    path.write_text("file,label\n")
    with pytest.raises(ValueError, match="header must be path,label,split,sha1"):
        read_manifest(path)
