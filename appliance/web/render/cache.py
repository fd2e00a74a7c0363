"""A disk cache of rendered images, keyed by the stored file's content hash.

``cache/<first two hex digits>/<sha256>/<name>``. Stored files never change,
so an entry never goes stale; the whole folder can be deleted at any time
and is filled again on demand. Entries are written to a temporary name and
renamed, so a reader never sees half a file. No fsync: losing an entry in a
power cut only costs a new render.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9.-]+$")


class RenderCache:
    """Rendered frames and thumbnails under one folder.

    Parameters
    ----------
    root : pathlib.Path
        The cache folder, created on first write.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str, name: str) -> Path:
        """Return where an entry lives.

        Raises
        ------
        ValueError
            If the hash or name could escape the cache folder.
        """
        if not _SHA256.match(sha256) or not _NAME.match(name) or ".." in name:
            raise ValueError(f"bad cache key {sha256!r}/{name!r}")
        return self.root / sha256[:2] / sha256 / name

    def get(self, sha256: str, name: str) -> bytes | None:
        """Return an entry's bytes, or None when it is not cached."""
        try:
            return self.path(sha256, name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, sha256: str, name: str, data: bytes) -> None:
        """Store an entry; a failure (disk full) is logged, never raised."""
        target = self.path(sha256, name)
        temporary: str | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, target)
        except OSError:
            logger.exception("Could not cache a rendered image under %s", self.root)
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
