"""Near-duplicate leakage guard: dHash by hand, the block search against brute force, union-find units, a
resized + re-encoded + cropped copy in another class kept in its original's split, old caches and manifests."""

from __future__ import annotations

import io
import logging
import math
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from caltech_cam.data import (
    CaltechDataModule,
    DataNotPreparedError,
    ImageFile,
    check_images,
    format_summary,
    index_root,
    load_rgb,
)
from caltech_cam.data.check import decoders, load_checks
from caltech_cam.data.phash import (
    dct_hash,
    dhash,
    format_hash,
    hamming_pairs,
    hash_words,
    parse_hash,
    perceptual_hash,
)
from caltech_cam.data.splits import (
    NearDuplicateConfig,
    NearPair,
    large_group_warnings,
    near_duplicate_pairs,
    split_units,
)

ORIGINAL = "002.green-triangle/002_0005.jpg"
COPY = "003.blue-square/003_9999.jpg"  # the copy sits in ANOTHER class folder


def _gray(rows: list[list[int]]) -> torch.Tensor:
    """A luma image (1, H, W) with the given values (8 x 9 needs no resizing for the dHash)."""
    return torch.tensor(rows, dtype=torch.float32)[None]


def test_dhash_bits_by_hand():
    rising = list(range(10, 100, 10))  # every right neighbour is brighter: 8 one-bits
    flat = [50] * 9  # equal neighbours: 8 zero-bits
    assert dhash(_gray([rising] * 8)) == 2**64 - 1
    assert dhash(_gray([rising[::-1]] * 8)) == 0
    assert dhash(_gray([rising] + [flat] * 7)) == 0xFF << 56  # first row = most significant byte
    zigzag = [10, 90] * 4 + [10]  # up, down, up, ...: 1010 1010 per row
    assert dhash(_gray([flat] * 7 + [zigzag])) == 0xAA


