"""Maps as pictures: colormap overlays and the one image × layer grid, uint8 tensors until a file is written.

`make_grid` is the only renderer: `explain`'s PNGs, the callback's TensorBoard pictures and the notebook all
draw with it. Text is drawn by PIL into a white canvas that becomes a tensor; no numpy, no matplotlib Figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from caltech_cam.utils.files import write_atomically


def colormap_lut(cmap: str = "jet") -> Tensor:
    """The colormap's lookup table as uint8 RGB (N, 3), exactly matplotlib's `cmap(i, bytes=True)`."""
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; e.g. jet, turbo, viridis, inferno, magma") from None
    return torch.as_tensor(colormap(range(colormap.N), bytes=True)[:, :3].copy())


def check_style(cmap: str, alpha: float) -> None:
    """The one check of an overlay's colormap (a matplotlib name) and alpha (in [0, 1]), for every caller."""
    colormap_lut(cmap)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def overlay(images: Tensor, maps: Tensor, *, cmap: str = "jet", alpha: float = 0.5) -> Tensor:
    """Blend maps onto images: out = round((1 − α)·image + α·cmap(map)), uint8 (..., 3, H, W).

    `images` uint8 (..., 3, H, W); `maps` (..., H, W) in [0, 1] (clamped). A value v picks colour
    floor(v·N) (N = the colormap's size, v = 1 → the top colour), matplotlib's own rule for floats.
    """
    if images.dtype != torch.uint8 or images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"images must be uint8 (..., 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if maps.shape != images.shape[:-3] + images.shape[-2:]:
        raise ValueError(
            f"maps of shape {tuple(maps.shape)} do not fit images of shape {tuple(images.shape)}"
        )
    check_style(cmap, alpha)
    lut = colormap_lut(cmap).to(images.device)
    index = (maps.float().clamp(0, 1) * len(lut)).floor().long().clamp_max(len(lut) - 1)
    colours = lut[index].movedim(-1, -3).float()  # (..., 3, H, W)
    blended = (1 - alpha) * images.float() + alpha * colours
    return blended.round().clamp(0, 255).to(torch.uint8)


def _tiles(images: Tensor, columns: Sequence[Tensor], pad: int) -> Tensor:
    """Rows = images, columns = `columns` (each uint8 (B, 3, H, W)), white `pad`-pixel gutters: (3, H', W')."""
    batch, _, height, width = images.shape
    tiles = torch.stack(list(columns), dim=1)  # (B, C, 3, H, W)
    padded = torch.nn.functional.pad(tiles, (0, pad, 0, pad), value=255)
    grid = padded.permute(2, 0, 3, 1, 4).reshape(3, batch * (height + pad), len(columns) * (width + pad))
    return torch.nn.functional.pad(grid, (pad, 0, pad, 0), value=255)


def make_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    captions: Sequence[str] | None = None,
    layer_names: Sequence[str] | None = None,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    pad: int = 2,
    titles: bool = True,
    overlaid: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Rows = images, columns = the input then one overlay per layer, as a uint8 (3, H', W') CPU tensor.

    `images` uint8 (B, 3, H, W); `maps` layer -> (B, H, W) in [0, 1]; `layer_names` picks and orders the columns
    (default: the order of `maps`). With `titles` the column names ("input", then the layers) are drawn above the
    tiles; `captions` (one per row, may hold newlines) are drawn under each row. With neither, the tiles alone
    with white `pad`-pixel gutters. `overlaid`: layer -> overlays already computed by `overlay` (several grids
    of the same maps share them). For TensorBoard `add_image(tag, grid, step)` or `save_png`.
    """
    names = list(maps) if layer_names is None else list(layer_names)
    missing = [name for name in names if name not in maps]
    if missing:
        raise ValueError(f"no map for layer {missing[0]!r}; maps has {', '.join(maps)}")
    batch, _, height, width = images.shape
    if captions is not None and len(captions) != batch:
        raise ValueError(f"{len(captions)} captions for {batch} images")
    done = overlaid or {}
    columns = [images] + [
        done[name] if name in done else overlay(images, maps[name], cmap=cmap, alpha=alpha) for name in names
    ]
    tiles = _tiles(images, columns, pad).cpu()
    if not titles and captions is None:
        return tiles
    font = ImageFont.load_default(size=max(9, min(16, height // 8)))
    line = font.getbbox("Ag")[3] + 2
    title_band = line if titles else 0
    caption_band = (max(c.count("\n") + 1 for c in captions) * line + pad) if captions is not None else 0
    row = height + pad
    canvas = Image.new("RGB", (tiles.shape[2], title_band + pad + batch * (row + caption_band)), "white")
    draw = ImageDraw.Draw(canvas)
    tile_width = width + pad
    if titles:
        for col, title in enumerate(["input", *names]):
            draw.text((pad + col * tile_width, 1), title, fill="black", font=font)
    tops = [title_band + pad + r * (row + caption_band) for r in range(batch)]
    for top, caption in zip(tops, captions or [], strict=False):
        draw.multiline_text((pad, top + row), caption, fill="black", font=font, spacing=2)
    picture = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)
    picture = picture.view(canvas.height, canvas.width, 3).permute(2, 0, 1).contiguous()
    for top, strip in zip(tops, tiles[:, pad:].split(row, dim=1), strict=True):
        picture[:, top : top + row] = strip
    return picture


def to_pil(picture: Tensor) -> Image.Image:
    """A uint8 (3, H, W) tensor as a PIL image (e.g. to show a grid in a notebook)."""
    _check_picture(picture)
    return TF.to_pil_image(picture.cpu())


def save_png(picture: Tensor, path: str | Path) -> Path:
    """Write a uint8 (3, H, W) tensor as PNG, atomically (parent folders created); returns the path."""
    _check_picture(picture)
    path = Path(path)
    with write_atomically(path, mode="wb") as fh:
        fh.write(torchvision.io.encode_png(picture.cpu()).numpy().tobytes())
    return path


def _check_picture(picture: object) -> None:
    if not (isinstance(picture, Tensor) and picture.dtype == torch.uint8 and picture.ndim == 3):
        what = (
            f"{picture.dtype} {tuple(picture.shape)}"
            if isinstance(picture, Tensor)
            else type(picture).__name__
        )
        raise ValueError(f"expected a uint8 (3, H, W) picture tensor, got {what}")
