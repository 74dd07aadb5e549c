"""The preset's post-resize steps on a uint8 batch (caltech_cam.data.device_aug): per-image random draws, exact
windows, torchvision's colour steps."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import RandomResizedCrop, v2

from caltech_cam.data import make_preset
from caltech_cam.data.device_aug import (
    center_crop,
    crop_windows,
    finish_preset,
    random_crop,
    random_flip,
    random_resized_boxes,
    resized_crop,
)


def distinct_pixels(b: int, size: int) -> torch.Tensor:
    """uint8 (b, 3, size, size) whose windows are told apart by their values (no two equal windows)."""
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)


def window_offset(image: torch.Tensor, crop: torch.Tensor) -> tuple[int, int] | None:
    """The (top, left) at which ``crop`` is an exact window of ``image``, by exhaustive search (the oracle)."""
    size = crop.shape[-1]
    for top in range(image.shape[-2] - size + 1):
        for left in range(image.shape[-1] - size + 1):
            if torch.equal(image[..., top : top + size, left : left + size], crop):
                return top, left
    return None


def test_crop_windows_are_the_slices():
    images = distinct_pixels(3, 12)
    top, left = torch.tensor([0, 4, 2]), torch.tensor([3, 0, 4])
    out = crop_windows(images, top, left, 8)
    for b in range(3):
        y, x = int(top[b]), int(left[b])
        assert torch.equal(out[b], images[b, :, y : y + 8, x : x + 8])


def test_random_crop_draws_per_image_exact_windows():
    # Two copies of one image in a batch: v2.RandomCrop would crop both at one offset; here each gets its own.
    image = distinct_pixels(1, 20)[0]
    batch = image.expand(8, -1, -1, -1).contiguous()
    out = random_crop(batch, 14, torch.Generator().manual_seed(0))
    offsets = [window_offset(image, crop) for crop in out]
    assert all(o is not None for o in offsets)  # each crop is an exact sub-window
    assert len(set(offsets)) > 1  # not one offset for the batch
    # Seeded: the same generator state gives the same crops.
    assert torch.equal(out, random_crop(batch, 14, torch.Generator().manual_seed(0)))


def test_center_crop_matches_torchvision_per_image():
    images = distinct_pixels(2, 15)
    out = center_crop(images, 10)
    for b in range(2):
        assert torch.equal(out[b], v2.CenterCrop(10)(images[b]))


def test_random_flip_is_per_image():
    images = distinct_pixels(16, 6)
    out = random_flip(images, generator=torch.Generator().manual_seed(3))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each exactly one of the two
    assert any(flipped) and any(kept)  # drawn per image: 16 fair coins, this seed gives both


def test_random_resized_boxes_follow_get_params():
    h, w = 64, 64
    boxes = random_resized_boxes(4000, h, w, generator=torch.Generator().manual_seed(1))
    top, left, bh, bw = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all())
    area = (bh * bw).double() / (h * w)
    # Rounding the sides to pixels moves the area and ratio a little past the drawn ranges: allow one pixel.
    assert area.min() >= 0.08 * (1 - 2 / math.sqrt(0.08 * h * w)) and area.max() <= 1.0
    ratio = bw.double() / bh.double()
    assert ratio.min() >= 3 / 4 * (1 - 2 / 5) and ratio.max() <= 4 / 3 * (1 + 2 / 5)
    # torchvision: target area ~ U(0.08, 1), so the mean area fraction is ~0.54 (less the tries that miss).
    assert 0.45 < float(area.mean()) < 0.6
    assert len({(int(a), int(b)) for a, b in zip(top, left, strict=True)}) > 100


def test_random_resized_boxes_fall_back_to_the_centre_crop():
    # No area in (1.5, 2) x the image fits: get_params falls back to the central crop of the allowed ratio.
    # The oracle: torchvision's own get_params (deterministic once every try misses).
    for h, w in ((10, 40), (40, 10), (32, 32)):
        expected = list(RandomResizedCrop.get_params(torch.zeros(3, h, w), [1.5, 2.0], [3 / 4, 4 / 3]))
        boxes = random_resized_boxes(3, h, w, scale=(1.5, 2.0), generator=torch.Generator().manual_seed(0))
        assert boxes.tolist() == [expected] * 3


def test_resized_crop_of_a_box_at_its_own_size_is_the_window():
    images = distinct_pixels(2, 16).float()
    boxes = torch.tensor([[0, 0, 16, 16], [3, 5, 9, 9]])
    out = resized_crop(images, torch.tensor([[0, 0, 16, 16], [0, 0, 16, 16]]), 16)
    torch.testing.assert_close(out, images, atol=1e-4, rtol=0)  # the whole image at its own size: identity
    out = resized_crop(images, boxes, 9)
    torch.testing.assert_close(out[1], images[1, :, 3:12, 5:14], atol=1e-4, rtol=0)


def test_finish_preset_training_is_a_window_of_the_evaluation_tensor():
    # inception: the colour steps are elementwise, so each training crop (and flip) equals a window of the
    # whole normalized gray image, bit for bit.
    preset = make_preset("inception", resize=20, hflip=True)
    image = distinct_pixels(1, 20)[0]
    whole = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Grayscale(1), v2.Normalize(preset.mean, preset.std)]
    )(image)
    out = finish_preset(
        image.expand(8, -1, -1, -1), preset, train=True, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (8, 1, preset.crop, preset.crop)
    found = [window_offset(whole, o) or window_offset(whole, o.flip(-1)) for o in out]
    assert all(f is not None for f in found)
    assert len({tuple(o.flatten()[:5].tolist()) for o in out}) > 1


def test_finish_preset_rejects_what_is_not_a_cached_batch():
    preset = make_preset("resnet", resize=16)
    with pytest.raises(ValueError, match="uint8 RGB batch"):
        finish_preset(torch.zeros(2, 3, 16, 16), preset, train=False)
    with pytest.raises(ValueError, match="resized to 16 x 16"):
        finish_preset(torch.zeros(2, 3, 12, 12, dtype=torch.uint8), preset, train=False)
