"""Overlays and grids: exact colours for hand-made maps, exact tile placement, readable PNGs."""

from __future__ import annotations

import matplotlib
import pytest
import torch
import torchvision
from matplotlib.figure import Figure

from caltech_cam.cam import captioned_grid, colormap_lut, make_grid, overlay, save_png


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
    grid, figure = make_grid(images, maps, ["true: ak47 / pred: dog", "true: cat / pred: cat"], pad=pad)
    columns = [images, overlay(images, maps["layer1"]), overlay(images, maps["layer4"])]
    assert grid.shape == (3, pad + b * (h + pad), pad + 3 * (w + pad)) and grid.dtype == torch.uint8
    gutter = torch.ones_like(grid, dtype=torch.bool)
    for row in range(b):
        for col, tiles in enumerate(columns):
            top, left = pad + row * (h + pad), pad + col * (w + pad)
            assert torch.equal(grid[:, top : top + h, left : left + w], tiles[row]), (row, col)
            gutter[:, top : top + h, left : left + w] = False
    assert (grid[gutter] == 255).all()
    # The Figure: same tiles, columns titled, rows captioned.
    axes = figure.axes
    assert len(axes) == b * 3
    assert [ax.get_title() for ax in axes[:3]] == ["input", "layer1", "layer4"]
    assert axes[3].get_ylabel() == "true: cat / pred: cat"
    assert (axes[4].get_images()[0].get_array() == columns[1][1].permute(1, 2, 0).numpy()).all()


def test_grid_column_order_follows_layer_names():
    images = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    maps = {"a": torch.zeros(1, 4, 4), "b": torch.ones(1, 4, 4)}
    grid, _ = make_grid(images, maps, layer_names=["b"], pad=0, alpha=1.0)
    assert grid.shape == (3, 4, 8)
    assert torch.equal(grid[:, 0, 4], colour("jet", 1.0))


def test_save_png_round_trips_tensors_and_writes_figures(tmp_path):
    picture = torch.randint(0, 256, (3, 10, 14), dtype=torch.uint8)
    path = save_png(picture, tmp_path / "nested" / "grid.png")
    assert torch.equal(torchvision.io.read_image(str(path)), picture)
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([0, 1])
    fig_path = save_png(figure, tmp_path / "figure.png", dpi=50)
    assert torchvision.io.read_image(str(fig_path)).shape == (4, 50, 100)  # RGBA, figsize × dpi
    with pytest.raises(ValueError, match="uint8 \\(3, H, W\\) tensor or a Figure, got Tensor"):
        save_png(picture.float(), tmp_path / "bad.png")


def test_captioned_grid_keeps_the_tiles_and_draws_titles_and_captions():
    b, h, w, pad = 2, 32, 32, 2
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8)
    maps = {"layer1": torch.rand(b, h, w), "layer4": torch.rand(b, h, w)}
    tiles, _ = make_grid(images, maps, pad=pad, figure=False)
    captions = ["true: ak47\npred: dog", "true: cat\npred: cat"]
    picture = captioned_grid(images, maps, captions, pad=pad)
    assert picture.dtype == torch.uint8 and picture.shape[0] == 3 and picture.shape[2] == tiles.shape[2]
    # Find each row of tiles in the picture: identical pixels, in order, separated by text bands.
    rows = tiles[:, pad:].split(h + pad, dim=1)
    tops = []
    for row in rows:
        hits = [y for y in range(picture.shape[1] - h) if torch.equal(picture[:, y : y + h + pad], row)]
        assert len(hits) == 1
        tops.append(hits[0])
    assert 0 < tops[0] < tops[1]
    title_band = picture[:, : tops[0]]
    caption_band = picture[:, tops[0] + h + pad : tops[1]]
    assert (title_band < 128).any(), "column titles are drawn"
    assert (caption_band < 128).any(), "the first row's caption is drawn"
    other = captioned_grid(images, maps, ["x", "y"], pad=pad)
    assert not torch.equal(other, picture)
