"""Ground-truth boxes of a split: read from the generator's boxes.json next to real JPEGs, mapped through both
presets, and every bad boxes file refused with a message that names what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from caltech_cam.cam.metrics.localization import box_masks, map_boxes
from caltech_cam.data.boxes import ImageBoxes, boxes_for
from caltech_cam.data.presets import make_preset


def _jpegs(root):
    return sorted(root.rglob("*.jpg"))


def test_boxes_for_reads_the_generators_boxes_and_sizes(synthetic_info):
    root = synthetic_info.root
    paths = _jpegs(root)
    boxes = boxes_for(root, paths)
    assert len(boxes) == len(paths) == 48
    for n, path in enumerate(paths):
        rel = path.relative_to(root).as_posix()
        width, height = Image.open(path).size
        assert boxes.sizes[n].tolist() == [height, width]
        if rel.startswith("004.clutter/"):
            assert not boxes.present[n] and boxes.boxes[n].isnan().all()
        else:
            assert boxes.present[n] and boxes.boxes[n].tolist() == list(synthetic_info.boxes[rel])
    assert int(boxes.present.sum()) == 36
    # Relative paths name the same files; subset keeps the order asked for.
    relative = boxes_for(root, [p.relative_to(root) for p in paths[:5]])
    assert torch.equal(relative.sizes, boxes.sizes[:5])
    part = boxes.subset([40, 2])
    assert torch.equal(part.sizes, boxes.sizes[[40, 2]]) and part.present.tolist() == [False, True]


@pytest.mark.parametrize(
    ("name", "resize", "crop"), [("resnet", 64, None), ("inception", 80, None), ("inception", 75, 66)]
)
def test_real_boxes_mapped_through_a_preset_by_hand(synthetic_info, name, resize, crop):
    root = synthetic_info.root
    paths = _jpegs(root)
    boxes = boxes_for(root, paths)
    preset = make_preset(name, resize=resize, crop=crop)
    mapped, kept = map_boxes(boxes, preset)
    side = preset.output_size
    # The crop's offset as torchvision's center_crop takes it: the first column of a cropped column index image.
    grid = torch.arange(resize).expand(resize, resize)
    offset = TF.center_crop(grid, [side, side])[0, 0].item()
    for n, path in enumerate(paths):
        rel = path.relative_to(root).as_posix()
        if rel not in synthetic_info.boxes:
            assert not kept[n]
            continue
        width, height = Image.open(path).size
        x0, y0, x1, y1 = synthetic_info.boxes[rel]
        expected = [
            min(max(x0 * resize / width - offset, 0), side),
            min(max(y0 * resize / height - offset, 0), side),
            min(max(x1 * resize / width - offset, 0), side),
            min(max(y1 * resize / height - offset, 0), side),
        ]
        assert kept[n]  # the synthetic objects are large: none lies wholly in the cropped margin
        assert mapped[n].tolist() == pytest.approx(expected, rel=1e-6), rel
    # Masks at the model input's size: the box's pixels, never outside the input.
    masks = box_masks(mapped, (side, side))
    assert masks.shape == (48, side, side) and masks[kept].flatten(1).any(1).all() and not masks[~kept].any()


def _root_with(tmp_path, synthetic_info, table) -> tuple:
    """A set of two real JPEGs (copied from the shared set) with ``table`` as its boxes.json."""
    root = tmp_path / "set"
    rels = ["001.red-circle/001_0001.jpg", "004.clutter/004_0001.jpg"]
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synthetic_info.root / rel, root / rel)
    (root / "boxes.json").write_text(json.dumps(table))
    return root, rels


def test_no_boxes_file_is_none(caltech_tree):
    assert boxes_for(caltech_tree.root, ["001.ak47/001_0001.jpg"]) is None


def test_bad_boxes_files_are_named(tmp_path, synthetic_info):
    rel = "001.red-circle/001_0001.jpg"
    width, height = Image.open(synthetic_info.root / rel).size
    good = list(synthetic_info.boxes[rel])
    cases = [
        (
            {"other/x.jpg": good},
            r"boxes.json has boxes for 1 of its 1 paths that are no image under .*\['other/x.jpg'\]",
        ),
        ({rel: good, "/abs/x.jpg": good}, r"1 of its 2 paths that are no image under .*does not match"),
        ({rel: [0, 0, width + 1, 10]}, rf"outside its {width}x{height} \(width x height\) image"),
        ({rel: [0, -1, 10, 10]}, r"outside its"),
        ({rel: [10, 0, 10, 10]}, r"or empty: expected 0 <= x0 < x1 <= width"),
        ({rel: [0, 0, 10]}, r"must be \[x0, y0, x1, y1\] \(4 numbers\), got \[0, 0, 10\]"),
        ([good], r"must map image paths to \[x0, y0, x1, y1\], got a list"),
    ]
    for table, message in cases:
        root, rels = _root_with(tmp_path / str(len(message)), synthetic_info, table)
        with pytest.raises(ValueError, match=message):
            boxes_for(root, rels)


def test_paths_outside_the_root_or_missing_are_named(tmp_path, synthetic_info):
    rel = "001.red-circle/001_0001.jpg"
    root, rels = _root_with(tmp_path, synthetic_info, {rel: list(synthetic_info.boxes[rel])})
    with pytest.raises(ValueError, match=r"is not under the boxes' root"):
        boxes_for(root, [synthetic_info.root / rel])
    with pytest.raises(ValueError, match=r"does not exist"):
        boxes_for(root, [rel, "001.red-circle/missing.jpg"])
    # A good file: the clutter image is simply boxless.
    boxes = boxes_for(root, rels)
    assert boxes.present.tolist() == [True, False]
    # Keys are paths: "./" spellings name the same image.
    (root / "boxes.json").write_text(json.dumps({f"./{rel}": list(synthetic_info.boxes[rel])}))
    assert torch.equal(boxes_for(root, rels).boxes[0], boxes.boxes[0])


def test_image_boxes_checks_its_shapes():
    with pytest.raises(ValueError, match=r"boxes float \(N, 4\)"):
        ImageBoxes(torch.zeros(2, 4), torch.zeros(3, 2, dtype=torch.long), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"present bool \(N,\)"):
        ImageBoxes(torch.zeros(2, 4), torch.zeros(2, 2, dtype=torch.long), torch.ones(2))
