"""The synthetic Caltech-layout set: layout, byte-for-byte determinism, boxes that match the drawn object."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from caltech_cam.data import ensure_synthetic, generate_synthetic, index_root, load_synthetic
from caltech_cam.data.synthetic import (
    MARKER,
    OBJECT_SPECS,
    SHAPES,
    TEXTURES,
    ObjectSpec,
    planned_class_dirs,
    requested_params,
)
from tests.helpers import SYNTHETIC_PARAMS, compose_train

SMALL = {"num_classes": 3, "images_per_class": 7, "min_size": 64, "max_size": 80}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_caltech_with_clutter_last(synthetic_info):
    index = index_root(synthetic_info.root)
    assert index.class_dirs == ("001.red-circle", "002.green-triangle", "003.blue-square", "004.clutter")
    assert len(index.files) == 4 * 12
    assert index.files[0].path == "001.red-circle/001_0001.jpg"
    assert index.files[-1].path == "004.clutter/004_0012.jpg"
    assert {s.path for s in index.skipped} == {"boxes.json", MARKER}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate_synthetic(tmp_path / "a", seed=5, **SMALL)
    b = generate_synthetic(tmp_path / "b", seed=5, **SMALL)
    c = generate_synthetic(tmp_path / "c", seed=6, **SMALL)
    files_a, files_b, files_c = _files(a.root), _files(b.root), _files(c.root)
    assert len(files_a) == 3 * 7 + 2
    assert files_a == files_b
    jpgs = [k for k in files_a if k.endswith(".jpg")]
    assert all(files_a[k] != files_c[k] for k in jpgs)
    assert a.boxes == b.boxes != c.boxes


def test_a_few_grayscale_and_cmyk_files(synthetic_info):
    modes = [Image.open(p).mode for p in sorted(synthetic_info.root.rglob("*.jpg"))]
    # Image numbers 3 and 5 (0-based) of each of the 4 classes.
    assert modes.count("L") == 4
    assert modes.count("CMYK") == 4
    assert modes.count("RGB") == 40


def test_boxes_lie_inside_their_images_and_clutter_has_none(synthetic_info):
    boxes = synthetic_info.boxes
    assert len(boxes) == 3 * 12
    assert not any(k.startswith("004.clutter/") for k in boxes)
    for rel, (x0, y0, x1, y1) in boxes.items():
        width, height = Image.open(synthetic_info.root / rel).size
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, rel
        # Object radius 0.2-0.4 of the short side: even a tilted square spans >= 0.28 of it.
        assert min(x1 - x0, y1 - y0) >= 0.25 * min(width, height)


def test_boxes_match_the_drawn_object(synthetic_info):
    # Class 1 is a solid red disc; nothing else in the picture is saturated red.
    checked = 0
    for rel, (x0, y0, x1, y1) in synthetic_info.boxes.items():
        image = Image.open(synthetic_info.root / rel)
        if not rel.startswith("001.") or image.mode == "L":
            continue
        rgb = np.asarray(image.convert("RGB")).astype(int)
        red = (rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
        ys, xs = np.nonzero(red)
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        assert inside.mean() > 0.99, rel
        assert abs(xs.min() - x0) <= 2 and abs(xs.max() + 1 - x1) <= 2, rel
        assert abs(ys.min() - y0) <= 2 and abs(ys.max() + 1 - y1) <= 2, rel
        # A disc fills pi/4 of its box.
        assert red[y0:y1, x0:x1].mean() == pytest.approx(np.pi / 4, abs=0.08), rel
        checked += 1
    assert checked == 11  # 12 images minus the grayscale one


def test_boxes_json_is_what_the_generator_returned(synthetic_info):
    stored = json.loads((synthetic_info.root / "boxes.json").read_text())
    assert {k: tuple(v) for k, v in stored.items()} == synthetic_info.boxes
    assert load_synthetic(synthetic_info.root) == synthetic_info


def test_an_existing_set_is_reused_as_it_is(tmp_path):
    made = generate_synthetic(tmp_path / "s", **SMALL)
    first = tmp_path / "s" / "001.red-circle" / "001_0001.jpg"
    stamp = first.stat().st_mtime_ns
    info = ensure_synthetic(tmp_path / "s", num_classes=5, images_per_class=3)
    assert info == made
    assert info.params["num_classes"] == 3
    assert first.stat().st_mtime_ns == stamp


def test_a_partial_set_is_regenerated(tmp_path):
    generate_synthetic(tmp_path / "s", **SMALL)
    (tmp_path / "s" / MARKER).unlink()  # as if the writer died before its last file
    (tmp_path / "s" / "002.green-triangle" / "002_0003.jpg").unlink()
    assert load_synthetic(tmp_path / "s") is None
    info = ensure_synthetic(tmp_path / "s", **SMALL)
    assert (tmp_path / "s" / MARKER).is_file()
    assert len(list(info.root.rglob("*.jpg"))) == 21
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_a_folder_that_is_not_a_synthetic_set_is_never_deleted(tmp_path, caltech_tree):
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        ensure_synthetic(caltech_tree.folder, **SMALL)
    assert (caltech_tree.folder / "001.ak47" / "001_0001.jpg").is_file()


def test_too_many_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match=rf"num_classes must be in \[2, {len(OBJECT_SPECS) + 1}\]"):
        generate_synthetic(tmp_path / "s", num_classes=len(OBJECT_SPECS) + 2)


def test_a_spec_names_its_bad_shape_or_texture():
    with pytest.raises(ValueError, match=r"unknown shape 'blob'; expected one of \['arrow'"):
        ObjectSpec("x", "blob", (1, 2, 3), "solid")
    with pytest.raises(ValueError, match=r"unknown texture 'plaid'"):
        ObjectSpec("x", "circle", (1, 2, 3), "plaid")
    # Every shape and texture in the tables is used by some class, and every spec's name is unique.
    assert {s.shape for s in OBJECT_SPECS} == set(SHAPES)
    assert {s.texture for s in OBJECT_SPECS} == set(TEXTURES)
    assert len({s.name for s in OBJECT_SPECS}) == len(OBJECT_SPECS)


def test_a_caltech_folder_is_named_as_such_before_anything_is_drawn(tmp_path, caltech_tree):
    for root in (caltech_tree.root, caltech_tree.folder):
        with pytest.raises(FileExistsError) as info:
            generate_synthetic(root, **SMALL)
        message = str(info.value)
        assert "holds Caltech-layout class folders" in message
        assert "4 NNN.name folders, e.g. 001.ak47, 056.dog, 198.spider" in message
        assert f"data=caltech256 data.root={root}" in message
    assert not [p for p in caltech_tree.root.parent.iterdir() if p.name.startswith(".")]  # nothing staged


def test_planned_class_dirs_write_nothing_and_match_what_is_generated(tmp_path):
    root = tmp_path / "s"
    planned = planned_class_dirs(root, **SMALL)
    assert not root.exists() and list(tmp_path.iterdir()) == []
    assert (
        planned
        == generate_synthetic(root, **SMALL).class_dirs
        == ("001.red-circle", "002.green-triangle", "003.clutter")
    )
    # An existing set is used as it is: its own folders, whatever is asked.
    assert planned_class_dirs(root, num_classes=5) == planned


def test_object_scale_sets_the_object_diameter_and_is_recorded(tmp_path):
    params = {"num_classes": 3, "images_per_class": 8, "min_size": 64, "max_size": 80}
    small = generate_synthetic(tmp_path / "small", object_scale=[0.15, 0.35], **params)
    default = generate_synthetic(tmp_path / "default", **params)
    circles = 0
    for rel, (x0, y0, x1, y1) in small.boxes.items():
        short = min(Image.open(small.root / rel).size)
        # Every shape fits in its disc of diameter 2r <= 0.35 of the short side (+1 px of rasterization).
        assert max(x1 - x0, y1 - y0) <= 0.35 * short + 1, rel
        if rel.startswith("001."):  # a disc spans its full diameter, 2r >= 0.15 of the short side
            assert min(x1 - x0, y1 - y0) >= 0.15 * short - 1, rel
            circles += 1
        # The image sides are drawn before the object: the same pictures' sizes, smaller objects.
        assert Image.open(default.root / rel).size == Image.open(small.root / rel).size
        dx0, dy0, dx1, dy1 = default.boxes[rel]
        assert (x1 - x0) * (y1 - y0) < (dx1 - dx0) * (dy1 - dy0), rel
    assert circles == 8
    # The marker records a non-default scale (and only that): the default set's marker is the pinned one.
    assert small.params["object_scale"] == [0.15, 0.35]
    assert "object_scale" not in default.params
    assert (
        load_synthetic(small.root).params
        == small.params
        == requested_params(object_scale=(0.15, 0.35), **params)
    )
    assert load_synthetic(default.root).params == requested_params(object_scale=[0.4, 0.8], **params)


def test_default_config_matches_a_set_made_before_object_scale(synthetic_root, tmp_path):
    # conftest's set is made without object_scale; the configured default [0.4, 0.8] must not call it "other".
    overrides = [f"data.synthetic.{k}={v}" for k, v in SYNTHETIC_PARAMS.items()]
    base = [
        "data=synthetic",
        f"data.root={synthetic_root}",
        f"data.output_dir={tmp_path}",
        "data.cache_dir=null",
    ]
    cfg = compose_train([*base, *overrides])
    assert list(cfg.data.synthetic.object_scale) == [0.4, 0.8]
    assert instantiate(cfg.data)._synthetic_warnings() == []
    other = instantiate(compose_train([*base, *overrides, "data.synthetic.object_scale=[0.15,0.35]"]).data)
    (warning,) = other._synthetic_warnings()
    assert "'object_scale': [0.15, 0.35]" in warning and "using it as it is" in warning


@pytest.mark.parametrize(
    "scale", [[0.0, 0.5], [0.5, 0.4], [0.5, 1.2], [0.3], "0.3", [0.2, math.nan], [True, 0.5]]
)
def test_a_bad_object_scale_is_named(tmp_path, scale):
    with pytest.raises(ValueError, match=r"object_scale"):
        generate_synthetic(tmp_path / "s", object_scale=scale, **SMALL)
    with pytest.raises(ValueError, match=r"object_scale"):
        requested_params(object_scale=scale)
    assert not (tmp_path / "s").exists()
