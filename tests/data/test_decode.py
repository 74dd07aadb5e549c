"""Decoding: every mode becomes the same RGB pixels PIL gives; broken files and bombs are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from caltech_cam.data import MAX_PIXELS, BadImageError, load_rgb
from tests.helpers import jpeg_bytes


def _pil_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


@pytest.mark.parametrize(
    ("name", "mode", "fmt"),
    [
        ("rgb.jpg", "RGB", "JPEG"),
        ("gray.jpg", "L", "JPEG"),
        ("cmyk.jpg", "CMYK", "JPEG"),
        ("palette.png", "P", "PNG"),
        ("alpha.png", "RGBA", "PNG"),
        ("gray-alpha.png", "LA", "PNG"),
        ("palette.gif", "P", "GIF"),
        ("rgb.bmp", "RGB", "BMP"),  # not a torchvision format: the PIL fallback
    ],
)
def test_every_mode_decodes_to_the_rgb_pixels_pil_gives(tmp_path, name, mode, fmt):
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, size=(30, 41, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / name
    source.save(path, fmt)
    image = load_rgb(path)
    assert image.dtype == torch.uint8
    assert image.shape == (3, 30, 41)
    assert torch.equal(image, _pil_rgb(path))


def test_grayscale_jpeg_gives_three_equal_channels(tmp_path):
    path = tmp_path / "g.jpg"
    path.write_bytes(jpeg_bytes(1, mode="L"))
    image = load_rgb(path)
    assert torch.equal(image[0], image[1])
    assert torch.equal(image[1], image[2])


def test_truncated_jpeg_names_the_file_and_the_decoders_message(tmp_path):
    data = jpeg_bytes(2, size=(64, 64))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="truncated") as info:
        load_rgb(path)
    assert info.value.path == path
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"RENAME these files\n", "unreadable image header")],
)
def test_empty_and_non_image_files_are_bad_images(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason):
        load_rgb(path)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    # 10000 x 9000 one-bit pixels: a ~12 KB PNG whose RGB decode would need 270 MB.
    path = tmp_path / "bomb.png"
    Image.new("1", (10_000, 9_000)).save(path, "PNG")
    assert path.stat().st_size < 100_000
    assert MAX_PIXELS < 10_000 * 9_000
    with pytest.raises(BadImageError, match=r"decompression bomb refused: 10000x9000 = 90000000 pixels"):
        load_rgb(path)


def test_the_pixel_cap_is_a_parameter(tmp_path):
    path = tmp_path / "small.jpg"
    path.write_bytes(jpeg_bytes(3, size=(20, 10)))
    assert load_rgb(path, max_pixels=200).shape == (3, 10, 20)
    with pytest.raises(BadImageError, match="200 pixels > 199"):
        load_rgb(path, max_pixels=199)


def test_bad_image_error_pickles_with_its_fields(tmp_path):
    import pickle

    err = pickle.loads(
        pickle.dumps(BadImageError(tmp_path / "a.jpg", "boom", others=[(tmp_path / "b.jpg", "bang")]))
    )
    assert (err.path, err.reason, err.others) == (tmp_path / "a.jpg", "boom", [(tmp_path / "b.jpg", "bang")])
    assert "b.jpg: bang" in str(err)


def test_first_frame_of_an_animated_gif(tmp_path):
    frames = [Image.new("RGB", (8, 6), color) for color in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image = load_rgb(path)
    assert image.shape == (3, 6, 8)
    assert image[:, 0, 0].tolist() == [255, 0, 0]


def test_png_with_16_bits_per_channel_scales_to_uint8(tmp_path):
    path = tmp_path / "deep.png"
    values = np.full((4, 5), 65535, dtype=np.uint16)
    values[0, 0] = 257 * 100
    Image.fromarray(values).save(path)  # mode I;16
    image = load_rgb(path)
    assert image.dtype == torch.uint8
    assert image[:, 0, 0].tolist() == [100, 100, 100]
    assert image[:, 1, 1].tolist() == [255, 255, 255]


def test_decode_rgb_on_bytes_equals_load_rgb_on_the_file(tmp_path):
    from caltech_cam.data import decode_rgb

    data = jpeg_bytes(4)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    assert torch.equal(decode_rgb(data), load_rgb(path))
