"""Writing a file so that readers see the old content or the whole new one, never a torn or empty file.

Every result file, manifest, cache index and tuner output goes through `write_atomically`: a temporary file beside
the target, flushed and fsync'ed, renamed over the target, then the directory fsync'ed. Without the two fsyncs a
machine crash after the rename can leave an empty file on NFS or Lustre (the rename reached the server before the
data did).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal


def fsync_directory(folder: str | Path) -> None:
    """fsync a directory (a rename inside it is then durable). Network file systems that cannot (EINVAL) are
    skipped: there the rename is as durable as the server makes it."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextmanager
def write_atomically(path: str | Path, mode: Literal["w", "wb"] = "w") -> Iterator[IO]:
    """A handle on a temporary file beside ``path`` (text, UTF-8, or ``mode="wb"``), renamed over ``path`` once
    the block ends cleanly and the data is on disk.

    Another rank or a resumed job reading ``path`` meanwhile sees the previous file; an error (or a kill) in the
    block leaves ``path`` as it was and removes the temporary file (a kill may leave a ``.<name>.*.tmp``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text = {"newline": "", "encoding": "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would survive the rename
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_text(path: str | Path, text: str) -> Path:
    """`text` into ``path`` through `write_atomically`; returns the path."""
    with write_atomically(path) as fh:
        fh.write(text)
    return Path(path)
