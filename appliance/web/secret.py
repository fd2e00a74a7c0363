"""The key that signs session cookies: random, made once, kept in the data folder.

Keeping it across restarts keeps staff logged in through an update; deleting
the file logs everybody out.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """Return the key in `path`, creating it (mode 0600) the first time.

    Raises
    ------
    OSError
        If the file cannot be read or written.
    """
    try:
        data = path.read_bytes()
        if len(data) >= KEY_BYTES:
            return data
    except FileNotFoundError:
        pass

    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return key
