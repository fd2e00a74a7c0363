"""The walk of the data folder and its pairing with the previous manifest.

The engine links a file only when the walk and the previous manifest, both
read newest first, meet on the same path; if the walk's order ever differed
from SQLite's ``ORDER BY path DESC``, unchanged files would be copied again
(or, worse, skipped past). These tests hold the two orders together on
names chosen to tell them apart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from backup.manifest import Entry, Manifest, ManifestWriter
from backup.storagecopy import Item, scan, split

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


def test_the_walk_goes_in_the_manifest_s_newest_first_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stored = [_store(data_dir, stem, stem.encode()) for stem in TRICKY]
    entries = [Entry(path, 1, "0" * 64) for path in stored]

    walked = [item.path for item in scan(data_dir)]
    with _manifest(tmp_path / "manifest.db", entries) as manifest:
        listed = [entry.path for entry in manifest.entries(newest_first=True)]

    assert walked == listed == sorted(stored, reverse=True)


def test_a_missing_storage_folder_walks_nothing(tmp_path: Path) -> None:
    assert list(scan(tmp_path)) == []


def test_only_unchanged_files_are_paired_for_linking(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stored = [_store(data_dir, stem, stem.encode()) for stem in TRICKY]
    same, resized, renamed_hash = stored[0], stored[1], stored[2]
    known = {
        same: Entry(same, len(TRICKY[0]), _hash_of(same)),
        resized: Entry(resized, 999, _hash_of(resized)),
        renamed_hash: Entry(renamed_hash, len(TRICKY[2]), "f" * 64),
        # A file the previous snapshot has and the data folder no longer has.
        "storage/2024/05/02/SEQUOIA/1.2.99.x.dcm": Entry(
            "storage/2024/05/02/SEQUOIA/1.2.99.x.dcm", 1, "a" * 64
        ),
    }

    with _manifest(tmp_path / "manifest.db", list(known.values())) as manifest:
        pairs = list(split(scan(data_dir), manifest))

    linked = {item.path: entry for item, entry in pairs if entry is not None}
    assert linked == {same: known[same]}
    assert sorted(item.path for item, _entry in pairs) == sorted(stored)


def test_without_a_previous_snapshot_everything_is_copied() -> None:
    items = [Item("storage/b", 1), Item("storage/a", 2)]

    assert list(split(items, None)) == [(items[0], None), (items[1], None)]


def _hash_of(relative: str) -> str:
    return relative.rsplit(".", 2)[1]
