"""Writing a text file so that readers see the old content or the whole new one, never a torn file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def write_atomically(path: str | Path) -> Iterator[TextIO]:
    """A text handle on a temporary file beside ``path``, renamed over ``path`` when the block ends cleanly.

    Another rank or a resumed job reading ``path`` meanwhile sees the previous file; an error (or a kill) in the
    block leaves ``path`` as it was and removes the temporary file (a kill may leave a ``.<name>.*.tmp``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            yield fh
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would survive the rename
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
