"""The uint8 cache (``data.cache=uint8``): every usable image decoded once and resized to R x R, kept in one
memory-mapped file, so an epoch reads bytes instead of decoding JPEGs.

- Same pixels as the live path: the resize is the preset's own ``v2.Resize((R, R), antialias=True)`` on the
  decoded uint8 image, so the cached bytes equal the live path's resized image exactly (tests/data/test_cache.py).
- One file per (root, size) in the cache folder: ``uint8-<root key>-<R>-<content key>.bin`` holding N x 3 x R x R
  bytes, and its index ``uint8-<root key>-<R>.json`` (path -> row, each file's sha1, the torchvision version).
  Both are written to a temporary file and renamed, data first, so a reader sees a whole old cache or a whole new
  one. A different size is a different file (both kept: the two presets' small-input sizes can alternate).
- Keyed by content: the index records each file's sha1 (the decode check's). A changed, added or removed file, or
  another torchvision (its resize kernel), makes the cache stale: :func:`ensure_cache` logs what changed and
  rebuilds it; :func:`open_cache` (every rank's ``setup``, which never decodes) refuses it with the same message.
- Zero-copy and picklable: :class:`CachedImages` maps the file lazily (``torch.from_file``, a private read-only
  mapping of the page cache) in whichever process first reads it and never pickles the array, so DataLoader
  workers and ``ddp_spawn`` ranks share the page cache instead of holding a copy each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from caltech_cam.data.check import FileCheck
from caltech_cam.data.decode import MAX_PIXELS, decode_rgb
from caltech_cam.data.index import DatasetIndex
from caltech_cam.utils.files import write_atomically

log = logging.getLogger(__name__)

CACHE_MODES = ("uint8",)
CACHE_FOLDER = "caltech_cam_cache"  # beside the data when data.cache_dir is null
_FORMAT = "caltech_cam uint8 cache v1"
_CHUNK = 256  # images decoded ahead of the writer at most (bounded memory while building)


class CacheError(RuntimeError):
    """A uint8 cache that is missing, stale, or cannot be written (names the file and what to do)."""


def check_cache_mode(mode: str | None) -> str | None:
    """``data.cache`` itself if it is ``None`` or one of :data:`CACHE_MODES` (checked once, where it enters)."""
    if mode is not None and mode not in CACHE_MODES:
        raise ValueError(f"data.cache must be null or one of {CACHE_MODES}, got {mode!r}")
    return mode


def cache_folder(cache_dir: str | Path | None, root: Path) -> Path:
    """``data.cache_dir`` when set, else ``caltech_cam_cache/`` beside the class-folder root (``root``)."""
    return Path(cache_dir) if cache_dir is not None else root.parent / CACHE_FOLDER


def index_file(folder: Path, root: Path, size: int) -> Path:
    """The index of the cache of ``root`` at ``size`` (one per root and size; the root by its absolute path)."""
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return folder / f"uint8-{key}-{size}.json"


@dataclass(frozen=True)
class CacheIndex:
    """What a cache file holds: ``entries`` maps each relative path to its sha1, in row order."""

    root: str
    size: int
    torchvision: str
    data: str  # the data file's name, in the index's folder
    entries: dict[str, str]

    @property
    def nbytes(self) -> int:
        return len(self.entries) * 3 * self.size * self.size

    @classmethod
    def read(cls, path: Path) -> CacheIndex | None:
        """The index at ``path``, or ``None`` when there is none (or it is not one of ours)."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != _FORMAT:
                return None
            entries = {str(p): str(sha1) for p, sha1 in raw["entries"]}
            return cls(str(raw["root"]), int(raw["size"]), str(raw["torchvision"]), str(raw["data"]), entries)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable or foreign: treated as absent, so it is rebuilt (never read)

    def write(self, path: Path) -> None:
        body = {
            "format": _FORMAT,
            "root": self.root,
            "size": self.size,
            "torchvision": self.torchvision,
            "data": self.data,
            "entries": [[p, s] for p, s in self.entries.items()],
        }
        with write_atomically(path) as fh:
            json.dump(body, fh)


