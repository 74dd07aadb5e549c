"""Fetching the Caltech-256 archive (torchvision's md5-checked downloader), with an error a user can act on."""

from __future__ import annotations

import socket
from pathlib import Path

from caltech_cam.data.index import ARCHIVE_FOLDER, ARCHIVE_URL

ARCHIVE_NAME = f"{ARCHIVE_FOLDER}.tar"
ARCHIVE_MD5 = "67b4f42ca05d46448c6bb8ecd2220f6d"
# What torchvision 0.29's Caltech256(download=True) fetches.
DOWNLOAD_URL = f"{ARCHIVE_URL}/files/{ARCHIVE_NAME}"
# Seconds without a byte before a connection counts as dead (urllib's default is to wait forever).
SOCKET_TIMEOUT = 60.0


class DownloadError(RuntimeError):
    """The archive could not be fetched; the message says which URL, why, and how to get it by hand.

    ``error`` is the underlying exception; it is not chained, so the user reads this message, not urllib's
    traceback.
    """

    def __init__(self, message: str, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.error = error


def download_folder(root: str | Path) -> Path:
    """Where ``data.download=true`` puts the archive for ``data.root=root`` (``index_root`` looks there too)."""
    return Path(root).expanduser().absolute() / "caltech256"


def download_caltech256(root: str | Path, url: str = DOWNLOAD_URL) -> Path:
    """Fetch ``256_ObjectCategories.tar`` into ``<root>/caltech256/``, check its md5 and extract it there.

    An archive already there with the right md5 is not fetched again. Returns the extracted class folder.
    Any failure (no network, an HTTP error, a truncated or corrupt archive) raises :class:`DownloadError`.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    target = download_folder(root)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(SOCKET_TIMEOUT)  # torchvision's urlopen takes no timeout of its own
    try:
        download_and_extract_archive(url, str(target), filename=ARCHIVE_NAME, md5=ARCHIVE_MD5)
    except (
        OSError,
        RuntimeError,
    ) as exc:  # URLError, HTTPError, timeouts are OSErrors; a bad md5 a RuntimeError
        raise DownloadError(_explain(url, target, exc), exc) from None
    finally:
        socket.setdefaulttimeout(previous)
    return target / ARCHIVE_FOLDER


def _explain(url: str, target: Path, exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return (
        f"data.download=true could not fetch Caltech-256 from {url}: {type(exc).__name__}: {reason}\n"
        "The network may be unreachable from this machine (compute nodes often are), or the server refused.\n"
        f"Fetch {ARCHIVE_NAME} (1.2 GB, md5 {ARCHIVE_MD5}) by hand from {ARCHIVE_URL} on a machine with a network, "
        "then either\n"
        f"  put it at {target / ARCHIVE_NAME} and run again with data.download=true (it is md5-checked and "
        "extracted, not fetched), or\n"
        f"  extract it yourself:  tar -xf {ARCHIVE_NAME} -C {target.parent}  and run with data.download=false."
    )
