"""Lightning's data contract as DDP needs it: cheap class names, prepare_data writes, setup only reads."""

from __future__ import annotations

import http.server
import os
import socket
import threading

import pytest

from caltech_cam.data import (
    CaltechDataModule,
    DataNotPreparedError,
    DatasetNotFoundError,
    DownloadError,
    download_caltech256,
    read_manifest,
    write_manifest,
)
from caltech_cam.data import check as check_module
from caltech_cam.data.download import ARCHIVE_NAME
from caltech_cam.data.index import ARCHIVE_URL

SYNTHETIC = {"num_classes": 3, "images_per_class": 6, "seed": 0, "min_size": 40, "max_size": 48}


@pytest.fixture
def decodes(monkeypatch):
    """Counts full decode checks (the real check runs; only the calls are counted)."""
    calls: list[str] = []
    real = check_module.check_file

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(check_module, "check_file", counting)
    return calls


def _dm(root, tmp_path, **kwargs):
    settings = {"resize": 64, "batch_size": 4, "seed": 0, "cache_dir": tmp_path / "cache"}
    return CaltechDataModule(root=root, **{**settings, **kwargs})


def test_class_names_of_a_synthetic_set_not_yet_made_write_nothing(tmp_path):
    dm = _dm(tmp_path / "synthetic", tmp_path, synthetic=SYNTHETIC, output_dir=tmp_path / "run")
    assert dm.class_names == ["red-circle", "green-triangle", "clutter"]
    assert dm.num_classes == 3
    assert list(tmp_path.iterdir()) == []  # no set, no cache, no run folder, no staging folder
    dm.prepare_data()
    dm.setup()
    assert dm.summary()["class_names"] == dm.class_names


def test_class_names_of_a_caltech_root_are_a_listing(caltech_tree, tmp_path, decodes):
    dm = _dm(caltech_tree.root, tmp_path)
    assert dm.class_dirs == ("001.ak47", "056.dog", "198.spider", "257.clutter")
    assert dm.class_names == ["ak47", "dog", "spider", "clutter"]
    assert decodes == [] and not (tmp_path / "cache").exists()


def test_setup_reads_what_prepare_data_wrote_and_every_rank_splits_alike(synthetic_root, tmp_path, decodes):
    rank0 = _dm(synthetic_root, tmp_path, output_dir=tmp_path / "run")
    rank0.prepare_data()
    assert len(decodes) == 48  # every file of the shared set, once
    rank0.setup("fit")
    # Another rank: a fresh datamodule in its own process state, sharing only the files.
    rank1 = _dm(synthetic_root, tmp_path)
    rank1.setup("fit")
    assert len(decodes) == 48
    assert rank1.split_rows == rank0.split_rows
    assert read_manifest(tmp_path / "run" / "split_manifest.csv") == rank0.split_rows
    assert rank1.manifest_path is None  # only the one that has an output_dir (rank 0) writes it
    # A second preparation over unchanged files trusts the stored verdicts.
    _dm(synthetic_root, tmp_path).prepare_data()
    assert len(decodes) == 48


def test_without_a_cache_dir_the_verdicts_go_to_the_run_directory(synthetic_root, tmp_path, decodes):
    run = tmp_path / "run"
    _dm(synthetic_root, tmp_path, cache_dir=None, output_dir=run).prepare_data()
    assert (run / "decode_check.tsv").is_file()
    other = _dm(synthetic_root, tmp_path, cache_dir=None, output_dir=run)
    other.setup()
    assert len(decodes) == 48
    assert sum(other.summary()["splits"].values()) == 48


def test_setup_without_prepare_data_stops_and_decodes_nothing(caltech_tree, tmp_path, decodes):
    with pytest.raises(DataNotPreparedError, match=r"34 of 34 image file\(s\) .* no up-to-date decode check"):
        _dm(caltech_tree.root, tmp_path, bad_images="skip").setup()
    assert decodes == []
    _dm(caltech_tree.root, tmp_path, bad_images="skip").prepare_data()
    changed = caltech_tree.folder / "001.ak47" / "001_0002.jpg"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # edited after the check
    del decodes[:]
    with pytest.raises(
        DataNotPreparedError, match=r"1 of 34 image file\(s\).*e\.g\. 001\.ak47/001_0002\.jpg"
    ):
        _dm(caltech_tree.root, tmp_path, bad_images="skip").setup()
    assert decodes == []


def test_setup_never_generates_the_synthetic_set(tmp_path):
    with pytest.raises(DataNotPreparedError, match="prepare_data\\(\\) generates it"):
        _dm(tmp_path / "synthetic", tmp_path, synthetic=SYNTHETIC).setup()
    assert list(tmp_path.iterdir()) == []


def test_classes_that_change_after_the_model_was_sized_are_an_error(caltech_tree, tmp_path):
    dm = _dm(caltech_tree.root, tmp_path)
    assert dm.num_classes == 4
    (caltech_tree.folder / "300.new").mkdir()
    with pytest.raises(RuntimeError, match=r"changed since the model was sized: 4 classes .* 5 "):
        dm.prepare_data()


def test_the_manifest_is_replaced_whole_or_not_at_all(tmp_path):
    rows = _rows_of_a_tiny_split(tmp_path)
    path = tmp_path / "run" / "split_manifest.csv"
    write_manifest(rows, path)
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        write_manifest([*rows, None], path)  # fails after the header and every good row are written
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def _rows_of_a_tiny_split(tmp_path):
    from caltech_cam.data import ManifestRow

    return [ManifestRow(f"001.a/{i}.jpg", 0, "train", f"{i:040d}") for i in range(5)]


def test_download_with_a_missing_root_names_the_prepare_command(tmp_path):
    dm = _dm(tmp_path / "nowhere", tmp_path, download=True)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.num_classes  # noqa: B018 -- the property is the cheap index under test
    message = str(info.value)
    assert (
        f"python -m caltech_cam.prepare data=caltech256 data.root={tmp_path / 'nowhere'} data.download=true"
        in (message)
    )
    assert str(tmp_path / "nowhere" / "caltech256") in message
    assert list(tmp_path.iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_download_says_what_failed_and_how_to_get_the_archive(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/{ARCHIVE_NAME}"
    with pytest.raises(DownloadError) as info:
        download_caltech256(tmp_path / "data", url=url)
    message = str(info.value)
    assert f"could not fetch Caltech-256 from {url}: URLError: [Errno 111] Connection refused" in message
    assert f"by hand from {ARCHIVE_URL}" in message
    assert f"put it at {tmp_path / 'data' / 'caltech256' / ARCHIVE_NAME}" in message
    assert f"tar -xf {ARCHIVE_NAME} -C {tmp_path / 'data'}" in message
    assert isinstance(info.value.error, OSError) and info.value.__cause__ is None


def test_a_corrupt_download_is_refused_by_its_md5(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    (served / ARCHIVE_NAME).write_bytes(b"not the archive\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{ARCHIVE_NAME}"
        with pytest.raises(DownloadError, match=f"from {url}: RuntimeError: File not found or corrupted"):
            download_caltech256(tmp_path / "data", url=url)
    finally:
        server.shutdown()
        thread.join()
