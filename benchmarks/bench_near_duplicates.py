"""How far near-duplicate copies and distinct images lie apart in perceptual-hash bits, and how fast grouping is.

    python benchmarks/bench_near_duplicates.py                     # the full run (about a minute on one core)
    python benchmarks/bench_near_duplicates.py --per-class 40 --originals 30    # a quick run
    python benchmarks/bench_near_duplicates.py --photos ~/pics/*.jpg           # more real photos

Measures, for the project's dHash (``caltech_cam.data.phash.dhash``) and, side by side, a 64-bit DCT pHash:
1. copies: for originals drawn from every source, every combination of a crop (0, 2.5 or 5 % of each side's
   length, taken from random edges), a resize (0.5, 0.75, 1.5, 2x) and a JPEG re-encode (quality 60, 75, 95),
   decoded back with the project's decoder: the distance from copy to original must be <= t;
2. distinct pairs: every pair of distinct originals -- the synthetic set (``generate_synthetic``, the default
   10 classes x 200), procedural 1/f "natural-like" textures, and real photos found on this machine (matplotlib's
   and scikit-learn's sample photos when installed, ``--photos``) with their four quadrants as further distinct
   images: the distance must be > t;
3. grouping time: ``hamming_pairs`` over 30,607 random 64-bit hashes (Caltech-256's size) with planted near pairs.
Prints the distributions and, for each t, how many copies match and how many distinct pairs would be (falsely)
joined, then the t in the middle of the gap.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from caltech_cam.data import ImageFile, decode_rgb, generate_synthetic, load_rgb
from caltech_cam.data.phash import dhash, hamming_pairs
from caltech_cam.data.splits import NearPair, split_units

SCALES = (0.5, 0.75, 1.5, 2.0)
QUALITIES = (60, 75, 95)
CROPS = (0.0, 0.025, 0.05)
_LUMA = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)


def dct_phash(image: torch.Tensor) -> int:
    """The contender: 64-bit pHash (Zauner 2010 style): 32x32 luma, 2-D DCT-II, top-left 8x8 coefficients
    compared with their median (DC excluded from the median)."""
    gray = TF.resize((image.float() * _LUMA).sum(0, keepdim=True), [32, 32], antialias=True)[0].double()
    k = torch.arange(32, dtype=torch.float64)
    basis = torch.cos(math.pi / 32 * (k[None, :] + 0.5) * k[:, None])  # basis[u, x]
    low = (basis @ gray @ basis.T)[:8, :8].flatten()
    bits = (low > low[1:].median()).tolist()
    return int("".join("1" if b else "0" for b in bits), 2)


HASHES: dict[str, Callable[[torch.Tensor], int]] = {"dhash": dhash, "pHash (DCT)": dct_phash}


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


def distinct_distances(hashes: list[int]) -> np.ndarray:
    """All n(n-1)/2 pairwise Hamming distances."""
    h = np.asarray(hashes, dtype=np.uint64)
    full = np.bitwise_count(h[:, None] ^ h[None, :])
    return full[np.triu_indices(len(h), k=1)]


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

    for name, fn in HASHES.items():
        print(f"\n== {name} ==")
        copy_d = []
        worst: dict[str, int] = {}
        for image in picked:
            h0 = fn(image)
            for crop in CROPS:
                for scale in SCALES:
                    for quality in QUALITIES:
                        d = (fn(copy_of(image, crop, scale, quality, rng)) ^ h0).bit_count()
                        copy_d.append(d)
                        key = f"crop {crop:.3f}"
                        worst[key] = max(worst.get(key, 0), d)
        copy_d = np.array(copy_d)
        print(
            f"copies ({len(copy_d)}): max {copy_d.max()}, p99 {np.percentile(copy_d, 99):.0f}, "
            f"mean {copy_d.mean():.2f}; worst by crop: {worst}"
        )
        print(f"  histogram: {histogram(copy_d)}")
        distinct = {}
        for src, images in sources.items():
            if len(images) > 1:
                distinct[src] = distinct_distances([fn(im) for im in images])
                d = distinct[src]
                print(
                    f"distinct {src} ({len(d)} pairs): min {d.min()}, p0.1 {np.percentile(d, 0.1):.0f}, "
                    f"median {np.median(d):.0f}; low end: {histogram(d, 20).split('  >=')[0]}"
                )
        everything = [fn(im) for images in sources.values() for im in images]
        all_d = distinct_distances(everything)
        print(f"distinct, all sources together ({len(all_d)} pairs): min {all_d.min()}")
        print("  t  copies matched  false pairs (synthetic / textures / photos / all)")
        for t in range(0, 21):
            falses = [int((d <= t).sum()) for d in distinct.values()]
            print(
                f"  {t:2d}  {100 * (copy_d <= t).mean():6.2f} %       {' / '.join(map(str, falses))} / "
                f"{int((all_d <= t).sum())}"
            )
        gap = (int(copy_d.max()), int(all_d.min()))
        if gap[0] < gap[1]:
            print(
                f"gap: copies <= {gap[0]}, distinct >= {gap[1]}: t = {(gap[0] + gap[1]) // 2} sits in its middle"
            )
        else:
            print(f"no gap: copies reach {gap[0]} bits, distinct pairs come as close as {gap[1]}")


def time_grouping(n: int, planted: int, max_distance: int) -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    targets = rng.choice(n, size=2 * planted, replace=False)
    for a, b in targets.reshape(-1, 2):  # b becomes a copy of a with up to max_distance bits flipped
        flips = rng.choice(64, size=rng.integers(0, max_distance + 1), replace=False)
        hashes[b] = hashes[a] ^ np.uint64(sum(1 << int(f) for f in flips))
    start = time.perf_counter()
    pairs = hamming_pairs(hashes, max_distance)
    search = time.perf_counter() - start
    found = {tuple(sorted(p)) for p in pairs.tolist()}
    want = {tuple(sorted(map(int, p))) for p in targets.reshape(-1, 2)}
    files = [ImageFile(f"c/{i:05d}.jpg", 0) for i in range(n)]
    sha1s = {f.path: f.path for f in files}
    near = [NearPair(files[i].path, files[j].path, 0) for i, j in pairs.tolist()]
    start = time.perf_counter()
    units = split_units(files, sha1s, near)
    union = time.perf_counter() - start
    print(f"\n== grouping {n} random 64-bit hashes, {planted} planted pairs, t = {max_distance} ==")
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
    parser.add_argument("--max-distance", type=int, default=10, help="t for the grouping timing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    measure(args)
    time_grouping(args.hashes, planted=300, max_distance=args.max_distance)


if __name__ == "__main__":
    main()
