"""`python -m caltech_cam.explain ckpt_path=PATH images=[a.jpg,some/dir] [method=gradcam] [layers=[...]]`.

Loads a `train` checkpoint, applies the model's evaluation preset to each image, and writes into `out_dir`
one PNG grid per image (the input as the model sees it, then one CAM overlay per layer, the top prediction in
the caption) and `predictions.json` (top-5 classes with names and probabilities per image). Every image is
found and decoded before the model is loaded: a missing path or an unreadable file stops the run with an
error naming it, before anything is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig

from caltech_cam.cam import compute_cams, get_method, make_grid, save_png
from caltech_cam.config import config_dir
from caltech_cam.data.decode import BadImageError, load_rgb
from caltech_cam.module import load_classifier

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_images(entries: Sequence[str | Path]) -> list[Path]:
    """Files as given (any suffix), folders searched recursively for .jpg/.jpeg/.png (sorted)."""
    found: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in folder {path}")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"image path not found: {path}")
    if not found:
        raise FileNotFoundError("no images given: pass images=[file.jpg,folder/,...]")
    return found


def explain(
    ckpt: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = "gradcam",
    layers: Sequence[str] | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> list[dict[str, Any]]:
    """Write a CAM grid per image and `predictions.json` into `out_dir`; returns the per-image records."""
    get_method(method)  # an unknown method fails before any work
    paths = find_images(images)
    # Decode every file once up front (and drop it) so that a bad one stops the run before any output.
    try:
        for path in paths:
            load_rgb(path)
    except BadImageError as exc:  # its own hint (data.bad_images=skip) is for training, not for this CLI
        raise ValueError(f"bad image {exc.path}: {exc.reason}; remove it from images=") from None
    module = load_classifier(ckpt, map_location=device)
    layers = list(layers) if layers else list(module.cam_layers)
    preset, names = module.preset, module.class_names
    transform = preset.transform(train=False)
    out = Path(out_dir)
    records: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk = [load_rgb(p) for p in paths[start : start + batch_size]]
        x = torch.stack([transform(p) for p in chunk]).to(device)
        maps = compute_cams(module.model, x, layers, method=method)
        with torch.inference_mode():
            probabilities = module(x).softmax(dim=1)
        top = probabilities.topk(min(5, probabilities.shape[1]), dim=1)
        # The model may see gray (inception preset); the overlay shows the same crop in colour.
        backdrops = torch.stack([preset.eval_view(p) for p in chunk]).to(device)
        for i, (classes, probs) in enumerate(zip(top.indices.tolist(), top.values.tolist(), strict=True)):
            index = start + i
            path = paths[index]
            caption = f"{path.name}\npred: {names[classes[0]]} ({probs[0]:.1%})"
            _, figure = make_grid(
                backdrops[i : i + 1],
                {layer: m[i : i + 1] for layer, m in maps.items()},
                [caption],
                layers,
                cmap=colormap,
                alpha=alpha,
            )
            grid_path = save_png(figure, out / f"{index:04d}_{path.stem}_{method}.png")
            records.append(
                {
                    "image": str(path),
                    "grid": str(grid_path),
                    "top5": [
                        {"class": c, "name": names[c], "probability": p}
                        for c, p in zip(classes, probs, strict=True)
                    ],
                }
            )
            log.info("%s -> %s (%s %.1f%%)", path, grid_path.name, names[classes[0]], 100 * probs[0])
    summary = {"checkpoint": str(ckpt), "method": method, "layers": layers, "images": records}
    (out / "predictions.json").write_text(json.dumps(summary, indent=2))
    return records


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="explain")
def main(cfg: DictConfig) -> None:
    images = list(cfg.images) if isinstance(cfg.images, ListConfig) else [cfg.images]
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    records = explain(
        cfg.ckpt_path,
        images,
        cfg.out_dir,
        method=cfg.method,
        layers=list(cfg.layers) if cfg.layers else None,
        device=device,
        batch_size=cfg.batch_size,
        colormap=cfg.colormap,
        alpha=cfg.alpha,
    )
    print(f"{len(records)} image(s) explained with {cfg.method}: grids and predictions.json in {cfg.out_dir}")


if __name__ == "__main__":
    main()
