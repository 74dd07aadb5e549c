"""Stratified, seeded, leakage-guarded train/val/test splits and the manifest file that records them.

The leakage guard: files with identical content (same sha1) and near-duplicates (perceptual hashes within
``data.near_duplicates.max_distance`` bits) are joined by union-find into units, and a unit lands in one split.
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caltech_cam.data.index import ImageFile
from caltech_cam.data.phash import HASH_BITS, hamming_distance, hamming_pairs, hash_words
from caltech_cam.utils.files import write_atomically

# THE names of the three splits, in this order (train, then the two held-out ones).
SPLITS = ("train", "val", "test")
SPLIT_MODES = ("fractions", "per_class", "official")
MANIFEST_COLUMNS = ("path", "label", "split", "sha1")
MANIFEST_NAME = "split_manifest.csv"
# Near-duplicate groups above this size are reported: more copies of one picture than that is unusual.
LARGE_GROUP = 10


@dataclass(frozen=True)
class SplitConfig:
    """``fractions``: each class split train/val/test by these shares (0.7/0.15/0.15 by default: ours, the study states no split).
    ``per_class``: Caltech-256-60 -- ``train_per_class`` training images per class, ``val_fraction`` of the
    rest for validation, the remainder for test. ``official``: the dataset's own train/test split (CUB-200-2011),
    ``val_fraction`` of each class's official training images for validation."""

    mode: str = "fractions"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    train_per_class: int = 60
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in SPLIT_MODES:
            raise ValueError(f"data.split.mode must be one of {SPLIT_MODES}, got {self.mode!r}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions):
            raise ValueError(
                f"data.split.fractions must be 3 non-negative numbers, got {list(self.fractions)}"
            )
        if not math.isclose(sum(self.fractions), 1.0, abs_tol=1e-6):
            raise ValueError(f"data.split.fractions must sum to 1, got {list(self.fractions)}")
        if self.train_per_class < 1:
            raise ValueError(f"data.split.train_per_class must be >= 1, got {self.train_per_class}")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ValueError(f"data.split.val_fraction must be in [0, 1], got {self.val_fraction}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SplitConfig:
        values = dict(values or {})
        unknown = set(values) - {"mode", "fractions", "train_per_class", "val_fraction"}
        if unknown:
            raise ValueError(f"unknown data.split keys: {sorted(unknown)}")
        if "fractions" in values:
            values["fractions"] = tuple(float(f) for f in values["fractions"])
        return cls(**values)


@dataclass(frozen=True)
class NearDuplicateConfig:
    """``data.near_duplicates``: join images whose 192-bit perceptual hashes differ in at most ``max_distance``
    bits (see :func:`caltech_cam.data.phash.perceptual_hash`).

    The default 24 comes from ``benchmarks/bench_near_duplicates.py``: it matches 95.4 % of resized (0.5-2x),
    re-encoded (JPEG 60-95) and <= 5 % cropped copies (99.5 % of those cropped <= 2.5 %) and joins 4 of the 2 million
    distinct pairs of the default synthetic set, none of 200 procedural textures or of 3 real photos and their
    quadrants. No threshold separates every copy from every distinct image: a missed copy can leak, a false pair only
    keeps two images in one split, so t leans towards matching.
    """

    enabled: bool = True
    max_distance: int = 24

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"data.near_duplicates.enabled must be true or false, got {self.enabled!r}")
        distance = self.max_distance
        if isinstance(distance, bool) or not isinstance(distance, int) or not 0 <= distance <= HASH_BITS:
            raise ValueError(
                f"data.near_duplicates.max_distance must be an integer number of bits in [0, {HASH_BITS}], "
                f"got {distance!r}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> NearDuplicateConfig:
        values = dict(values or {})
        unknown = set(values) - {"enabled", "max_distance"}
        if unknown:
            raise ValueError(f"unknown data.near_duplicates keys: {sorted(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class NearPair:
    """Two files with different content whose perceptual hashes differ in ``distance`` bits."""

    first: str
    second: str
    distance: int


@dataclass(frozen=True)
class ManifestRow:
    path: str
    label: int
    split: str
    sha1: str


def apportion(n: int, shares: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``shares`` with the largest-remainder method: floors of n*share, then the leftover
    items go to the largest fractional parts (ties: earlier share first). Always sums to ``n``.
    E.g. n=12, (0.7, 0.15, 0.15): quotas 8.4/1.8/1.8 -> 8/2/2."""
    quotas = [round(n * s, 9) for s in shares]  # 9 decimals: 0.29*100 must be 29, not 28.999...
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(shares)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def duplicate_groups(files: Sequence[ImageFile], hashes: Mapping[str, str]) -> list[list[str]]:
    """Groups (>= 2 paths) of files with identical content, each sorted, in order of their first path."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for f in files:
        by_hash[hashes[f.path]].append(f.path)
    return sorted((sorted(g) for g in by_hash.values() if len(g) > 1), key=lambda g: g[0])


def near_duplicate_pairs(
    files: Sequence[ImageFile],
    hashes: Mapping[str, str],
    phashes: Mapping[str, int],
    config: NearDuplicateConfig,
) -> list[NearPair]:
    """Pairs of files with different sha1 whose perceptual hashes are within ``config.max_distance`` bits, in
    index order (none when ``config.enabled`` is false). Identical files are exact duplicates, not listed here."""
    if not config.enabled or len(files) < 2:
        return []
    pairs = hamming_pairs(hash_words([phashes[f.path] for f in files]), config.max_distance)
    return [
        NearPair(a.path, b.path, hamming_distance(phashes[a.path], phashes[b.path]))
        for a, b in ((files[i], files[j]) for i, j in pairs.tolist())
        if hashes[a.path] != hashes[b.path]
    ]


def split_units(
    files: Sequence[ImageFile], hashes: Mapping[str, str], near_pairs: Sequence[NearPair] = ()
) -> dict[str, str]:
    """path -> the unit it belongs to (named by the unit's smallest path): the connected components of the graph
    whose edges join identical content (same sha1) and near-duplicate pairs (union-find)."""
    parent = {f.path: f.path for f in files}

    def find(path: str) -> str:
        while parent[path] != path:
            parent[path] = parent[parent[path]]  # path halving keeps the trees flat
            path = parent[path]
        return path

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:  # the smaller path becomes the root, so a unit is named by its first path
            parent[max(ra, rb)] = min(ra, rb)

    first_with_hash: dict[str, str] = {}
    for f in files:
        union(first_with_hash.setdefault(hashes[f.path], f.path), f.path)
    for pair in near_pairs:
        union(pair.first, pair.second)
    return {f.path: find(f.path) for f in files}


def near_duplicate_groups(
    files: Sequence[ImageFile], hashes: Mapping[str, str], near_pairs: Sequence[NearPair]
) -> list[list[str]]:
    """Units (>= 2 paths) joined by at least one near-duplicate pair, i.e. holding more than one sha1; each sorted,
    in order of their first path. Groups of only identical files are :func:`duplicate_groups`."""
    members: dict[str, list[str]] = defaultdict(list)
    for path, unit in split_units(files, hashes, near_pairs).items():
        members[unit].append(path)
    return sorted(
        (sorted(g) for g in members.values() if len({hashes[p] for p in g}) > 1), key=lambda g: g[0]
    )


def large_group_warnings(groups: Sequence[Sequence[str]], limit: int = LARGE_GROUP) -> list[str]:
    """A warning when near-duplicate groups exceed ``limit`` files: union-find chains near pairs (a ~ b ~ c joins a
    and c at up to twice the distance), so an unsuitable threshold can join many distinct images into one unit,
    which then lands in one split and skews that class's counts."""
    large = [g for g in groups if len(g) > limit]
    if not large:
        return []
    biggest = max(large, key=len)
    return [
        f"{len(large)} near-duplicate group(s) hold more than {limit} images (largest: {len(biggest)}, from "
        f"{biggest[0]}): each stays in one split; if they are not copies of one picture, lower "
        "data.near_duplicates.max_distance"
    ]


def make_split(
    files: Sequence[ImageFile],
    hashes: Mapping[str, str],
    config: SplitConfig,
    seed: int,
    class_dirs: Sequence[str],
    near_pairs: Sequence[NearPair] = (),
    official: Mapping[str, str] | None = None,
) -> list[ManifestRow]:
    """Assign every file to train/val/test.

    ``config.mode == "official"``: ``official`` (path -> ``train``/``test``) decides; the official test files are
    exactly the test split and validation is carved from the official training files as below (their duplicate
    units only). A unit that crosses the official split stays split (see :func:`official_crossings`).

    Leakage guard: files with identical content (same sha1) or joined by ``near_pairs`` (see
    :func:`near_duplicate_pairs`) form one unit (:func:`split_units`) that lands in one split; a unit spanning
    classes belongs to its lowest label. Per class, units are sorted by path, shuffled with an RNG seeded by
    (seed, class folder) -- so one class's split does not depend on the others -- and laid end to end; a unit
    goes to the split whose target range (from :func:`apportion`) holds its first file. With no duplicates the
    per-class counts are exact; a duplicate group can shift a boundary by its size - 1.
    """
    if config.mode == "official":
        if official is None:
            raise ValueError("data.split.mode=official needs a dataset that ships a split (data=cub200)")
        train = [f for f in files if official[f.path] == "train"]
        kept = {f.path for f in train}
        pairs = [p for p in near_pairs if p.first in kept and p.second in kept]
        split_of = _carve(train, hashes, config, seed, class_dirs, pairs)
        split_of.update((f.path, "test") for f in files if f.path not in kept)
    else:
        split_of = _carve(files, hashes, config, seed, class_dirs, near_pairs)
    return [ManifestRow(f.path, f.label, split_of[f.path], hashes[f.path]) for f in files]


def official_crossings(
    files: Sequence[ImageFile],
    hashes: Mapping[str, str],
    near_pairs: Sequence[NearPair],
    official: Mapping[str, str],
) -> list[str]:
    """Warnings for duplicate units (identical or near-duplicate files) that the official split puts in both train
    and test: reported, never moved (the official test set stays the published one)."""
    members: dict[str, list[str]] = defaultdict(list)
    for path, unit in split_units(files, hashes, near_pairs).items():
        members[unit].append(path)
    crossing = [sorted(g) for g in members.values() if len({official[p] for p in g}) > 1]
    if not crossing:
        return []
    named = "; ".join(" ~ ".join(g) for g in sorted(crossing)[:10])
    more = f"; ... {len(crossing) - 10} more" if len(crossing) > 10 else ""
    return [
        f"{len(crossing)} duplicate group(s) cross the official train/test split (kept where it puts them, "
        f"so test scores may be optimistic): {named}{more}"
    ]


def _carve(
    files: Sequence[ImageFile],
    hashes: Mapping[str, str],
    config: SplitConfig,
    seed: int,
    class_dirs: Sequence[str],
    near_pairs: Sequence[NearPair],
) -> dict[str, str]:
    """path -> split for ``files``: per class, its seeded shuffle of units laid end to end over the targets."""
    units: dict[str, list[ImageFile]] = defaultdict(list)
    unit_of = split_units(files, hashes, near_pairs)
    for f in files:
        units[unit_of[f.path]].append(f)
    per_class: dict[int, list[list[ImageFile]]] = defaultdict(list)
    for members in units.values():
        per_class[min(m.label for m in members)].append(sorted(members, key=lambda m: m.path))

    split_of: dict[str, str] = {}
    for label in sorted(per_class):
        class_units = sorted(per_class[label], key=lambda u: u[0].path)
        random.Random(f"caltech_cam/{seed}/{class_dirs[label]}").shuffle(class_units)
        n = sum(len(u) for u in class_units)
        n_train, n_val, _ = _targets(n, config, class_dirs[label])
        start = 0
        for unit in class_units:
            split = "train" if start < n_train else "val" if start < n_train + n_val else "test"
            split_of.update((m.path, split) for m in unit)
            start += len(unit)
    return split_of


def _targets(n: int, config: SplitConfig, class_dir: str) -> list[int]:
    if config.mode == "fractions":
        return apportion(n, config.fractions)
    if config.mode == "official":
        return [*apportion(n, (1.0 - config.val_fraction, config.val_fraction)), 0]
    if n <= config.train_per_class:
        raise ValueError(
            f"class {class_dir} has {n} usable images, not more than data.split.train_per_class="
            f"{config.train_per_class} (nothing would be left to evaluate); lower train_per_class "
            "or use data.split.mode=fractions"
        )
    val, test = apportion(n - config.train_per_class, (config.val_fraction, 1.0 - config.val_fraction))
    return [config.train_per_class, val, test]


def write_manifest(rows: Sequence[ManifestRow], path: str | Path) -> Path:
    """CSV with header ``path,label,split,sha1``; paths relative to the folder holding the class folders.

    Written to a temporary file beside ``path`` and renamed over it: a reader (another rank, a resumed job) sees
    the old manifest or the whole new one, never a torn one, and an error mid-write leaves no partial file.
    """
    path = Path(path)
    with write_atomically(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows((r.path, r.label, r.split, r.sha1) for r in rows)
    return path


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a manifest written by :func:`write_manifest`, validating its header and values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.split_file not found: {path}")
    rows: list[ManifestRow] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = tuple(next(reader, ()))
        if header != MANIFEST_COLUMNS:
            raise ValueError(f"{path}: header must be {','.join(MANIFEST_COLUMNS)}, got {','.join(header)!r}")
        for line, values in enumerate(reader, start=2):
            if len(values) != len(MANIFEST_COLUMNS) or values[2] not in SPLITS or not values[1].isdigit():
                raise ValueError(f"{path}:{line}: expected path,label(int),split({'|'.join(SPLITS)}),sha1")
            rows.append(ManifestRow(values[0], int(values[1]), values[2], values[3]))
    return rows


def validate_manifest(
    rows: Sequence[ManifestRow],
    files: Sequence[ImageFile],
    hashes: Mapping[str, str],
    source: str | Path,
    near_pairs: Sequence[NearPair] = (),
) -> list[str]:
    """Check a reused split against the current index; raise ``ValueError`` naming every mismatch.

    Errors: a listed file missing from the root (or no longer a usable image), a label or content hash that
    differs (the file or the class order changed), a path listed twice. Returns warnings: files in the root
    that the split does not list (not used), identical content in different splits, and near-duplicate pairs in
    different splits (a manifest made before near-duplicate grouping is still used as it is, but says so).
    """
    current = {f.path: f for f in files}
    problems: list[str] = []
    missing = [r.path for r in rows if r.path not in current]
    if missing:
        problems.append(f"{len(missing)} listed file(s) are missing or unusable: " + ", ".join(missing[:20]))
    changed = [r.path for r in rows if r.path in current and r.label != current[r.path].label]
    if changed:
        problems.append(f"{len(changed)} file(s) have another label now: " + ", ".join(changed[:20]))
    edited = [r.path for r in rows if r.path in current and r.sha1 != hashes[r.path]]
    if edited:
        problems.append(f"{len(edited)} file(s) changed content: " + ", ".join(edited[:20]))
    listed = Counter(r.path for r in rows)
    twice = sorted(p for p, n in listed.items() if n > 1)
    if twice:
        problems.append("listed more than once: " + ", ".join(twice[:20]))
    if problems:
        raise ValueError(f"data.split_file {source} does not match the data:\n  " + "\n  ".join(problems))

    warnings: list[str] = []
    unlisted = sorted(set(current) - set(listed))
    if unlisted:
        warnings.append(f"{len(unlisted)} file(s) in the root are not in the split file (not used)")
    splits_of_hash: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        splits_of_hash[r.sha1].add(r.split)
    leaking = sum(1 for s in splits_of_hash.values() if len(s) > 1)
    if leaking:
        warnings.append(f"the split file puts identical content in different splits ({leaking} group(s))")
    split_of = {r.path: r.split for r in rows}
    crossing = [
        p
        for p in near_pairs
        if p.first in split_of and p.second in split_of and split_of[p.first] != split_of[p.second]
    ]
    if crossing:
        named = "; ".join(
            f"{p.first} ({split_of[p.first]}) ~ {p.second} ({split_of[p.second]}), {p.distance} bits"
            for p in crossing[:20]
        )
        more = f"; ... {len(crossing) - 20} more" if len(crossing) > 20 else ""
        warnings.append(
            f"the split file puts {len(crossing)} near-duplicate pair(s) in different splits (made before "
            f"near-duplicate grouping? used as it is): {named}{more}"
        )
    return warnings
