"""The ``appliance worklist`` commands: scheduled procedures in ``app.db``.

::

    appliance worklist add --patient-id ID --name "DOE^JANE" --accession A
        --scheduled YYYY-MM-DDTHH:MM [--birth-date YYYY-MM-DD] [--sex F]
        [--issuer I] [--description D] [--station-ae AE] [--modality US]
    appliance worklist list [--all]
    appliance worklist remove ID

``list`` shows what the modality sees (not done, not stale); ``--all`` shows
every entry with its status. Patient data is printed to the terminal of the
person who asked, never logged.
"""

from __future__ import annotations

import argparse
import sqlite3
from contextlib import closing
from datetime import datetime
from pathlib import Path

from appliance.config import Settings
from appliance.service import DataPaths, prepare_state
from appliance.state.audit import record_outside_web
from appliance.state.schema import open_state
from appliance.state.worklist import NewEntry, WorklistEntry, add_entry, list_entries
from appliance.state.worklist import remove_entry as remove_worklist_entry


def add_worklist_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``worklist add|list|remove`` to the ``appliance`` command."""
    worklist = commands.add_parser("worklist", help="scheduled procedures (MWL)")
    actions = worklist.add_subparsers(dest="action", required=True)

    add = actions.add_parser("add", help="schedule a procedure")
    add.add_argument("--patient-id", required=True)
    add.add_argument("--name", required=True, help="DICOM name, e.g. DOE^JANE")
    add.add_argument("--accession", required=True, help="accession number")
    add.add_argument("--scheduled", required=True, type=_parse_scheduled)
    add.add_argument("--birth-date", default="", help="YYYY-MM-DD")
    add.add_argument("--sex", default="", help="M, F or O")
    add.add_argument("--issuer", default="", help="IssuerOfPatientID")
    add.add_argument("--description", default="", help="procedure description")
    add.add_argument("--station-ae", default="", help="AE title of the modality")
    add.add_argument("--modality", default="US")
    add.set_defaults(run=_add)

    listing = actions.add_parser("list", help="show what the modality sees")
    listing.add_argument(
        "--all", action="store_true", help="include done and stale entries"
    )
    listing.set_defaults(run=_list)

    remove = actions.add_parser("remove", help="delete an entry made by mistake")
    remove.add_argument("entry_id", type=int, metavar="ID")
    remove.set_defaults(run=_remove)


def _parse_scheduled(value: str) -> datetime:
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected YYYY-MM-DDTHH:MM, got {value!r}"
        ) from None


def _connect(settings: Settings) -> closing[sqlite3.Connection]:
    paths = DataPaths(settings.data_dir)
    prepare_state(paths)
    return closing(open_state(paths.app_db))


def _add(settings: Settings, args: argparse.Namespace) -> int:
    new = NewEntry(
        patient_id=args.patient_id,
        patient_name=args.name,
        accession_number=args.accession,
        scheduled=args.scheduled,
        birth_date=args.birth_date,
        sex=args.sex,
        issuer=args.issuer,
        description=args.description,
        station_ae=args.station_ae,
        modality=args.modality,
    )
    with _connect(settings) as conn:
        entry = add_entry(conn, new, created_by="cli")
    record_outside_web(
        _app_db(settings),
        "worklist-add",
        f"entry {entry.id} accession {entry.accession_number}",
    )
    print(
        f"Scheduled entry {entry.id}: accession {entry.accession_number},"
        f" step {entry.sps_id}, study {entry.study_uid}"
    )
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        if args.all:
            entries = list_entries(conn, include_done=True)
        else:
            entries = list_entries(conn, stale_days=settings.worklist_stale_days)
    if not entries:
        print("No scheduled procedure.")
    for entry in entries:
        print(_line(entry))
    return 0


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    with _connect(settings) as conn:
        removed = remove_worklist_entry(conn, args.entry_id)
    if not removed:
        raise ValueError(f"no worklist entry {args.entry_id}")
    record_outside_web(_app_db(settings), "worklist-remove", f"entry {args.entry_id}")
    print(f"Removed entry {args.entry_id}")
    return 0


def _line(entry: WorklistEntry) -> str:
    when = (
        f"{entry.scheduled_date[:4]}-{entry.scheduled_date[4:6]}-"
        f"{entry.scheduled_date[6:]} {entry.scheduled_time[:2]}:"
        f"{entry.scheduled_time[2:4]}"
    )
    return (
        f"{entry.id:>5}  {when}  {entry.status.value:<12}  {entry.modality:<3}"
        f"  {entry.station_ae or '-':<16}  {entry.accession_number:<16}"
        f"  {entry.patient_id}  {entry.patient_name}  {entry.description}"
    )


def _app_db(settings: Settings) -> Path:
    return DataPaths(settings.data_dir).app_db
