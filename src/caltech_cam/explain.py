"""`python -m caltech_cam.explain ckpt_path=PATH images=[a.jpg,some/dir] [method=gradcam] [layers=[...]]`.

Loads a `train` checkpoint, applies the model's evaluation preset to each image, and writes into `out_dir`
one PNG grid per image (the input as the model sees it, then one CAM overlay per layer, the top prediction in
the caption) and `predictions.json` (top-5 classes with names and probabilities per image, and the files in
the given folders that are not images). Every image is found and decoded before the model is loaded: a
missing path or an unreadable file stops the run with an error naming it, before anything is written. The
work is `caltech_cam.cam.Explainer`'s, the same as the callback's and the notebook's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig

from caltech_cam.cam import Explainer, get_method, save_png
from caltech_cam.data.decode import BadImageError, load_rgb
from caltech_cam.data.index import IMAGE_EXTENSIONS
from caltech_cam.models.checkpoints import load_classifier
from caltech_cam.run.config import config_dir, register_resolvers
from caltech_cam.utils.devices import resolve_device
from caltech_cam.utils.files import write_text

log = logging.getLogger(__name__)


def find_images(entries: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(images, left out): files as given (any suffix); folders searched recursively (sorted) for the suffixes
    in `data.index.IMAGE_EXTENSIONS`, every other file found in them counted as left out."""
    found: list[Path] = []
    left_out: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            inside = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
            if not inside:
                raise FileNotFoundError(
                    f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {path}"
                    + (f"; it holds only {', '.join(p.name for p in files[:5])}" if files else "")
                )
            found += inside
            left_out += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"image path not found: {path}")
    if not found:
        raise FileNotFoundError("no images given: pass images=[file.jpg,folder/,...]")
    return found, left_out


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
) -> dict[str, Any]:
    """Write a CAM grid per image and `predictions.json` into `out_dir`; returns what the JSON holds."""
    method = get_method(method).name  # an unknown method fails before any work; aliases become canonical
    paths, left_out = find_images(images)
    if left_out:
        log.warning(
            "left out %d file(s) without an image suffix (%s): %s",
            len(left_out),
            ", ".join(sorted(IMAGE_EXTENSIONS)),
            ", ".join(str(p) for p in left_out),
        )
    # Decode every file once up front (and drop it) so that a bad one stops the run before any output.
    try:
        for path in paths:
            load_rgb(path)
    except BadImageError as exc:  # its own hint (data.bad_images=skip) is for training, not for this CLI
        raise ValueError(f"bad image {exc.path}: {exc.reason}; remove it from images=") from None
    module = load_classifier(ckpt, map_location=device)
    explainer = Explainer.of(module, layers, method=method, colormap=colormap, alpha=alpha)
    names = module.class_names
    out = Path(out_dir)
    records: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        explained = explainer.explain_files(chunk)
        top_p, top_c = explained.top(5)
        for i, (path, classes, probs) in enumerate(zip(chunk, top_c.tolist(), top_p.tolist(), strict=True)):
            grid_path = save_png(explained.grid(rows=[i]), out / f"{start + i:04d}_{path.stem}_{method}.png")
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
    summary = {
        "checkpoint": str(ckpt),
        "method": method,
        "layers": explainer.layers,
        "images": records,
        "left_out": [str(p) for p in left_out],
    }
    write_text(out / "predictions.json", json.dumps(summary, indent=2))
    return summary


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="explain")
def main(cfg: DictConfig) -> None:
    images = list(cfg.images) if isinstance(cfg.images, ListConfig) else [cfg.images]
    device = str(resolve_device(cfg.device))
    summary = explain(
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
    left_out = f"; {len(summary['left_out'])} non-image file(s) left out" if summary["left_out"] else ""
    print(
        f"{len(summary['images'])} image(s) explained with {summary['method']}: grids and predictions.json "
        f"in {cfg.out_dir}{left_out}"
    )


if __name__ == "__main__":
    main()
