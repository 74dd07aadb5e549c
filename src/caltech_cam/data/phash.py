"""Perceptual hashes of decoded images and the Hamming-distance search that finds near-duplicate pairs.

A resized, re-encoded or slightly cropped copy of a photo has another sha1 but a nearby perceptual hash;
``benchmarks/bench_near_duplicates.py`` measures how near, and how far apart distinct images stay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

WORD_BITS = 64
HASH_WORDS = 3  # row dHash, column dHash, DCT pHash
HASH_BITS = WORD_BITS * HASH_WORDS
# ITU-R BT.601 luma, the weights of torchvision's rgb_to_grayscale (and of the inception preset).
_LUMA = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)


def perceptual_hash(image: torch.Tensor) -> int:
    """192-bit hash of a uint8 RGB image (3, H, W): row dHash | column dHash | DCT pHash, 64 bits each.

    Hamming distance on the concatenation is the sum of the three distances. One 64-bit hash alone does not
    separate 5 %-cropped copies from distinct images (the measurement in ``benchmarks/bench_near_duplicates.py``);
    their errors are partly independent, so the sum does better. The combination is ours.
    """
    gray = (image.to(torch.float32) * _LUMA).sum(dim=0, keepdim=True)
    words = (dhash(gray), dhash(gray.transpose(1, 2)), dct_hash(gray))
    return (words[0] << 2 * WORD_BITS) | (words[1] << WORD_BITS) | words[2]


def dhash(gray: torch.Tensor) -> int:
    """64-bit difference hash (Krawetz, "Kind of like that", 2013) of a luma image (1, H, W).

    g resized with antialiasing to 8 rows x 9 columns; bit (r, c) = g[r, c + 1] > g[r, c], row by row, most
    significant bit first. Only the sign of neighbour differences survives: brightness, contrast, scale and JPEG
    noise barely move it. Transposing the input gives the column hash.
    """
    small = TF.resize(gray, [8, 9], antialias=True)[0]
    return _bits_to_int(small[:, 1:] > small[:, :-1])


def dct_hash(gray: torch.Tensor) -> int:
    """64-bit pHash (Zauner, 2010) of a luma image (1, H, W): resized to 32x32, 2-D DCT-II C g C^T, the 8x8
    lowest frequencies compared with their median (the DC term excluded from the median)."""
    small = TF.resize(gray, [32, 32], antialias=True)[0].to(torch.float64)
    k = torch.arange(32, dtype=torch.float64)
    basis = torch.cos(math.pi / 32 * (k[None, :] + 0.5) * k[:, None])  # C[u, x], unnormalised: signs suffice
    low = (basis @ small @ basis.T)[:8, :8]
    return _bits_to_int(low > low.flatten()[1:].median())


def _bits_to_int(bits: torch.Tensor) -> int:
    value = 0
    for bit in bits.flatten().tolist():
        value = (value << 1) | bit
    return value


def format_hash(value: int) -> str:
    """48 lowercase hex digits (how the decode-check cache stores a hash)."""
    return f"{value:0{HASH_BITS // 4}x}"


def parse_hash(text: str) -> int:
    """The inverse of :func:`format_hash`."""
    if len(text) != HASH_BITS // 4:
        raise ValueError(f"a perceptual hash is {HASH_BITS // 4} hex digits, got {text!r}")
    return int(text, 16)


def hash_words(hashes: Sequence[int], words: int = HASH_WORDS) -> np.ndarray:
    """Hashes as an (n, words) uint64 array, most significant word first."""
    mask = (1 << WORD_BITS) - 1
    return np.array(
        [[(h >> (WORD_BITS * (words - 1 - w))) & mask for w in range(words)] for h in hashes],
        dtype=np.uint64,
    ).reshape(len(hashes), words)


def hamming_pairs(words: np.ndarray, max_distance: int, block: int = 128) -> np.ndarray:
    """Every pair (i, j), i < j, whose hashes (rows of ``words``, (n, k) uint64) differ in <= ``max_distance``
    bits: sum over k of popcount(words[i, k] XOR words[j, k]), as an (m, 2) array.

    Brute force over all n(n-1)/2 pairs, vectorised: a block of rows against every later row at once, so memory
    stays at ``block`` x n x k x 8 bytes and 30,607 hashes take seconds.
    """
    words = np.asarray(words, dtype=np.uint64)
    if words.ndim == 1:
        words = words[:, None]
    n = len(words)
    found = [np.empty((0, 2), dtype=np.int64)]
    for start in range(0, n, block):
        rows = words[start : start + block]
        distance = np.zeros((len(rows), n - start), dtype=np.uint16)
        for k in range(words.shape[1]):
            distance += np.bitwise_count(rows[:, None, k] ^ words[None, start:, k])
        i, j = np.nonzero(distance <= max_distance)
        later = j > i  # column j is hash start + j, row i is hash start + i: keep each pair once
        found.append(np.stack([i[later] + start, j[later] + start], axis=1))
    return np.concatenate(found)


def hamming_distance(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()
