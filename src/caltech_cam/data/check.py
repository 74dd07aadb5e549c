"""The index-time decode check: every file is hashed and decoded once, so a bad file never surfaces mid-epoch.

The decoded pixels also give each file its perceptual hash (:func:`caltech_cam.data.phash.perceptual_hash`),
which the splits use to keep near-duplicates together. Results are cached in a small TSV keyed by (path, size,
mtime) and by the decoders' versions (torchvision, Pillow): a later run over an unchanged root with the same
decoders neither re-reads nor re-decodes anything, and an upgraded decoder re-checks every file (logged), so two
generations of perceptual hashes never mix.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import PIL
import torchvision

from caltech_cam.data.decode import MAX_PIXELS, BadImageError, decode_rgb
from caltech_cam.data.index import DataNotPreparedError, DatasetIndex
from caltech_cam.data.phash import format_hash, parse_hash, perceptual_hash
from caltech_cam.utils.files import write_atomically

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("error", "skip")
_CACHE_HEADER = ("path", "size", "mtime_ns", "sha1", "phash", "error")
# v2 added the perceptual hash: a v1 cache has none, so every file is checked again (and the log says why).
_CACHE_VERSION = "# caltech_cam decode-check v2"
_CACHE_PREFIX = "# caltech_cam decode-check "


def decoders() -> str:
    """The versions of what decodes and hashes the files: a cache written by others is not trusted."""
    return f"torchvision={torchvision.__version__} pillow={PIL.__version__}"


def _first_line() -> str:
    return f"{_CACHE_VERSION} {decoders()}"


@dataclass(frozen=True)
class FileCheck:
    """The content hash of one file, its perceptual hash (``None`` when it does not decode) and the decoder's
    complaint (``None`` when it decodes)."""

    sha1: str
    error: str | None = None
    phash: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Stamp:
    size: int
    mtime_ns: int


def cache_file_for(cache_dir: str | Path, root: Path, max_pixels: int = MAX_PIXELS) -> Path:
    """One cache file per dataset root (and decode limit), named by a hash of the root's absolute path."""
    key = hashlib.sha1(f"{root.resolve()}|{max_pixels}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"decode-check-{key}.tsv"


def check_file(path: Path, max_pixels: int = MAX_PIXELS) -> FileCheck:
    """Hash, fully decode and perceptually hash one file."""
    data = path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    try:
        image = decode_rgb(data, path, max_pixels=max_pixels)
    except BadImageError as exc:
        return FileCheck(digest, exc.reason)
    return FileCheck(digest, phash=perceptual_hash(image))


def check_images(
    index: DatasetIndex,
    *,
    cache_file: str | Path | None = None,
    num_threads: int = 1,
    progress: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> dict[str, FileCheck]:
    """Hash and decode every indexed file (cached ones whose size and mtime are unchanged are trusted).

    Returns relative path -> :class:`FileCheck`. Decoding runs on ``num_threads`` threads: torchvision's
    decoders release the GIL, so threads scale without pickling anything.
    """
    stamps = _stamps(index)
    results, todo = _trusted(stamps, _read_cache(Path(cache_file)) if cache_file else {})
    if todo:
        if cache_file and (old := _older_format(Path(cache_file))):
            log.warning(
                "the decode-check cache %s is %s: checking all %d images again", cache_file, old, len(stamps)
            )
        log.info(
            "decode-checking %d of %d images (%d cached)", len(todo), len(stamps), len(stamps) - len(todo)
        )
        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            checks = pool.map(lambda p: check_file(index.abspath(p), max_pixels), todo)
            for path, result in zip(todo, _track(checks, len(todo), progress), strict=True):
                results[path] = result
        if cache_file:
            _write_cache(Path(cache_file), {p: (stamps[p], results[p]) for p in stamps})
    return {f.path: results[f.path] for f in index.files}


def load_checks(index: DatasetIndex, cache_file: str | Path | None) -> dict[str, FileCheck]:
    """The verdicts :func:`check_images` stored in ``cache_file`` for every indexed file; never decodes anything.

    Raises :class:`DataNotPreparedError` when the file is missing or any indexed file has no entry with its
    current size and mtime (added or changed since the check): such a file was never decode-checked.
    """
    stamps = _stamps(index)
    results, todo = _trusted(stamps, _read_cache(Path(cache_file)) if cache_file else {})
    if todo:
        where = f"in {cache_file}" if cache_file else "(data.cache_dir and data.output_dir are both null)"
        if cache_file and (old := _older_format(Path(cache_file))):
            where += f" (it is {old})"
        raise DataNotPreparedError(
            f"{len(todo)} of {len(stamps)} image file(s) under {index.root} have no up-to-date decode check "
            f"{where}, e.g. {', '.join(todo[:3])}.\n"
            "setup() reads what prepare_data() wrote and never decodes the files itself. A Lightning Trainer calls "
            "prepare_data() before setup(); outside a Trainer, call datamodule.prepare_data() first (or run  "
            "python -m caltech_cam.prepare  with the same data settings and data.cache_dir)."
        )
    return {f.path: results[f.path] for f in index.files}


def bad_images(checks: dict[str, FileCheck]) -> list[tuple[str, str]]:
    """(relative path, decoder message) of every file that failed to decode, in index order."""
    return [(path, check.error) for path, check in checks.items() if check.error is not None]


def check_policy(policy: str) -> str:
    """``data.bad_images`` itself, if it is one of :data:`BAD_IMAGE_POLICIES` (checked once, where it enters)."""
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"data.bad_images must be one of {BAD_IMAGE_POLICIES}, got {policy!r}")
    return policy


def enforce_policy(index: DatasetIndex, checks: dict[str, FileCheck], policy: str) -> list[tuple[str, str]]:
    """Apply a :func:`check_policy`-checked ``data.bad_images``: ``error`` raises :class:`BadImageError` naming
    every bad file; ``skip`` returns them (the caller drops them and reports them)."""
    bad = bad_images(checks)
    if bad and policy == "error":
        raise BadImageError(
            index.abspath(bad[0][0]), bad[0][1], others=[(index.abspath(p), r) for p, r in bad[1:]]
        )
    return bad


def _stamps(index: DatasetIndex) -> dict[str, _Stamp]:
    return {f.path: _stamp(index.abspath(f.path)) for f in index.files}


def _trusted(
    stamps: dict[str, _Stamp], cached: dict[str, tuple[_Stamp, FileCheck]]
) -> tuple[dict[str, FileCheck], list[str]]:
    """The cached verdicts whose file still has the recorded size and mtime, and the paths that need a check."""
    results: dict[str, FileCheck] = {}
    todo: list[str] = []
    for path, stamp in stamps.items():
        hit = cached.get(path)
        if hit is not None and hit[0] == stamp:
            results[path] = hit[1]
        else:
            todo.append(path)
    return results, todo


def _stamp(path: Path) -> _Stamp:
    st = path.stat()
    return _Stamp(st.st_size, st.st_mtime_ns)


def _track(items: Iterable[FileCheck], total: int, progress: bool) -> Iterable[FileCheck]:
    if not progress:
        return items
    from rich.progress import track

    return track(items, total=total, description=f"decode-check {total} images")


def _read_cache(path: Path) -> dict[str, tuple[_Stamp, FileCheck]]:
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        if fh.readline().strip() != _first_line():
            return {}  # an older format or other decoders: ignore it, it gets rewritten
        rows = csv.DictReader(fh, delimiter="\t")
        return {
            r["path"]: (
                _Stamp(int(r["size"]), int(r["mtime_ns"])),
                FileCheck(r["sha1"], r["error"] or None, parse_hash(r["phash"]) if r["phash"] else None),
            )
            for r in rows
        }


def _older_format(path: Path) -> str | None:
    """Why a cache file cannot be trusted as a whole: written by an older release (e.g. ``v1, without perceptual
    hashes``) or by other decoders (``torchvision=0.28.0 pillow=11.0.0``); ``None`` when it can."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as fh:
        first = fh.readline().strip()
    if not first.startswith(_CACHE_PREFIX) or first == _first_line():
        return None
    if first == _CACHE_VERSION:
        return "written before the cache recorded its decoders' versions"
    if first.startswith(_CACHE_VERSION + " "):
        return f"written with {first[len(_CACHE_VERSION) + 1 :]}, this run has {decoders()}"
    return f"in an older format ({first[len(_CACHE_PREFIX) :]}, without perceptual hashes)"


def _write_cache(path: Path, entries: dict[str, tuple[_Stamp, FileCheck]]) -> None:
    # Two ranks or nodes writing at once, or a run killed mid-write, never leave a torn file.
    with write_atomically(path) as fh:
        fh.write(_first_line() + "\n")
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(_CACHE_HEADER)
        for rel, (stamp, check) in entries.items():
            phash = format_hash(check.phash) if check.phash is not None else ""
            writer.writerow([rel, stamp.size, stamp.mtime_ns, check.sha1, phash, check.error or ""])