def staleness(
    index: CacheIndex | None, wanted: Mapping[str, str], size: int, *, exact: bool = True
) -> str | None:
    """Why the cache ``index`` cannot serve the files ``wanted`` (relative path -> sha1) at ``size``; ``None`` when
    it can. ``exact``: it must hold exactly those files (a build); else a superset is fine (a split subset)."""
    if index is None:
        return "there is no cache yet"
    if index.size != size:
        return f"it holds {index.size} px images, not {size} px"
    if index.torchvision != torchvision.__version__:
        return f"it was resized by torchvision {index.torchvision}, not {torchvision.__version__}"
    changed = [p for p, sha1 in wanted.items() if p in index.entries and index.entries[p] != sha1]
    added = [p for p in wanted if p not in index.entries]
    removed = [p for p in index.entries if p not in wanted] if exact else []
    if not (changed or added or removed):
        return None
    parts = [
        f"{len(found)} file(s) {what} ({', '.join(found[:5])}{', ...' if len(found) > 5 else ''})"
        for found, what in ((changed, "changed content"), (added, "are new"), (removed, "are gone"))
        if found
    ]
    return "; ".join(parts)


def ensure_cache(
    index: DatasetIndex,
    checks: Mapping[str, FileCheck],
    size: int,
    folder: Path,
    *,
    num_threads: int = 1,
    progress: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> Path:
    """Build the cache of every usable file of ``index`` at ``size`` unless an up-to-date one exists; returns
    its index file. A stale one is rebuilt, and the log names what changed."""
    wanted = {f.path: checks[f.path].sha1 for f in index.files if checks[f.path].ok}
    where = index_file(folder, index.root, size)
    old = CacheIndex.read(where)
    why = staleness(old, wanted, size)
    if why is None:
        data = folder / old.data
        found = data.stat().st_size if data.is_file() else None
        if found == old.nbytes:
            return where
        # An index without its data (deleted, truncated, copied without it) is rebuilt, not a dead end.
        why = f"its data file {data} is {'missing' if found is None else f'{found} bytes, not {old.nbytes}'}"
    if old is None and (others := _other_sizes(where)):
        why += f" at {size} px (this root's cache at {', '.join(map(str, others))} px is kept)"
    # A first build is news; a rebuild replaces data someone may expect to be reused: say why, louder.
    log.log(
        logging.INFO if old is None else logging.WARNING,
        "uint8 cache %s: %s; %s it (%d images at %d px)",
        where,
        why,
        "building" if old is None else "rebuilding",
        len(wanted),
        size,
    )
    key = [str(index.root), size, torchvision.__version__, list(wanted.items())]
    content_key = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
    new = CacheIndex(
        str(index.root), size, torchvision.__version__, f"{where.stem}-{content_key}.bin", wanted
    )
    folder.mkdir(parents=True, exist_ok=True)
    _check_free_space(folder, new.nbytes)

    images = _resized(index, wanted, size, num_threads, max_pixels)
    # Data before index: the index never names a torn file.
    with write_atomically(folder / new.data, mode="wb") as fh:
        for image in _track(images, len(wanted), progress, size):
            fh.write(memoryview(image.numpy()))
    new.write(where)
    for stale in folder.glob(f"{where.stem}-*.bin"):  # older content of this root and size
        if stale.name != new.data:
            stale.unlink(missing_ok=True)  # a reader still mapping it keeps its pages (POSIX)
    log.info("uint8 cache %s: %d images, %.2f GB", folder / new.data, len(wanted), new.nbytes / 1e9)
    return where


def open_cache(folder: Path, root: Path, size: int, wanted: Mapping[str, str]) -> CachedImages:
    """The cached images of ``wanted`` (relative path -> sha1) at ``size``; never decodes or writes.

    A missing or stale cache is a :class:`CacheError` naming what changed: ``prepare_data`` (or
    ``python -m caltech_cam.prepare data.cache=uint8``) builds it.
    """
    where = index_file(folder, root, size)
    index = CacheIndex.read(where)
    why = staleness(index, wanted, size, exact=False)
    if why is None:
        data = folder / index.data
        found = data.stat().st_size if data.is_file() else None
        if found == index.nbytes:
            return CachedImages(data, list(index.entries), size)
        why = (
            f"its data file {data} is {'missing' if found is None else f'{found} bytes, not {index.nbytes}'}"
        )
    raise CacheError(
        f"the uint8 cache {where} cannot be used: {why}. prepare_data() builds it (a Lightning Trainer calls it "
        "before setup()); outside a Trainer call datamodule.prepare_data() first, or run  python -m "
        "caltech_cam.prepare data.cache=uint8  with the same data settings."
    )


class CachedImages:
    """The uint8 images (N, 3, R, R) of one cache file, mapped on first access in each process.

    Pickles as the file name and the row table only (DataLoader workers, ``ddp_spawn``); rows are zero-copy views
    of a private read-only mapping, so processes share the page cache.
    """

    def __init__(self, file: Path, paths: Sequence[str], size: int) -> None:
        self.file = Path(file)
        self.size = int(size)
        self.rows = {p: i for i, p in enumerate(paths)}
        self._images: Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, row: int) -> Tensor:
        return self.images[row]

    @property
    def images(self) -> Tensor:
        if self._images is None:
            n, r = len(self.rows), self.size
            # shared=False: a MAP_PRIVATE mapping; nothing is read until a row is touched, nothing written back.
            flat = torch.from_file(str(self.file), shared=False, size=n * 3 * r * r, dtype=torch.uint8)
            self._images = flat.view(n, 3, r, r)
        return self._images

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}


