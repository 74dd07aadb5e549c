"""Overlays and grids: exact colours for hand-made maps, exact tile placement, readable PNGs."""

from __future__ import annotations

import matplotlib
import pytest
import torch
import torchvision

from caltech_cam.cam import colormap_lut, make_grid, overlay, save_png, to_pil


def colour(cmap: str, value: float) -> torch.Tensor:
    """matplotlib's own answer for one value, as a (3,) uint8 tensor."""
    return torch.tensor(matplotlib.colormaps[cmap](value, bytes=True)[:3], dtype=torch.uint8)


@pytest.mark.parametrize("cmap", ["jet", "viridis", "turbo"])
def test_alpha_one_gives_the_colormaps_colours_exactly(cmap):
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    values = [0.0, 0.1, 0.37, 0.5, 0.999, 1.0]
    for value in values:
        out = overlay(images, torch.full((2, 5, 7), value), cmap=cmap, alpha=1.0)
        assert torch.equal(out, colour(cmap, value).view(1, 3, 1, 1).expand(2, 3, 5, 7)), value
    assert torch.equal(colormap_lut("jet")[-1], torch.tensor([127, 0, 0], dtype=torch.uint8))  # jet dark red


def test_alpha_blends_by_hand():
    image = torch.tensor([100, 20, 255], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2).clone()
    maps = torch.tensor([[0.0, 1.0], [2.0, -1.0]])  # out-of-range values are clamped to [0, 1]
    assert torch.equal(overlay(image, maps, alpha=0.0), image)
    out = overlay(image, maps, cmap="jet", alpha=0.25)
    bottom, top = colour("jet", 0.0).float(), colour("jet", 1.0).float()  # (0, 0, 127) and (127, 0, 0)
    base = torch.tensor([100.0, 20.0, 255.0])
    expected = {(0, 0): bottom, (0, 1): top, (1, 0): top, (1, 1): bottom}
    for (i, j), c in expected.items():
        assert torch.equal(out[:, i, j], (0.75 * base + 0.25 * c).round().to(torch.uint8))
    assert out[:, 0, 0].tolist() == [75, 15, round(0.75 * 255 + 0.25 * 127)]


def test_grid_places_every_tile_with_white_gutters():
    b, h, w, pad = 2, 6, 4, 2
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8)
    maps = {"layer1": torch.rand(b, h, w), "layer4": torch.rand(b, h, w)}
    grid = make_grid(images, maps, pad=pad, titles=False)
    columns = [images, overlay(images, maps["layer1"]), overlay(images, maps["layer4"])]
    assert grid.shape == (3, pad + b * (h + pad), pad + 3 * (w + pad)) and grid.dtype == torch.uint8
    gutter = torch.ones_like(grid, dtype=torch.bool)
    for row in range(b):
        for col, tiles in enumerate(columns):
            top, left = pad + row * (h + pad), pad + col * (w + pad)
            assert torch.equal(grid[:, top : top + h, left : left + w], tiles[row]), (row, col)
            gutter[:, top : top + h, left : left + w] = False
    assert (grid[gutter] == 255).all()


def test_grid_column_order_follows_layer_names():
    images = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    maps = {"a": torch.zeros(1, 4, 4), "b": torch.ones(1, 4, 4)}
    grid = make_grid(images, maps, layer_names=["b"], pad=0, alpha=1.0, titles=False)
    assert grid.shape == (3, 4, 8)
    assert torch.equal(grid[:, 0, 4], colour("jet", 1.0))


def test_precomputed_overlays_are_used_as_given():
    images = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    maps = {"a": torch.zeros(1, 4, 4)}
    mark = torch.full((1, 3, 4, 4), 7, dtype=torch.uint8)
    grid = make_grid(images, maps, pad=0, titles=False, overlaid={"a": mark})
    assert torch.equal(grid[:, :, 4:], mark[0])


def test_save_png_and_to_pil_round_trip_tensors(tmp_path):
    picture = torch.randint(0, 256, (3, 10, 14), dtype=torch.uint8)
    path = save_png(picture, tmp_path / "nested" / "grid.png")
    assert torch.equal(torchvision.io.read_image(str(path)), picture)
    image = to_pil(picture)
    assert image.size == (14, 10) and image.getpixel((3, 2)) == tuple(picture[:, 2, 3].tolist())
    for bad, what in ((picture.float(), "torch.float32 \\(3, 10, 14\\)"), ("x.png", "str")):
        with pytest.raises(ValueError, match=f"expected a uint8 \\(3, H, W\\) picture tensor, got {what}"):
            save_png(bad, tmp_path / "bad.png")


def find_rows(picture: torch.Tensor, tiles: torch.Tensor, h: int, pad: int) -> list[int]:
    """Where each row of tiles (with its gutter) sits in `picture`: identical pixels, exactly once each."""
    tops = []
    for row in tiles[:, pad:].split(h + pad, dim=1):
        hits = [y for y in range(picture.shape[1] - h) if torch.equal(picture[:, y : y + h + pad], row)]
        assert len(hits) == 1
        tops.append(hits[0])
    return tops


def test_titles_and_captions_are_drawn_around_unchanged_tiles():
    b, h, w, pad = 2, 32, 32, 2
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8)
    maps = {"layer1": torch.rand(b, h, w), "layer4": torch.rand(b, h, w)}
    tiles = make_grid(images, maps, pad=pad, titles=False)
    captions = ["true: ak47\npred: dog", "true: cat\npred: cat"]
    picture = make_grid(images, maps, captions, pad=pad)
    assert picture.dtype == torch.uint8 and picture.shape[0] == 3 and picture.shape[2] == tiles.shape[2]
    tops = find_rows(picture, tiles, h, pad)
    assert 0 < tops[0] < tops[1]
    title_band = picture[:, : tops[0]]
    caption_band = picture[:, tops[0] + h + pad : tops[1]]
    assert (title_band < 128).any(), "column titles are drawn"
    assert (caption_band < 128).any(), "the first row's caption is drawn"
    assert not torch.equal(make_grid(images, maps, ["x", "y"], pad=pad), picture)
    # Titles only: the rows follow each other directly under the title band, which is the same as above.
    titled = make_grid(images, maps, pad=pad)
    assert find_rows(titled, tiles, h, pad) == [tops[0], tops[0] + h + pad]
    assert titled.shape[1] == tops[0] + b * (h + pad)
    assert torch.equal(titled[:, : tops[0]], title_band)
    # Captions only: no title band, the first row where the bare grid has it.
    untitled = make_grid(images, maps, captions, pad=pad, titles=False)
    assert find_rows(untitled, tiles, h, pad)[0] == pad
    assert untitled.shape[1] == picture.shape[1] - tops[0] + pad
