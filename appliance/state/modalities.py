"""Registered modalities: the only peers allowed to associate.

A modality is known by its calling AE title and, optionally, the host it must
connect from. Its port is where the appliance reaches it (storage commitment
reports, C-MOVE destinations).
"""

from __future__ import annotations

import socket
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from appliance.config import parse_ae_title


@dataclass(frozen=True)
class Modality:
    """One registered DICOM peer."""

    ae_title: str
    host: str | None
    port: int | None
    default_issuer: str
    description: str

    def allows_address(self, address: str) -> bool:
        """Tell whether a connection from `address` may use this AE title.

        With no host registered any address may; otherwise the address must
        be the host or one of the addresses its name resolves to.
        """
        if not self.host:
            return True
        if address == self.host:
            return True
        return address in _resolve(self.host)


def add_modality(
    conn: sqlite3.Connection,
    ae_title: str,
    host: str | None = None,
    port: int | None = None,
    default_issuer: str = "",
    description: str = "",
) -> Modality:
    """Register a modality.

    Raises
    ------
    ValueError
        If the AE title is invalid, the port out of range, or the AE title
        already registered.
    """
    title = parse_ae_title(ae_title)
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    try:
        conn.execute(
            "INSERT INTO modalities (ae_title, host, port, default_issuer,"
            " description, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                title,
                host or None,
                port,
                default_issuer,
                description,
                datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )
    except sqlite3.IntegrityError:
        raise ValueError(f"AE title {title!r} is already registered") from None
    return Modality(title, host or None, port, default_issuer, description)


def update_modality(
    conn: sqlite3.Connection, ae_title: str, changed: Modality
) -> Modality:
    """Replace a registered modality's details, its AE title included.

    Parameters
    ----------
    conn : sqlite3.Connection
        ``app.db``.
    ae_title : str
        The AE title it is registered under now.
    changed : Modality
        Its new details.

    Raises
    ------
    ValueError
        If it is not registered, the new AE title is invalid or taken by
        another modality, or the port is out of range.
    """
    title = parse_ae_title(changed.ae_title)
    if changed.port is not None and not 1 <= changed.port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {changed.port}")
    try:
        cursor = conn.execute(
            "UPDATE modalities SET ae_title = ?, host = ?, port = ?,"
            " default_issuer = ?, description = ? WHERE ae_title = ?",
            (
                title,
                changed.host or None,
                changed.port,
                changed.default_issuer,
                changed.description,
                ae_title.strip(),
            ),
        )
    except sqlite3.IntegrityError:
        raise ValueError(f"AE title {title!r} is already registered") from None
    if cursor.rowcount == 0:
        raise ValueError(f"AE title {ae_title!r} is not registered")
    return Modality(
        title,
        changed.host or None,
        changed.port,
        changed.default_issuer,
        changed.description,
    )


def get_modality(conn: sqlite3.Connection, ae_title: str) -> Modality | None:
    """Return the modality registered under `ae_title`, or None."""
    for modality in list_modalities(conn):
        if modality.ae_title == ae_title.strip():
            return modality
    return None


def remove_modality(conn: sqlite3.Connection, ae_title: str) -> bool:
    """Unregister a modality; return whether it was registered."""
    cursor = conn.execute(
        "DELETE FROM modalities WHERE ae_title = ?", (ae_title.strip(),)
    )
    return cursor.rowcount > 0


def list_modalities(conn: sqlite3.Connection) -> list[Modality]:
    """Return every registered modality, by AE title."""
    rows = conn.execute("SELECT * FROM modalities ORDER BY ae_title").fetchall()
    return [
        Modality(
            row["ae_title"],
            row["host"],
            row["port"],
            row["default_issuer"],
            row["description"],
        )
        for row in rows
    ]


def _resolve(host: str) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return set()
    return {str(info[4][0]) for info in infos}
