"""How far near-duplicate copies and distinct images lie apart in perceptual-hash bits, and how fast grouping is.

    python benchmarks/bench_near_duplicates.py                     # the full run (about 30 s on one core)
    python benchmarks/bench_near_duplicates.py --per-class 40 --originals 30    # a quick run
    python benchmarks/bench_near_duplicates.py --photos ~/pics/*.jpg           # more real photos

Measures, side by side, the project's 192-bit ``perceptual_hash`` (row dHash + column dHash + DCT pHash) and each
of its 64-bit parts alone:
1. copies: for originals drawn from every source, every combination of a crop (0, 2.5 or 5 % of each side's
   length, taken from random edges), a resize (0.5, 0.75, 1.5, 2x) and a JPEG re-encode (quality 60, 75, 95),
   decoded back with the project's decoder: the distance from copy to original must be <= t;
2. distinct pairs: every pair of distinct originals -- the synthetic set (``generate_synthetic``, the default
   10 classes x 200), procedural 1/f "natural-like" textures, and real photos found on this machine (matplotlib's
   and scikit-learn's sample photos when installed, ``--photos``) with their four quadrants as further distinct
   images: the distance must be > t;
3. grouping time: ``hamming_pairs`` over 30,607 random 192-bit hashes (Caltech-256's size) with planted near pairs.
Prints the distributions and, for each t, how many copies match and how many distinct pairs would be (falsely)
joined, then the largest t that joins no distinct pair and the share of copies it still matches.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from caltech_cam.data import ImageFile, decode_rgb, generate_synthetic, load_rgb
from caltech_cam.data.phash import hamming_pairs, hash_words, perceptual_hash
from caltech_cam.data.splits import NearPair, split_units

SCALES = (0.5, 0.75, 1.5, 2.0)
QUALITIES = (60, 75, 95)
CROPS = (0.0, 0.025, 0.05)


def parts(image: torch.Tensor) -> tuple[int, int, int]:
    """The three 64-bit words of ``perceptual_hash``: row dHash, column dHash, DCT pHash."""
    h = perceptual_hash(image)
    return (h >> 128) & MASK, (h >> 64) & MASK, h & MASK


MASK = 2**64 - 1
# Distance schemes: each sums the Hamming distances of some words; "all three" is the project's hash.
SCHEMES: dict[str, tuple[int, ...]] = {
    "row dHash (64)": (0,),
    "column dHash (64)": (1,),
    "DCT pHash (64)": (2,),
    "all three = perceptual_hash (192)": (0, 1, 2),
}


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def copy_of(image: torch.Tensor, crop: float, scale: float, quality: int, rng: random.Random) -> torch.Tensor:
    """Crop ``crop`` of each dimension from random edges, resize by ``scale``, re-encode as JPEG, decode."""
    pil = to_pil(image)
    w, h = pil.size
    cut_w, cut_h = round(w * crop), round(h * crop)
    left, top = rng.randint(0, cut_w), rng.randint(0, cut_h)
    pil = pil.crop((left, top, w - (cut_w - left), h - (cut_h - top)))
    size = (max(8, round(pil.width * scale)), max(8, round(pil.height * scale)))
    pil = pil.resize(
        size, rng.choice([Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS])
    )
    out = io.BytesIO()
    pil.save(out, "JPEG", quality=quality)
    return decode_rgb(out.getvalue())


def textures(count: int, seed: int) -> list[torch.Tensor]:
    """Natural-like pictures: colour 1/f^beta noise (beta 1.6-2.4, the spectrum of natural images), 96-320 px."""
    gen = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(count):
        h, w = (int(x) for x in torch.randint(96, 321, (2,), generator=gen))
        beta = 1.6 + 0.8 * float(torch.rand((), generator=gen))
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        amplitude = (fx**2 + fy**2).clamp_min(1e-6) ** (-beta / 2)
        phase = torch.rand(3, h, w // 2 + 1, generator=gen) * 2 * math.pi
        mix = torch.rand(3, 3, generator=gen) * 0.5 + torch.eye(3)  # correlated channels, as in photos
        field = torch.fft.irfft2(amplitude * torch.exp(1j * phase), s=(h, w))
        field = torch.einsum("cd,dhw->chw", mix, field)
        field = (field - field.mean()) / field.std()
        images.append((128 + 45 * field).clamp(0, 255).to(torch.uint8))
    return images


def local_photos(extra: list[str]) -> list[tuple[str, torch.Tensor]]:
    """Real photos: matplotlib's and scikit-learn's bundled samples when installed, plus ``extra`` paths."""
    paths: list[Path] = [Path(p) for p in extra]
    try:
        import matplotlib

        paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    try:
        import sklearn

        paths += sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
    except ImportError:
        pass
    return [(p.name, load_rgb(p)) for p in paths if p.is_file()]


def quadrants(image: torch.Tensor) -> list[torch.Tensor]:
    h, w = image.shape[1] // 2, image.shape[2] // 2
    return [image[:, y : y + h, x : x + w].contiguous() for y in (0, h) for x in (0, w)]


def distinct_distances(words: np.ndarray) -> np.ndarray:
    """All n(n-1)/2 pairwise Hamming distances between the rows of an (n, k) uint64 array."""
    total = np.zeros((len(words), len(words)), dtype=np.uint16)
    for k in range(words.shape[1]):
        total += np.bitwise_count(words[:, None, k] ^ words[None, :, k])
    return total[np.triu_indices(len(words), k=1)]


def histogram(values: np.ndarray, upto: int = 24) -> str:
    counts = np.bincount(np.minimum(values, upto), minlength=upto + 1)
    return "  ".join(f"{d}:{c}" for d, c in enumerate(counts[:upto]) if c) + f"  >={upto}:{counts[upto]}"


def measure(args: argparse.Namespace) -> None:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        info = generate_synthetic(
            Path(tmp) / "synthetic", num_classes=10, images_per_class=args.per_class, seed=0
        )
        synthetic = [load_rgb(p) for p in sorted(info.root.glob("*/*.jpg"))]
    texture_images = textures(args.textures, seed=1)
    photos = local_photos(args.photos)
    photo_images = [q for _, image in photos for q in [image, *quadrants(image)]]
    print(
        f"originals: synthetic {len(synthetic)} (10 classes x {args.per_class}), textures {len(texture_images)}, "
        f"real photos {len(photos)} ({', '.join(n for n, _ in photos) or 'none found'}) + 4 quadrants each"
    )
    sources = {"synthetic": synthetic, "textures": texture_images, "photos": photo_images}
    picked = (
        rng.sample(synthetic, min(args.originals, len(synthetic)))
        + texture_images[: args.originals]
        + photo_images
    )

    copy_parts, crops = [], []
    for image in picked:
        h0 = parts(image)
        for crop in CROPS:
            for scale in SCALES:
                for quality in QUALITIES:
                    h1 = parts(copy_of(image, crop, scale, quality, rng))
                    copy_parts.append([(a ^ b).bit_count() for a, b in zip(h0, h1, strict=True)])
                    crops.append(crop)
    copy_parts, crops = np.array(copy_parts), np.array(crops)
    words = {src: np.array([parts(im) for im in images], dtype=np.uint64) for src, images in sources.items()}
    print(
        f"copies: {len(copy_parts)} ({len(picked)} originals x crops {CROPS} x scales {SCALES} x JPEG {QUALITIES})"
    )
    for name, cols in SCHEMES.items():
        print(f"\n== {name} ==")
        copy_d = copy_parts[:, list(cols)].sum(axis=1)
        worst = {f"crop {c}": int(copy_d[crops == c].max()) for c in CROPS}
        print(
            f"copies: max {copy_d.max()}, p99 {np.percentile(copy_d, 99):.0f}, mean {copy_d.mean():.2f}; "
            f"worst by crop: {worst}"
        )
        print(f"  histogram: {histogram(copy_d, 48)}")
        distinct = {src: distinct_distances(w[:, list(cols)]) for src, w in words.items() if len(w) > 1}
        for src, d in distinct.items():
            print(
                f"distinct {src} ({len(d)} pairs): min {d.min()}, p0.1 {np.percentile(d, 0.1):.0f}, "
                f"median {np.median(d):.0f}; low end: {histogram(d, 48).split('  >=')[0]}"
            )
        everything = np.concatenate([w for w in words.values()])[:, list(cols)]
        all_d = distinct_distances(everything)
        print("  t  copies matched (crop <= 2.5 %)  false pairs: " + " / ".join(distinct) + " / all")
        top = int(min(copy_d.max() + 2, 64 * len(cols)))
        for t in range(0, top + 1, 1 if len(cols) == 1 else 2):
            falses = " / ".join(str(int((d <= t).sum())) for d in distinct.values())
            print(
                f"  {t:3d}  {100 * (copy_d <= t).mean():6.2f} % ({100 * (copy_d[crops < 0.04] <= t).mean():6.2f} %)"
                f"  {falses} / {int((all_d <= t).sum())}"
            )
        zero_false = int(min(d.min() for d in distinct.values())) - 1
        print(
            f"largest t with no false pair anywhere: {zero_false}, matching "
            f"{100 * (copy_d <= zero_false).mean():.2f} % of copies "
            f"({100 * (copy_d[crops < 0.04] <= zero_false).mean():.2f} % of those cropped <= 2.5 %)"
        )


def time_grouping(n: int, planted: int, max_distance: int) -> None:
    rng = np.random.default_rng(0)
    hashes = [int.from_bytes(rng.bytes(24), "big") for _ in range(n)]
    targets = rng.choice(n, size=2 * planted, replace=False)
    for a, b in targets.reshape(-1, 2):  # b becomes a copy of a with up to max_distance bits flipped
        flips = rng.choice(192, size=rng.integers(0, max_distance + 1), replace=False)
        hashes[b] = hashes[a] ^ sum(1 << int(f) for f in flips)
    start = time.perf_counter()
    pairs = hamming_pairs(hash_words(hashes), max_distance)
    search = time.perf_counter() - start
    found = {tuple(sorted(p)) for p in pairs.tolist()}
    want = {tuple(sorted(map(int, p))) for p in targets.reshape(-1, 2)}
    files = [ImageFile(f"c/{i:05d}.jpg", 0) for i in range(n)]
    sha1s = {f.path: f.path for f in files}
    near = [NearPair(files[i].path, files[j].path, 0) for i, j in pairs.tolist()]
    start = time.perf_counter()
    units = split_units(files, sha1s, near)
    union = time.perf_counter() - start
    print(f"\n== grouping {n} random 192-bit hashes, {planted} planted pairs, t = {max_distance} ==")
    print(
        f"hamming_pairs: {search:.2f} s ({n * (n - 1) // 2:,} pairs compared), {len(pairs)} pairs found, "
        f"planted found {len(want & found)}/{planted}; split_units (union-find): {union:.3f} s, "
        f"{len(set(units.values()))} units"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=200, help="synthetic images per class (10 classes)")
    parser.add_argument("--originals", type=int, default=60, help="synthetic (and texture) originals to copy")
    parser.add_argument("--textures", type=int, default=200, help="procedural 1/f textures")
    parser.add_argument("--photos", nargs="*", default=[], help="more real photos")
    parser.add_argument("--hashes", type=int, default=30_607, help="hashes to group (Caltech-256: 30,607)")
    parser.add_argument("--max-distance", type=int, default=24, help="t for the grouping timing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    measure(args)
    time_grouping(args.hashes, planted=300, max_distance=args.max_distance)


if __name__ == "__main__":
    main()
