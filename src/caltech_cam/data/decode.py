"""Decoding one image file to an RGB uint8 tensor, refusing what cannot or should not be decoded."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

# PIL's own default warning threshold (about 89.5 Mpx, e.g. 9459 x 9459): larger headers are refused
# before any pixel is decoded (far above an ordinary photo: a 24 Mpx camera image is a quarter of it).
MAX_PIXELS = 89_478_485


class BadImageError(ValueError):
    """An image file that cannot be decoded (empty, truncated, corrupt, not an image, or a decompression bomb).

    ``others`` lists further bad files found in the same pass, so one run names all of them.
    """

    def __init__(self, path: str | Path, reason: str, others: Sequence[tuple[Path, str]] = ()) -> None:
        self.path = Path(path)
        self.reason = reason
        self.others = list(others)
        lines = [f"bad image {self.path}: {reason}"]
        if self.others:
            lines[0] += f" (and {len(self.others)} more)"
            lines += [f"  bad image {p}: {r}" for p, r in self.others[:20]]
            lines += [f"  ... {len(self.others) - 20} more"] if len(self.others) > 20 else []
        lines.append(
            "Fix or remove the file(s), or set data.bad_images=skip to drop them (they are reported)."
        )
        super().__init__("\n".join(lines))

    def __reduce__(self):  # picklable across worker processes despite the custom signature
        return (type(self), (self.path, self.reason, self.others))


def header_size(data: bytes, path: str | Path = "<bytes>") -> tuple[int, int]:
    """(width, height) from the file header alone, without decoding pixels."""
    try:
        with warnings.catch_warnings():
            # The size check below replaces PIL's bomb warning with a hard, explained refusal.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError as exc:
        raise BadImageError(path, f"decompression bomb refused ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(path, f"unreadable image header: {exc}") from exc


def decode_rgb(data: bytes, path: str | Path = "<bytes>", *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode encoded image bytes to a uint8 tensor (3, H, W).

    torchvision's decoder (libjpeg-turbo/libpng) handles JPEG incl. grayscale and CMYK, PNG incl. palette and
    alpha (alpha is dropped), GIF (first frame) and WebP; anything else (BMP, TIFF, ...) goes through PIL's
    ``convert("RGB")``. Both give identical pixels on the formats they share (checked with torchvision 0.29).
    """
    if not data:
        raise BadImageError(path, "empty file (0 bytes)")
    width, height = header_size(data, path)
    if width * height > max_pixels:
        raise BadImageError(
            path, f"decompression bomb refused: {width}x{height} = {width * height} pixels > {max_pixels}"
        )
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        image = decode_image(buffer, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        if "Unsupported image file" not in str(exc):
            raise BadImageError(path, _short(exc)) from exc
        image = _decode_with_pil(data, path)
    if image.ndim == 4:  # an animated GIF: keep the first frame
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNG: 65535 -> 255
        image = (image.to(torch.int32) // 257).to(torch.uint8)
    return image


def load_rgb(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Read and decode one image file to a uint8 RGB tensor (3, H, W); raises :class:`BadImageError`."""
    return decode_rgb(Path(path).read_bytes(), path, max_pixels=max_pixels)


def _decode_with_pil(data: bytes, path: str | Path) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(path, f"PIL: {exc}") from exc
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def _short(exc: Exception) -> str:
    # torchvision prefixes its messages with the C++ source location; keep only the decoder's words.
    parts = str(exc).strip().split(", ")
    if len(parts) >= 3 and ".cpp:" in parts[1]:
        return f"{parts[0]}: {', '.join(parts[2:])}"
    return ", ".join(parts)
