"""The audit trail: append-only, chained by hashes, checked by `appliance check`."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance import cli, db
from appliance.index import open_index
from appliance.service import Appliance, DataPaths
from appliance.state import open_state
from appliance.state.audit import AuditEvent, recent, record
from appliance.state.audit_chain import GENESIS, row_hash, verify_chain
from appliance.state.schema import MIGRATIONS
from appliance.storage import Storage
from backup.engine import BackupResult


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder with an empty index, storage and a few audit entries."""
    folder = tmp_path / "data"
    folder.mkdir()
    Storage(folder).prepare()
    with closing(open_index(folder / "index.db")):
        pass
    with closing(open_state(folder / "app.db")) as conn:
        for number in range(5):
            record(conn, AuditEvent("doc", "view-study", "192.0.2.7", f"P{number}"))
    return folder


@pytest.fixture
def raw(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection, as someone editing the file by hand has."""
    with closing(sqlite3.connect(data_dir / "app.db", isolation_level=None)) as conn:
        yield conn


def check(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = data_dir.parent / "appliance.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    code = cli.main(["--config", str(config), "check"])
    return code, capsys.readouterr().out


def test_every_row_seals_the_one_before(data_dir: Path) -> None:
    with closing(db.connect(data_dir / "app.db")) as conn:
        rows = conn.execute("SELECT * FROM audit ORDER BY id").fetchall()
    previous = GENESIS
    for row in rows:
        content = [row[name] for name in ("at", "username", "action", "address")]
        content += [row[name] for name in ("patient_id", "study_uid", "object_uid")]
        content.append(row["detail"])
        assert row["prev_hash"] == previous
        assert row["row_hash"] == row_hash(previous, row["id"], content)
        previous = row["row_hash"]
    assert verify_chain(data_dir / "app.db").ok


def test_the_database_refuses_updates_deletes_and_unsealed_rows(
    raw: sqlite3.Connection,
) -> None:
    statements = (
        "UPDATE audit SET patient_id = 'P9' WHERE id = 2",
        "DELETE FROM audit WHERE id = 5",
        "INSERT INTO audit (at, username, action) VALUES ('now', 'x', 'y')",
        "DELETE FROM audit_head",
        "UPDATE audit_head SET last_id = 1",
    )
    for statement in statements:
        with pytest.raises(sqlite3.IntegrityError, match="append|appliance"):
            raw.execute(statement)


def test_check_passes_on_an_untouched_trail(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = check(data_dir, capsys)
    assert code == 0, out
    assert "Audit trail: 5 entries, hash chain intact." in out


@pytest.mark.parametrize(
    ("tamper", "found"),
    [
        (
            [
                "DROP TRIGGER audit_no_update",
                "UPDATE audit SET patient_id = 'P9' WHERE id = 3",
            ],
            "audit row 3: its content was changed",
        ),
        (
            ["DROP TRIGGER audit_no_delete", "DELETE FROM audit WHERE id = 2"],
            "audit row 3: does not follow the row before it",
        ),
        (
            ["DROP TRIGGER audit_no_delete", "DELETE FROM audit WHERE id >= 4"],
            "audit head: the last row written was 5",
        ),
        (
            [
                "DROP TRIGGER audit_no_update",
                "UPDATE audit SET row_hash = 'x' WHERE id = 1",
            ],
            "audit row 2: does not follow",
        ),
    ],
    ids=["edited", "deleted", "tail-deleted", "hash-edited"],
)
def test_check_finds_a_tampered_trail(
    data_dir: Path,
    raw: sqlite3.Connection,
    capsys: pytest.CaptureFixture[str],
    tamper: list[str],
    found: str,
) -> None:
    for statement in tamper:
        raw.execute(statement)
    code, out = check(data_dir, capsys)
    assert code == 1
    assert found in out
    assert "it was changed outside the appliance" in out


def test_rows_from_before_the_chain_are_sealed_at_the_upgrade(tmp_path: Path) -> None:
    # An app.db written by the appliance before migration 7, with entries.
    path = tmp_path / "app.db"
    before = [m for m in MIGRATIONS if m.version < 7]
    with closing(db.connect(path)) as conn:
        db.migrate(conn, before, "app.db")
        for number in range(3):
            conn.execute(
                "INSERT INTO audit (at, username, action) VALUES (?, 'doc', 'login')",
                (f"2024-01-0{number + 1}T08:00:00.000+00:00",),
            )

    with closing(open_state(path)) as conn:
        record(conn, AuditEvent("doc", "logout"))
        actions = [entry.event.action for entry in recent(conn)]
    assert actions == ["logout", "login", "login", "login"]
    assert verify_chain(path).ok


def test_record_joins_the_callers_transaction(tmp_path: Path) -> None:
    with closing(open_state(tmp_path / "app.db")) as conn:
        conn.execute("BEGIN IMMEDIATE")
        record(conn, AuditEvent("doc", "merge-patients", detail="kept with it"))
        conn.execute("ROLLBACK")
        assert recent(conn) == []
        conn.execute("BEGIN IMMEDIATE")
        record(conn, AuditEvent("doc", "merge-patients"))
        conn.execute("COMMIT")
    assert verify_chain(tmp_path / "app.db").rows == 1


def test_migrations_are_numbered_one_after_another() -> None:
    # A gap or a swap would skip a migration on databases already past it.
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_commands_and_the_nightly_backup_are_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
        assert cli.main(["--config", str(config), "user", "add", "anna", "--role",
                         "frontdesk"]) == 0  # fmt: skip
        assert cli.main(["--config", str(config), "user", "disable", "anna"]) == 0

    # The service's nightly run, with its result as the backup job gives it.
    now = datetime.now().astimezone()
    result = BackupResult(True, "schedule", "/backups", now, now, 1.0, "2024-01-31")
    service = SimpleNamespace(
        backups=SimpleNamespace(run=lambda: result), paths=DataPaths(data_dir)
    )
    Appliance._backup(service)  # type: ignore[arg-type]

    with closing(open_state(data_dir / "app.db")) as conn:
        entries = recent(conn)
    assert [(e.event.action, e.event.address) for e in entries] == [
        ("backup", ""),
        ("user-disabled", "command line"),
        ("user-added", "command line"),
    ]
    assert entries[0].event.username == "appliance"
    assert entries[0].event.detail == "schedule backup 2024-01-31 complete"
    assert verify_chain(data_dir / "app.db").ok
