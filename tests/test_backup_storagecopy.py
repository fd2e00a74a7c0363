"""The walk of the data folder and what the copy links from the last snapshot.

The engine walks ``storage/`` a folder at a time, newest first, and links a
file only when the previous snapshot's manifest lists it in that folder
with the hash its name carries. These tests hold the walk's order on names
chosen to tell orders apart, and the link rule on files made to break it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from backup.manifest import Entry, Listed, Manifest, ManifestWriter
from backup.storagecopy import StorageCopier, scan
from tests.backup_helpers import tmpfs

# Folder and file names whose order changes if a folder's name is compared
# without the "/" its files' paths carry after it ("-" and "." sort before it).
TRICKY = [
    "2024/05/02/SEQUOIA/1.2.3",
    "2024/05/02/SEQUOIA-2/1.2.4",
    "2024/05/02/SEQUOIA.B/1.2.5",
    "2024/05/02/SEQUOIA/1.2.30",
    "2024/05/02/SEQUOI/1.2.6",
    "2024/05/10/SEQUOIA/1.2.7",
    "2024/05/1/SEQUOIA/1.2.8",
    "2024/06/02/SEQUOIA/1.2.9",
]


def _store(data_dir: Path, stem: str, content: bytes) -> str:
    sha = hashlib.sha256(content).hexdigest()
    relative = f"storage/{stem}.{sha}.dcm"
    path = data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return relative


def _manifest(path: Path, entries: list[Entry]) -> Manifest:
    writer = ManifestWriter(path)
    writer.add_many(entries)
    writer.close()
    return Manifest(path)


def test_the_walk_goes_folder_by_folder_newest_first(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stored = [_store(data_dir, stem, stem.encode()) for stem in TRICKY]

    walked = [(folder.path, folder.names) for folder in scan(data_dir)]

    folders = [path for path, _names in walked]
    assert folders == sorted(folders, reverse=True)
    assert folders[0] == "storage/2024/06/02/SEQUOIA"
    assert all(names == sorted(names, reverse=True) for _path, names in walked)
    paths = [f"{path}/{name}" for path, names in walked for name in names]
    assert sorted(paths) == sorted(stored)


def test_a_missing_storage_folder_walks_nothing(tmp_path: Path) -> None:
    assert list(scan(tmp_path)) == []


def test_a_manifest_lists_a_folder_s_own_files_by_name(tmp_path: Path) -> None:
    entries = [
        Entry("storage/2024/05/02/SEQUOIA/a.dcm", 1, "1" * 64),
        Entry("storage/2024/05/02/SEQUOIA/b.dcm", 2, "2" * 64),
        Entry("storage/2024/05/02/SEQUOIA/deeper/c.dcm", 3, "3" * 64),
        Entry("storage/2024/05/02/SEQUOIA-2/d.dcm", 4, "4" * 64),
        Entry("storage/2024/05/02/SEQUOI/e.dcm", 5, "5" * 64),
    ]

    with _manifest(tmp_path / "manifest.db", entries) as manifest:
        listed = manifest.folder("storage/2024/05/02/SEQUOIA")

    assert listed == {"a.dcm": Listed(1, "1" * 64), "b.dcm": Listed(2, "2" * 64)}


def test_only_files_the_last_snapshot_holds_under_their_hash_are_linked(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    previous = tmp_path / "previous"
    stored = [_store(data_dir, stem, stem.encode()) for stem in TRICKY]
    same, changed, other_hash, not_there, unlisted = stored[:5]
    for relative in (same, changed, other_hash):
        (previous / relative).parent.mkdir(parents=True, exist_ok=True)
        os.link(data_dir / relative, previous / relative)
    # Damaged on the data disk after the last snapshot: that copy stays good.
    (data_dir / changed).unlink()
    (data_dir / changed).write_bytes(b"bytes the data disk garbled since")
    listed = [
        Entry(same, len(TRICKY[0]), _hash_of(same)),
        Entry(changed, len(TRICKY[1]), _hash_of(changed)),
        # Copied from a file damaged back then: listed with what was read.
        Entry(other_hash, len(TRICKY[2]), "f" * 64),
        # Listed, but gone from the previous snapshot's folder.
        Entry(not_there, len(TRICKY[3]), _hash_of(not_there)),
    ]
    snapshot = tmp_path / "snapshot"
    writer = ManifestWriter(tmp_path / "new-manifest.db")

    with _manifest(previous / "manifest.db", listed) as manifest:
        copier = StorageCopier(data_dir, snapshot, previous, writer)
        copier.run(scan(data_dir), manifest)
    writer.close()

    linked = {
        relative
        for relative in stored
        if (previous / relative).exists()
        and os.path.samefile(previous / relative, snapshot / relative)
    }
    assert linked == {same, changed}
    assert (snapshot / changed).read_bytes() == TRICKY[1].encode()
    assert (snapshot / unlisted).read_bytes() == TRICKY[4].encode()
    assert copier.stats.linked_files == 2
    assert copier.stats.copied_files == len(stored) - 2
    with Manifest(tmp_path / "new-manifest.db") as written:
        assert sorted(entry.path for entry in written.entries()) == sorted(stored)


def test_a_disk_that_refuses_hardlinks_gets_full_copies(tmp_path: Path) -> None:
    # The previous snapshot on another file system: link() fails with EXDEV,
    # as it fails with EPERM on a FAT USB disk.
    data_dir = tmp_path / "data"
    stored = [_store(data_dir, stem, stem.encode()) for stem in TRICKY]
    with tmpfs(tmp_path / "other-disk", "4m") as previous:
        entries = [
            Entry(path, len(TRICKY[i]), _hash_of(path)) for i, path in enumerate(stored)
        ]
        for relative in stored:
            (previous / relative).parent.mkdir(parents=True, exist_ok=True)
            (previous / relative).write_bytes((data_dir / relative).read_bytes())
        writer = ManifestWriter(tmp_path / "new-manifest.db")

        with _manifest(previous / "manifest.db", entries) as manifest:
            copier = StorageCopier(data_dir, tmp_path / "snapshot", previous, writer)
            copier.run(scan(data_dir), manifest)
        writer.close()

    assert copier.stats.no_hardlinks
    assert copier.stats.copied_files == len(stored)
    for relative in stored:
        copy = tmp_path / "snapshot" / relative
        assert copy.read_bytes() == (data_dir / relative).read_bytes()
    with Manifest(tmp_path / "new-manifest.db") as written:
        assert sorted(entry.path for entry in written.entries()) == sorted(stored)


def test_without_a_previous_snapshot_everything_is_copied(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stored = [_store(data_dir, stem, stem.encode()) for stem in TRICKY]
    writer = ManifestWriter(tmp_path / "manifest.db")

    copier = StorageCopier(data_dir, tmp_path / "snapshot", None, writer)
    copier.run(scan(data_dir), None)
    writer.close()

    assert copier.stats.copied_files == len(stored)
    assert copier.stats.linked_files == 0
    for relative in stored:
        copy = tmp_path / "snapshot" / relative
        assert copy.read_bytes() == (data_dir / relative).read_bytes()
        assert copy.stat().st_ino != (data_dir / relative).stat().st_ino


def _hash_of(relative: str) -> str:
    return relative.rsplit(".", 2)[1]
