"""Storage: spool files, durable commit, names that carry sender and hash."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
from datetime import datetime
from pathlib import Path

import pytest

from appliance.errors import StorageFullError
from appliance.storage import Storage, decode_ae, encode_ae, hash_file


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "data")
    storage.prepare()
    return storage


def test_spool_hashes_what_it_writes(storage: Storage) -> None:
    spool = storage.new_spool()
    spool.write(b"abc")
    spool.write(b"def")
    spool.file.flush()
    spool.finish()

    assert spool.error is None
    assert spool.size == 6
    assert spool.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    assert spool.path.read_bytes() == b"abcdef"
    assert spool.path.parent == storage.incoming_dir


def test_commit_moves_the_spool_into_storage(storage: Storage) -> None:
    spool = storage.new_spool()
    spool.write(b"data")
    spool.finish()
    relative = storage.relative_path(
        datetime(2026, 12, 3), "US/1 ..", "1.2.3", spool.sha256
    )

    stored = storage.commit(spool, relative)

    assert stored.read_bytes() == b"data"
    assert not spool.path.exists()
    assert list(storage.incoming_dir.iterdir()) == []
    assert stored.parent.parent == storage.files_dir / "2026" / "12" / "03"
    assert hash_file(stored) == spool.sha256
    name = storage.parse_name(stored)
    assert name is not None
    assert (name.source_ae, name.sop_instance_uid) == ("US/1 ..", "1.2.3")


def test_commit_of_same_content_keeps_one_file(storage: Storage) -> None:
    paths = []
    for _ in range(2):
        spool = storage.new_spool()
        spool.write(b"same")
        spool.finish()
        relative = storage.relative_path(datetime(2026, 1, 1), "A", "1.2", spool.sha256)
        paths.append(storage.commit(spool, relative))

    assert paths[0] == paths[1]
    assert list(storage.iter_files()) == [paths[0]]
    assert list(storage.incoming_dir.iterdir()) == []


def test_a_hostile_uid_never_becomes_a_path(storage: Storage) -> None:
    relative = storage.relative_path(
        datetime(2026, 1, 1), "..", "../../etc/x", "0" * 64
    )

    assert ".." not in relative.parts
    assert relative.name == f"invalid-uid.{'0' * 64}.dcm"
    assert storage.absolute(relative).is_relative_to(storage.files_dir)


@pytest.mark.parametrize("title", ["STORESCU", "US 1", "a/b", "..", ".", "%20"])
def test_ae_folder_names_round_trip(title: str) -> None:
    encoded = encode_ae(title)

    assert decode_ae(encoded) == title
    assert "/" not in encoded and encoded not in (".", "..")


def test_a_failed_write_is_remembered_and_leaves_no_file(storage: Storage) -> None:
    # A real write failure: the kernel refuses to grow a file past RLIMIT_FSIZE.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            spool = storage.new_spool()
            spool.write(b"x" * 3000)
            spool.write(b"y" * (2 << 20))
            spool.write(b"z")
            spool.finish()
            failed = spool.error is not None and not spool.path.exists()
            code = 0 if failed else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert list(storage.incoming_dir.iterdir()) == []


def test_sweep_removes_torn_receives_only(storage: Storage) -> None:
    torn = storage.new_spool()
    torn.write(b"half")
    torn.close()
    other = storage.incoming_dir / "keep.txt"
    other.write_text("not ours")

    assert storage.sweep_incoming() == 1
    assert not torn.path.exists()
    assert other.exists()


def test_commit_on_a_missing_folder_raises_storage_full(storage: Storage) -> None:
    spool = storage.new_spool()
    spool.write(b"data")
    spool.finish()
    os.chmod(storage.files_dir, 0o500)
    try:
        relative = storage.relative_path(datetime(2026, 1, 1), "A", "1.2", spool.sha256)
        if os.geteuid() == 0:
            # root ignores permissions: make the parent a file instead.
            (storage.files_dir / "2026").write_text("in the way")
        with pytest.raises(StorageFullError):
            storage.commit(spool, relative)
    finally:
        os.chmod(storage.files_dir, 0o700)
    assert list(storage.incoming_dir.iterdir()) == []
