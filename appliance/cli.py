"""The ``appliance`` command: serve, and the set-up tasks around it.

::

    appliance [--config PATH] serve
    appliance modality add AE [--host H] [--port P] [--issuer I] [--exist-ok]
    appliance modality list
    appliance modality remove AE
    appliance user add NAME --role ROLE | passwd NAME | list | disable NAME
    appliance rebuild-index
    appliance check [--deep]
    appliance backup run | list | verify SNAPSHOT
    appliance restore SNAPSHOT [--data-dir DIR]
    appliance config

Every command reads the same layered settings (see :mod:`appliance.config`).
Errors a person can fix end the command with one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import warnings
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from appliance.cli_backup import add_backup_commands
from appliance.cli_maintenance import add_maintenance_commands
from appliance.cli_users import add_user_commands
from appliance.cli_worklist import add_worklist_commands
from appliance.config import Settings, describe_settings, load_settings
from appliance.errors import ApplianceError
from appliance.service import Appliance, DataPaths, prepare_state
from appliance.state import add_modality, list_modalities, open_state, remove_modality
from appliance.state.audit import record_outside_web

logger = logging.getLogger(__name__)

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``appliance`` command; return its exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        _configure_logging(settings.log_level)
        return int(args.run(settings, args) or 0)
    except (ApplianceError, ValueError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite3.Error) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance", description="DICOM archive and viewer appliance."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (default: $APPLIANCE_CONFIG, else built-in)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the listener and web server")
    serve.set_defaults(run=_serve)

    config = commands.add_parser("config", help="print the effective settings")
    config.set_defaults(run=_show_config)

    _add_modality_commands(commands)
    add_maintenance_commands(commands)
    add_user_commands(commands)
    add_worklist_commands(commands)
    add_backup_commands(commands)
    return parser


def _add_modality_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    modality = commands.add_parser("modality", help="registered DICOM peers")
    actions = modality.add_subparsers(dest="action", required=True)

    add = actions.add_parser("add", help="allow an AE title to associate")
    add.add_argument("ae_title")
    add.add_argument("--host", help="only accept it from this host or address")
    add.add_argument("--port", type=int, help="where the appliance reaches it")
    add.add_argument("--issuer", default="", help="default IssuerOfPatientID")
    add.add_argument("--description", default="")
    add.add_argument(
        "--exist-ok", action="store_true", help="succeed if already registered"
    )
    add.set_defaults(run=_modality_add)

    listing = actions.add_parser("list", help="show registered modalities")
    listing.set_defaults(run=_modality_list)

    remove = actions.add_parser("remove", help="stop accepting an AE title")
    remove.add_argument("ae_title")
    remove.set_defaults(run=_modality_remove)


def _configure_logging(level: str) -> None:
    # Under systemd, journald stamps each line; elsewhere we add the time.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=level,
        format=f"{stamp}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom's INFO lines repeat ours; its debug output may dump data sets.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)

    # pydicom warns about odd values by quoting them ("Invalid value for VR
    # DA: '1945...'"), which may be a patient's name or birth date: neither
    # its log lines nor its warnings may reach our log.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    Appliance(settings).serve_until_signalled()
    return 0


def _show_config(settings: Settings, _args: argparse.Namespace) -> int:
    for name, _default, help_text in describe_settings():
        print(f"{name} = {getattr(settings, name)!s:<24} # {help_text}")
    return 0


def _open_state(settings: Settings) -> sqlite3.Connection:
    paths = DataPaths(settings.data_dir)
    prepare_state(paths)
    return open_state(paths.app_db)


def _modality_add(settings: Settings, args: argparse.Namespace) -> int:
    with closing(_open_state(settings)) as conn:
        known = {m.ae_title for m in list_modalities(conn)}
        if args.exist_ok and args.ae_title.strip() in known:
            print(f"{args.ae_title.strip()} is already registered")
            return 0
        modality = add_modality(
            conn, args.ae_title, args.host, args.port, args.issuer, args.description
        )
    record_outside_web(
        DataPaths(settings.data_dir).app_db,
        "modality-add",
        f"{modality.ae_title} host={modality.host or 'any'} port={modality.port}",
    )
    print(f"Registered {modality.ae_title}")
    return 0


def _modality_list(settings: Settings, _args: argparse.Namespace) -> int:
    with closing(_open_state(settings)) as conn:
        modalities = list_modalities(conn)
    if not modalities:
        print("No modality registered: no peer can associate.")
    for modality in modalities:
        print(
            f"{modality.ae_title:<16}  host={modality.host or 'any'}"
            f"  port={modality.port or '-'}  issuer={modality.default_issuer or '-'}"
        )
    return 0


def _modality_remove(settings: Settings, args: argparse.Namespace) -> int:
    with closing(_open_state(settings)) as conn:
        removed = remove_modality(conn, args.ae_title)
    if not removed:
        print(f"appliance: {args.ae_title} is not registered", file=sys.stderr)
        return 1
    record_outside_web(
        DataPaths(settings.data_dir).app_db, "modality-remove", args.ae_title
    )
    print(f"Removed {args.ae_title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
