"""The one atomic writer (utils/files.py): whole old or whole new content, fsync'ed, EINVAL of a directory fsync
tolerated (network file systems), every other error raised."""

from __future__ import annotations

import errno
import json
import os

import pytest

from caltech_cam.utils import files
from caltech_cam.utils.files import fsync_directory, write_atomically, write_text


def test_the_new_content_replaces_the_old_whole_and_an_error_keeps_the_old(tmp_path):
    target = tmp_path / "deep" / "metrics.json"
    write_text(target, json.dumps({"a": 1}))
    assert json.loads(target.read_text()) == {"a": 1} and oct(target.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(RuntimeError, match="boom"), write_atomically(target) as fh:
        fh.write('{"a": 2, "torn')
        raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"], "no temporary file is left"
    with write_atomically(tmp_path / "blob.bin", mode="wb") as fh:
        fh.write(bytes(range(256)))
    assert (tmp_path / "blob.bin").read_bytes() == bytes(range(256))


def test_the_file_and_its_directory_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def recording(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", recording)
    write_text(tmp_path / "out.txt", "x")
    assert len(synced) == 2
    assert os.path.basename(synced[0]).startswith(".out.txt.") and synced[0].endswith(".tmp"), synced
    assert synced[1] == str(tmp_path)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EIO])
def test_a_directory_fsync_that_the_file_system_refuses(tmp_path, monkeypatch, code):
    def refuse(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "fsync", refuse)
    if code == errno.EINVAL:
        fsync_directory(tmp_path)  # some network file systems: the rename is as durable as they make it
    else:
        with pytest.raises(OSError, match=os.strerror(code)):
            fsync_directory(tmp_path)
