"""Encoding display arrays as PNG or JPEG, and decoding stored JPEG frames."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PNG_COMPRESS_LEVEL = 3
JPEG_QUALITY = 92
THUMBNAIL_QUALITY = 82
THUMBNAIL_SIZE = 192


def to_png(array: np.ndarray) -> bytes:
    """Encode an 8-bit gray or RGB array as PNG (lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def to_jpeg(array: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode an 8-bit gray or RGB array as JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def thumbnail(array: np.ndarray, size: int = THUMBNAIL_SIZE) -> bytes:
    """Return a JPEG no larger than `size` on either side."""
    image = Image.fromarray(array)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode a JPEG Baseline frame as a browser would (YCbCr shown as RGB)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("L", "RGB"):
            return np.asarray(image)
        return np.asarray(image.convert("RGB"))
