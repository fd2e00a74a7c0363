"""Frames, thumbnails and downloads of stored instances, cached on disk.

A JPEG Baseline frame of a YCbCr or grayscale image is sent as stored. Every
other frame is decoded once, mapped to display values, encoded as PNG and
kept in the cache, so a second viewer (or a second loop of a clip) costs a
file read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.index.browse import InstanceEntry
from appliance.storage import Storage
from appliance.web.render import encode
from appliance.web.render.cache import RenderCache
from appliance.web.render.frames import FrameError, is_passthrough, read_frame
from appliance.web.render.pixels import (
    GrayValues,
    RenderError,
    decode,
    display_array,
    gray_values,
)

logger = logging.getLogger(__name__)

JPEG = "image/jpeg"
PNG = "image/png"


@dataclass(frozen=True)
class Rendered:
    """An encoded image and its media type."""

    data: bytes
    mimetype: str


class Renderer:
    """Render stored instances for the browser.

    Parameters
    ----------
    storage : Storage
        Where the stored files are.
    cache : RenderCache
        Where rendered images are kept.
    """

    def __init__(self, storage: Storage, cache: RenderCache) -> None:
        self.storage = storage
        self.cache = cache

    def frame(self, entry: InstanceEntry, number: int) -> Rendered:
        """Return frame `number` (1-based) as the viewer shows it.

        Raises
        ------
        RenderError
            If the frame cannot be read or decoded.
        """
        if self.passthrough(entry):
            return Rendered(self._stored_frame(entry, number), JPEG)
        name = f"frame-{number}.png"
        cached = self.cache.get(entry.sha256, name)
        if cached is not None:
            return Rendered(cached, PNG)
        data = encode.to_png(self.display(entry, number))
        self.cache.put(entry.sha256, name, data)
        return Rendered(data, PNG)

    def thumbnail(self, entry: InstanceEntry) -> bytes:
        """Return a small JPEG of the first frame, rendered once."""
        cached = self.cache.get(entry.sha256, "thumbnail.jpg")
        if cached is not None:
            return cached
        data = encode.thumbnail(self.display(entry, 1))
        self.cache.put(entry.sha256, "thumbnail.jpg", data)
        return data

    def download(self, entry: InstanceEntry, number: int, kind: str) -> Rendered:
        """Return a frame as a file to keep: ``jpeg`` or ``png``.

        A stored JPEG Baseline frame is handed out as stored; a PNG is always
        lossless from the decoded frame.
        """
        if kind == "jpeg":
            if self.passthrough(entry):
                return Rendered(self._stored_frame(entry, number), JPEG)
            return Rendered(encode.to_jpeg(self.display(entry, number)), JPEG)
        if not self.passthrough(entry):
            return self.frame(entry, number)
        return Rendered(encode.to_png(self.display(entry, number)), PNG)

    def display(self, entry: InstanceEntry, number: int) -> np.ndarray:
        """Return frame `number` (1-based) as 8-bit display values."""
        if self.passthrough(entry):
            try:
                return encode.decode_jpeg(self._stored_frame(entry, number))
            except OSError as exc:
                raise RenderError(f"{entry.sop_uid}: bad JPEG frame: {exc}") from exc
        array, header = decode(self._path(entry), number - 1)
        return display_array(array, header)

    def values(self, entry: InstanceEntry, number: int) -> GrayValues:
        """Return a grayscale frame's values for windowing in the browser."""
        array, header = decode(self._path(entry), number - 1)
        return gray_values(array, header)

    @staticmethod
    def passthrough(entry: InstanceEntry) -> bool:
        """Tell whether this instance's frames go out exactly as stored."""
        return is_passthrough(entry.transfer_syntax_uid, entry.photometric)

    def _stored_frame(self, entry: InstanceEntry, number: int) -> bytes:
        try:
            return read_frame(self._path(entry), number - 1, entry.number_of_frames)
        except (FrameError, IndexError, OSError) as exc:
            raise RenderError(f"{entry.sop_uid}: cannot read frame: {exc}") from exc

    def _path(self, entry: InstanceEntry) -> Path:
        return self.storage.absolute(entry.file_path)
