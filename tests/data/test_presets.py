"""Presets: shapes, exact normalized values on hand-made images, training-only randomness, the inverse."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from caltech_cam.data import Preset, make_preset
from caltech_cam.data.presets import GRAY_MEAN, GRAY_STD

# Hand-written on purpose (not imported): a wrong constant in the module must fail here.
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
W = (0.2989, 0.587, 0.114)


def _constant(rgb, h=50, w=70):
    return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w).contiguous()


def _random(h, w, seed=0):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_study_presets_output_shapes_and_dtype():
    image = _random(300, 200)
    for train in (False, True):
        out = make_preset("resnet").transform(train)(image)
        assert (out.shape, out.dtype) == ((3, 256, 256), torch.float32)
        out = make_preset("inception").transform(train)(image)
        assert (out.shape, out.dtype) == ((1, 224, 224), torch.float32)


def test_small_sizes_keep_the_inception_crop_ratio():
    assert make_preset("resnet", resize=64).output_size == 64
    assert make_preset("inception", resize=88).crop == 77  # round(88 * 224 / 256)
    assert make_preset("inception", resize=88, crop=80).transform(False)(_random(90, 120)).shape == (
        1,
        80,
        80,
    )


def test_single_channel_statistics_from_imagenet_rgb():
    assert GRAY_MEAN[0] == pytest.approx(0.2989 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406)
    assert GRAY_MEAN[0] == pytest.approx(0.4589225)
    assert GRAY_STD[0] == pytest.approx(0.2989 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225)
    assert GRAY_STD[0] == pytest.approx(0.2255861)


def test_a_constant_colour_normalizes_to_the_hand_computed_value():
    rgb = (200, 100, 50)
    out = make_preset("resnet", resize=32).transform(False)(_constant(rgb))
    for c in range(3):
        expected = (rgb[c] / 255 - RGB_MEAN[c]) / RGB_STD[c]
        assert torch.allclose(out[c], torch.full((32, 32), expected), atol=1e-6)
    gray = sum(w * v for w, v in zip(W, rgb, strict=True)) / 255  # 124.18 / 255
    mean_g = sum(w * m for w, m in zip(W, RGB_MEAN, strict=True))
    std_g = sum(w * s for w, s in zip(W, RGB_STD, strict=True))
    out = make_preset("inception", resize=32, crop=24).transform(False)(_constant(rgb))
    assert torch.allclose(out, torch.full((1, 24, 24), (gray - mean_g) / std_g), atol=1e-6)
    assert (gray - mean_g) / std_g == pytest.approx(0.124377, abs=1e-6)


def test_crop_is_random_only_in_training():
    preset = make_preset("inception", resize=64, crop=48)
    image = _random(64, 64)
    evals = [preset.transform(False)(image) for _ in range(3)]
    assert all(torch.equal(evals[0], e) for e in evals)
    # Evaluation takes the centre: rows/cols 8..56 of the (already 64x64) image.
    gray = (W[0] * image[0] + W[1] * image[1] + W[2] * image[2]).float() / 255
    assert torch.allclose(evals[0][0], (gray[8:56, 8:56] - GRAY_MEAN[0]) / GRAY_STD[0], atol=1e-5)
    torch.manual_seed(0)
    trains = [preset.transform(True)(image) for _ in range(8)]
    assert len({t.sum().item() for t in trains}) > 1


def test_flip_only_in_training_and_only_when_switched_on():
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[:, :, :4] = 255  # bright left edge
    flip = make_preset("resnet", resize=16, hflip=True)
    assert all(flip.transform(False)(image)[0, 0, 0] > 0 for _ in range(10))
    torch.manual_seed(0)
    lefts = [flip.transform(True)(image)[0, 0, 0].item() > 0 for _ in range(30)]
    assert any(lefts) and not all(lefts)
    plain = make_preset("resnet", resize=16)
    assert torch.equal(plain.transform(True)(image), plain.transform(False)(image))


def test_random_resized_crop_only_in_training():
    preset = make_preset("resnet", resize=32, random_resized_crop=True)
    image = _random(40, 60)
    torch.manual_seed(1)
    trains = [preset.transform(True)(image) for _ in range(5)]
    assert all(t.shape == (3, 32, 32) for t in trains)
    assert len({t.sum().item() for t in trains}) > 1
    assert torch.equal(
        preset.transform(False)(image), make_preset("resnet", resize=32).transform(False)(image)
    )


def test_denormalize_inverts_the_transform_within_one_level():
    image = _random(32, 32, seed=3)
    resnet = make_preset("resnet", resize=32)
    back = resnet.denormalize(resnet.transform(False)(image))
    assert back.dtype == torch.uint8
    assert (back.int() - image.int()).abs().max() <= 1
    inception = make_preset("inception", resize=32, crop=32)
    back = inception.denormalize(inception.transform(False)(image).unsqueeze(0))  # with a batch dim
    gray = ((W[0] * image[0] + W[1] * image[1] + W[2] * image[2]).float()).round().to(torch.uint8)
    assert back.shape == (1, 3, 32, 32)
    assert torch.equal(back[0, 0], back[0, 2])
    assert (back[0, 1].int() - gray.int()).abs().max() <= 1


def test_denormalize_clamps_and_checks_channels():
    preset = make_preset("resnet", resize=4)
    out = preset.denormalize(torch.full((3, 4, 4), 100.0))
    assert out.max().item() == 255
    with pytest.raises(ValueError, match="expects 3 channel"):
        preset.denormalize(torch.zeros(1, 4, 4))


def test_eval_view_is_the_eval_geometry_in_colour():
    preset = make_preset("inception", resize=64, crop=56)
    view = preset.eval_view(_random(80, 100))
    assert (view.shape, view.dtype) == ((3, 56, 56), torch.uint8)


def test_presets_and_transforms_pickle_and_round_trip_as_plain_values():
    preset = make_preset("inception", resize=40, hflip=True)
    image = _random(40, 40)
    clone = pickle.loads(pickle.dumps(preset.transform(False)))
    assert torch.equal(clone(image), preset.transform(False)(image))
    values = json.loads(json.dumps(preset.as_dict()))
    assert Preset.from_dict(values) == preset


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "vgg"}, "unknown preset 'vgg'"),
        ({"name": "resnet", "resize": 32, "crop": 40}, "crop must be between 1 and resize=32"),
        ({"name": "resnet", "resize": 0}, "resize must be a positive"),
    ],
)
def test_bad_preset_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_preset(**kwargs)