class CachedDataset(Dataset):
    """Files of one split served from a :class:`CachedImages`: ``(uint8 (3, R, R) view, label)``.

    The preset's remaining steps (crop, flip, gray, normalize) run on the batch, on the device
    (:func:`caltech_cam.data.device_aug.finish_preset`).
    """

    def __init__(self, images: CachedImages, paths: Sequence[str], labels: Sequence[int], root: Path) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.images = images
        self.rows = [images.rows[p] for p in paths]
        self.labels = [int(y) for y in labels]
        self.paths = [Path(root) / p for p in paths]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[self.rows[i]], self.labels[i]

    def raw(self, i: int) -> Tensor:
        """The cached image: uint8 RGB (3, R, R), already resized (not the file's own size)."""
        return self.images[self.rows[i]]


def _other_sizes(where: Path) -> list[int]:
    """The sizes of the other caches of the root whose index is ``where`` (``uint8-<key>-<size>.json``)."""
    key = where.stem.rsplit("-", 1)[0]
    sizes = (p.stem.rsplit("-", 1)[1] for p in where.parent.glob(f"{key}-*.json") if p != where)
    return sorted(int(s) for s in sizes if s.isdigit())


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise CacheError(
            f"the uint8 cache needs {needed / 1e9:.2f} GB ({needed} bytes) in {folder}, but only "
            f"{free / 1e9:.2f} GB is free. Free some space, point data.cache_dir at a larger disk, or set "
            "data.cache=null (decode every epoch)."
        )


def _resized(
    index: DatasetIndex, wanted: Mapping[str, str], size: int, num_threads: int, max_pixels: int
) -> Iterator[Tensor]:
    """Each wanted file decoded and resized, in order; decoding runs on threads (torchvision releases the GIL)."""
    resize = v2.Resize((size, size), antialias=True)  # the preset's own step: identical bytes

    def load(path: str) -> Tensor:
        data = index.abspath(path).read_bytes()
        if hashlib.sha1(data).hexdigest() != wanted[path]:
            raise CacheError(
                f"{index.abspath(path)} changed since its decode check (sha1 differs); run again to re-check it"
            )
        return resize(decode_rgb(data, index.abspath(path), max_pixels=max_pixels)).contiguous()

    paths = list(wanted)
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        for start in range(0, len(paths), _CHUNK):
            yield from pool.map(load, paths[start : start + _CHUNK])


def _track(items: Iterable[Tensor], total: int, progress: bool, size: int) -> Iterable[Tensor]:
    if not progress:
        return items
    from rich.progress import track

    return track(items, total=total, description=f"uint8 cache: {total} images at {size} px")
