"""Maps as pictures: colormap overlays and image × layer grids, as uint8 tensors until the file is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torchvision
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor


def colormap_lut(cmap: str = "jet") -> Tensor:
    """The colormap's lookup table as uint8 RGB (N, 3), exactly matplotlib's `cmap(i, bytes=True)`."""
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; e.g. jet, turbo, viridis, inferno, magma") from None
    return torch.as_tensor(colormap(range(colormap.N), bytes=True)[:, :3].copy())


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
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    lut = colormap_lut(cmap).to(images.device)
    index = (maps.float().clamp(0, 1) * len(lut)).floor().long().clamp_max(len(lut) - 1)
    colours = lut[index].movedim(-1, -3).float()  # (..., 3, H, W)
    blended = (1 - alpha) * images.float() + alpha * colours
    return blended.round().clamp(0, 255).to(torch.uint8)


def make_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    captions: Sequence[str] | None = None,
    layer_names: Sequence[str] | None = None,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    pad: int = 2,
    figure: bool = True,
    overlaid: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, Figure | None]:
    """Rows = images, columns = the input then one overlay per layer.

    `images` uint8 (B, 3, H, W); `maps` layer -> (B, H, W) in [0, 1]; `captions` one line per row (e.g. true and
    predicted class names); `layer_names` picks and orders the columns (default: the order of `maps`).
    Returns a uint8 (3, H', W') tensor with white `pad`-pixel gutters (for TensorBoard `add_image`) and a
    matplotlib Figure of the same tiles with column titles and row captions (not attached to pyplot: the
    caller saves or closes it), or None with `figure=False` (the Figure costs far more than the tensor).
    `overlaid`: layer -> overlays already computed by `overlay` (several grids of the same maps share them).
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
    tiles = torch.stack(columns, dim=1)  # (B, C, 3, H, W)
    padded = torch.nn.functional.pad(tiles, (0, pad, 0, pad), value=255)
    grid = padded.permute(2, 0, 3, 1, 4).reshape(3, batch * (height + pad), len(columns) * (width + pad))
    grid = torch.nn.functional.pad(grid, (pad, 0, pad, 0), value=255)

    if not figure:
        return grid, None
    fig = Figure(figsize=(2.2 * len(columns), 2.3 * batch), layout="constrained")
    axes = fig.subplots(batch, len(columns), squeeze=False)
    titles = ["input", *names]
    for row in range(batch):
        for col, ax in enumerate(axes[row]):
            ax.imshow(tiles[row, col].permute(1, 2, 0).cpu())
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
        if captions is not None:
            axes[row, 0].set_ylabel(captions[row], fontsize=8)
    return grid, fig


def captioned_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    captions: Sequence[str],
    layer_names: Sequence[str] | None = None,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    pad: int = 2,
    overlaid: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """`make_grid`'s tiles with the column titles above and each row's caption (may hold newlines) under its row,
    drawn into the picture itself: a uint8 (3, H', W') tensor for TensorBoard `add_image`, no Figure needed."""
    names = list(maps) if layer_names is None else list(layer_names)
    tiles, _ = make_grid(
        images, maps, captions, names, cmap=cmap, alpha=alpha, pad=pad, figure=False, overlaid=overlaid
    )
    batch, _, height, _ = images.shape
    font = ImageFont.load_default(size=max(9, min(16, height // 8)))
    line = font.getbbox("Ag")[3] + 2
    lines = max(caption.count("\n") + 1 for caption in captions)
    band = lines * line + pad
    row = height + pad
    canvas = Image.new("RGB", (tiles.shape[2], line + pad + batch * (row + band)), "white")
    draw = ImageDraw.Draw(canvas)
    tile_width = (tiles.shape[2] - pad) // (len(names) + 1)
    for col, title in enumerate(["input", *names]):
        draw.text((pad + col * tile_width, 1), title, fill="black", font=font)
    strips = tiles[:, pad:].split(row, dim=1)
    for r, strip in enumerate(strips):
        top = line + pad + r * (row + band)
        canvas.paste(Image.fromarray(strip.permute(1, 2, 0).cpu().numpy()), (0, top))
        draw.multiline_text((pad, top + row), captions[r], fill="black", font=font, spacing=2)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).to(tiles.device)


def save_png(picture: Tensor | Figure, path: str | Path, *, dpi: int = 100) -> Path:
    """Write a uint8 (3, H, W) tensor or a Figure as PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(picture, Figure):
        picture.savefig(path, format="png", dpi=dpi)
    elif isinstance(picture, Tensor) and picture.dtype == torch.uint8 and picture.ndim == 3:
        torchvision.io.write_png(picture.cpu(), str(path))
    else:
        raise ValueError(f"save_png takes a uint8 (3, H, W) tensor or a Figure, got {type(picture).__name__}")
    return path