def test_dct_hash_against_the_dct_sum_written_out():
    g = torch.rand(32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 255
    rows = g.tolist()
    c = [[math.cos(math.pi / 32 * (x + 0.5) * u) for x in range(32)] for u in range(32)]
    low = [
        sum(c[v][y] * c[u][x] * rows[y][x] for y in range(32) for x in range(32))
        for v in range(8)
        for u in range(8)
    ]
    median = sorted(low[1:])[31]  # 63 values without the DC term: the 32nd is the median
    want = int("".join("1" if value > median else "0" for value in low), 2)
    assert dct_hash(g[None].float()) == want


def test_the_192_bit_hash_is_rows_columns_dct_and_survives_the_cache_format():
    image = torch.randint(0, 256, (3, 40, 56), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    gray = (image.float() * torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    h = perceptual_hash(image)
    assert h == (dhash(gray) << 128) | (dhash(gray.transpose(1, 2)) << 64) | dct_hash(gray)
    assert parse_hash(format_hash(h)) == h and len(format_hash(1)) == 48
    assert hash_words([h]).tolist() == [[h >> 128, (h >> 64) & (2**64 - 1), h & (2**64 - 1)]]


def test_block_search_equals_the_pairwise_loop():
    rng = np.random.default_rng(3)
    ints = [int.from_bytes(rng.bytes(24), "big") for _ in range(150)]  # 192-bit hashes
    ints[7] = ints[90] ^ 0b1011 ^ (1 << 100)  # 4 bits apart, across two words
    ints[140] = ints[2] ^ (1 << 191)  # 1 bit apart, the top bit
    ints[50] = ints[51]  # identical
    words = hash_words(ints)
    for t in (0, 1, 4, 80):
        want = {(i, j) for i in range(150) for j in range(i + 1, 150) if (ints[i] ^ ints[j]).bit_count() <= t}
        got = hamming_pairs(words, t, block=16)  # several blocks and a ragged last one
        assert len(got) == len(want)
        assert {tuple(p) for p in got.tolist()} == want
    assert {tuple(p) for p in hamming_pairs(words, 4).tolist()} == {(7, 90), (2, 140), (50, 51)}


def test_units_join_exact_and_near_pairs_transitively():
    files = [ImageFile(p, 0) for p in ("a/1.jpg", "a/2.jpg", "a/3.jpg", "a/4.jpg", "a/5.jpg")]
    sha1 = {"a/1.jpg": "x", "a/2.jpg": "y", "a/3.jpg": "y", "a/4.jpg": "z", "a/5.jpg": "w"}
    # 3 ~ 1 (near), 2 = 3 (same sha1): {1, 2, 3} is one unit named by its smallest path; 4 and 5 stay alone.
    units = split_units(files, sha1, [NearPair("a/3.jpg", "a/1.jpg", 4)])
    assert units == {
        "a/1.jpg": "a/1.jpg",
        "a/2.jpg": "a/1.jpg",
        "a/3.jpg": "a/1.jpg",
        "a/4.jpg": "a/4.jpg",
        "a/5.jpg": "a/5.jpg",
    }
    # Identical files are exact duplicates, never reported as near pairs; t bounds the rest.
    phash = {"a/1.jpg": 0b0, "a/2.jpg": 0b111, "a/3.jpg": 0b111, "a/4.jpg": 0b111111, "a/5.jpg": 2**64 - 1}
    near = near_duplicate_pairs(files, sha1, phash, NearDuplicateConfig(max_distance=3))
    assert near == [
        NearPair("a/1.jpg", "a/2.jpg", 3),
        NearPair("a/1.jpg", "a/3.jpg", 3),  # (2, 3): same sha1, an exact duplicate, not a near pair
        NearPair("a/2.jpg", "a/4.jpg", 3),
        NearPair("a/3.jpg", "a/4.jpg", 3),  # 1 and 4 are 6 bits apart: joined only through 2 and 3
    ]
    assert near_duplicate_pairs(files, sha1, phash, NearDuplicateConfig(enabled=False)) == []


def test_a_chain_of_near_pairs_that_grows_a_large_group_is_reported():
    # A chain a0 ~ a1 ~ ... ~ a10 (each link 1 bit, the ends 10 bits apart) is one unit of 11 files.
    files = [ImageFile(f"a/{i:02d}.jpg", 0) for i in range(11)]
    sha1 = {f.path: f.path for f in files}
    phash = {f.path: (1 << i) - 1 for i, f in enumerate(files)}
    near = near_duplicate_pairs(files, sha1, phash, NearDuplicateConfig(max_distance=1))
    assert len(near) == 10 and len(set(split_units(files, sha1, near).values())) == 1
    (warning,) = large_group_warnings([[f.path for f in files]])
    assert warning.startswith(
        "1 near-duplicate group(s) hold more than 10 images (largest: 11, from a/00.jpg)"
    )
    assert large_group_warnings([[f.path for f in files[:10]]]) == []


@pytest.mark.parametrize("bad", [-1, 193, 2.5, "3", True, None])
def test_an_invalid_threshold_names_the_key(bad):
    with pytest.raises(
        ValueError, match=r"data\.near_duplicates\.max_distance must be an integer .* \[0, 192\]"
    ):
        NearDuplicateConfig.from_mapping({"max_distance": bad})


def test_other_bad_near_duplicate_settings_name_the_key(synthetic_root):
    with pytest.raises(ValueError, match=r"data\.near_duplicates\.enabled must be true or false, got 'yes'"):
        NearDuplicateConfig.from_mapping({"enabled": "yes"})
    with pytest.raises(ValueError, match=r"unknown data\.near_duplicates keys: \['distance'\]"):
        CaltechDataModule(root=synthetic_root, near_duplicates={"distance": 3})


def _near_copy(image: torch.Tensor) -> bytes:
    """Crop 5 % of each side's length (3 % left/top, 2 % right/bottom), resize to 1.5x, JPEG quality 60."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    w, h = pil.size
    pil = pil.crop((round(0.03 * w), round(0.03 * h), w - round(0.02 * w), h - round(0.02 * h)))
    pil = pil.resize((round(pil.width * 1.5), round(pil.height * 1.5)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    pil.save(out, "JPEG", quality=60)
    return out.getvalue()


@pytest.fixture
def tree_with_copy(synthetic_root, tmp_path):
    """The shared synthetic set (copied: it is read-only) plus a near copy of ORIGINAL in another class."""
    root = tmp_path / "synthetic"
    shutil.copytree(synthetic_root, root)
    (root / COPY).write_bytes(_near_copy(load_rgb(root / ORIGINAL)))
    return root


def _dm(root, tmp_path, **kwargs):
    dm = CaltechDataModule(root=root, resize=64, batch_size=4, cache_dir=tmp_path / "cache", **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_the_shared_synthetic_set_has_no_false_near_duplicates(synthetic_root, one_thread):
    checks = check_images(index_root(synthetic_root))
    files = index_root(synthetic_root).files
    sha1 = {f.path: checks[f.path].sha1 for f in files}
    phash = {f.path: checks[f.path].phash for f in files}
    assert len(files) == 48 and len(set(sha1.values())) == 48
    assert near_duplicate_pairs(files, sha1, phash, NearDuplicateConfig()) == []


def test_a_near_copy_in_another_class_lands_in_its_originals_split(tree_with_copy, tmp_path, one_thread):
    splits_apart = 0
    for seed in range(12):
        dm = _dm(tree_with_copy, tmp_path, seed=seed)
        split = {r.path: r.split for r in dm.split_rows}
        assert split[COPY] == split[ORIGINAL]
        off = _dm(tree_with_copy, tmp_path, seed=seed, near_duplicates={"enabled": False})
        split = {r.path: r.split for r in off.split_rows}
        splits_apart += split[COPY] != split[ORIGINAL]
    assert off.summary()["near_duplicate_groups"] == []
    assert "near-duplicate groups (off: data.near_duplicates.enabled=false): 0" in format_summary(
        off.summary()
    )
    assert splits_apart > 0  # without the guard the copy does leak: the check above can fail
    summary = dm.summary()
    assert summary["duplicate_groups"] == []
    assert summary["near_duplicate_groups"] == [[ORIGINAL, COPY]]  # and no false group among the 48 others
    assert summary["near_duplicates"] == {"enabled": True, "max_distance": 24, "pairs": 1}
    text = format_summary(summary)
    assert (
        "near-duplicate groups (perceptual hash within 24 bits, 1 pair(s); each kept in one split): 1" in text
    )
    assert f"  {ORIGINAL} ~ {COPY}\n" in text


def test_an_old_manifest_is_accepted_with_a_warning_naming_the_crossing_pair(
    tree_with_copy, tmp_path, one_thread
):
    # A manifest made without near-duplicate grouping (as before this release) that splits the pair.
    for seed in range(50):
        old = _dm(
            tree_with_copy,
            tmp_path / f"old{seed}",
            seed=seed,
            near_duplicates={"enabled": False},
            output_dir=tmp_path / f"old{seed}",
        )
        split = {r.path: r.split for r in old.split_rows}
        if split[COPY] != split[ORIGINAL]:
            break
    reused = _dm(tree_with_copy, tmp_path / "new", split_file=old.manifest_path)
    assert reused.split_rows == old.split_rows  # used as it is
    (warning,) = [w for w in reused.summary()["warnings"] if "near-duplicate" in w]
    assert warning.startswith("the split file puts 1 near-duplicate pair(s) in different splits")
    assert f"{ORIGINAL} ({split[ORIGINAL]}) ~ {COPY} ({split[COPY]})" in warning
    # A manifest made with the guard crosses nothing, so it warns about nothing.
    guarded = _dm(tree_with_copy, tmp_path / "g", output_dir=tmp_path / "g")
    again = _dm(tree_with_copy, tmp_path / "g2", split_file=guarded.manifest_path)
    assert again.summary()["warnings"] == []


def test_a_cache_without_perceptual_hashes_is_checked_again_and_says_so(caltech_tree, tmp_path, caplog):
    index = index_root(caltech_tree.root)
    cache = tmp_path / "cache.tsv"
    fresh = check_images(index, cache_file=cache)
    assert all((c.phash is None) == (not c.ok) for c in fresh.values())
    assert check_images(index, cache_file=cache) == fresh  # hashes survive the round trip through the file
    # Rewrite it as the previous release did: v1, no phash column.
    lines = cache.read_text().splitlines()
    v1 = ["# caltech_cam decode-check v1", "path\tsize\tmtime_ns\tsha1\terror"]
    v1 += ["\t".join(c for k, c in enumerate(line.split("\t")) if k != 4) for line in lines[2:]]
    cache.write_text("\n".join(v1) + "\n")
    with pytest.raises(
        DataNotPreparedError, match=r"34 of 34 .*it is in an older format \(v1, without perceptual"
    ):
        load_checks(index, cache)
    with caplog.at_level(logging.WARNING, logger="caltech_cam.data.check"):
        assert check_images(index, cache_file=cache) == fresh
    assert "older format (v1, without perceptual hashes): checking all 34 images again" in caplog.text
    assert cache.read_text().startswith(f"# caltech_cam decode-check v2 {decoders()}\n")


def test_a_cache_of_other_decoders_is_checked_again_and_says_so(caltech_tree, tmp_path, caplog):
    """The verdicts (and perceptual hashes) are keyed by the decoders' versions: after a torchvision or Pillow
    upgrade every file is checked again, with a log line, and setup refuses the stale file by name."""
    index = index_root(caltech_tree.root)
    cache = tmp_path / "cache.tsv"
    fresh = check_images(index, cache_file=cache)
    lines = cache.read_text().splitlines()
    assert lines[0] == f"# caltech_cam decode-check v2 {decoders()}"
    for first, why in (
        (
            "# caltech_cam decode-check v2 torchvision=0.1.0 pillow=1.0",
            f"written with torchvision=0.1.0 pillow=1.0, this run has {decoders()}",
        ),
        ("# caltech_cam decode-check v2", "written before the cache recorded its decoders' versions"),
    ):
        # The same rows with one corrupted hash: a check that trusted the rows would return it.
        rows = [line.replace(fresh[line.split("\t")[0]].sha1, "0" * 40) for line in lines[2:]]
        cache.write_text("\n".join([first, lines[1], *rows]) + "\n")
        with pytest.raises(DataNotPreparedError, match=r"34 of 34 .*" + re.escape(why)):
            load_checks(index, cache)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="caltech_cam.data.check"):
            assert check_images(index, cache_file=cache) == fresh
        assert f"{why}: checking all 34 images again" in caplog.text
        assert cache.read_text().splitlines()[0] == f"# caltech_cam decode-check v2 {decoders()}"
