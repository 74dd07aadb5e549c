"""Perceptual hashes of decoded images and the Hamming-distance search that finds near-duplicate pairs.

A resized, re-encoded or slightly cropped copy of a photo has another sha1 but nearly the same 64-bit hash;
``benchmarks/bench_near_duplicates.py`` measures how near, and how far apart distinct images stay.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

HASH_BITS = 64
# ITU-R BT.601 luma, the weights of torchvision's rgb_to_grayscale (and of the inception preset).
_LUMA = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)


def dhash(image: torch.Tensor) -> int:
    """64-bit difference hash (Krawetz, "Kind of like that", 2013) of a uint8 RGB image (3, H, W).

    g = luma(image) resized with antialiasing to 8 rows x 9 columns; bit (r, c) = g[r, c + 1] > g[r, c], read row
    by row, most significant bit first. Only the sign of neighbour differences survives, so brightness, contrast,
    scale and JPEG noise barely move it.
    """
    gray = (image.to(torch.float32) * _LUMA).sum(dim=0, keepdim=True)
    small = TF.resize(gray, [8, 9], antialias=True)[0]
    value = 0
    for bit in (small[:, 1:] > small[:, :-1]).flatten().tolist():
        value = (value << 1) | bit
    return value


def format_hash(value: int) -> str:
    """16 lowercase hex digits (how the decode-check cache stores a hash)."""
    return f"{value:016x}"


def parse_hash(text: str) -> int:
    """The inverse of :func:`format_hash`."""
    if len(text) != HASH_BITS // 4:
        raise ValueError(f"a perceptual hash is {HASH_BITS // 4} hex digits, got {text!r}")
    return int(text, 16)


def hamming_pairs(hashes: np.ndarray, max_distance: int, block: int = 256) -> np.ndarray:
    """Every pair (i, j), i < j, with popcount(hashes[i] XOR hashes[j]) <= ``max_distance``, as an (m, 2) array.

    Brute force over all n(n-1)/2 pairs, vectorised: a block of rows against every later hash at once, so memory
    stays at ``block`` x n (8 bytes each) and 30,607 hashes take seconds.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    found = [np.empty((0, 2), dtype=np.int64)]
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        distance = np.bitwise_count(rows[:, None] ^ hashes[None, start:])
        i, j = np.nonzero(distance <= max_distance)
        later = j > i  # column j is hash start + j, row i is hash start + i: keep each pair once
        found.append(np.stack([i[later] + start, j[later] + start], axis=1))
    return np.concatenate(found)


def hamming_distance(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()
