"""Decoding one frame with pydicom and mapping it to display values.

The pipelines follow PS3.3 C.11 (Grayscale) and C.7.6.3.1.5 (Palette
Color): stored values, then the Modality LUT or rescale, then the VOI LUT or
window, then the Presentation LUT shape (MONOCHROME1 is inverted). Colour
images come out of pydicom already converted to RGB (YBR_FULL, YBR_FULL_422,
YBR_RCT and YBR_ICT included); palette colour goes through its lookup table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array

MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})


class RenderError(ValueError):
    """A frame cannot be decoded or mapped to display values."""


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): centre, width and function."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True)
class GrayValues:
    """A grayscale frame after the Modality LUT, for windowing in the browser."""

    values: np.ndarray
    minimum: float
    maximum: float
    invert: bool


def decode(path: Path, index: int) -> tuple[np.ndarray, Dataset]:
    """Decode one frame (0-based) and return it with the file's header.

    Raises
    ------
    RenderError
        If pydicom has no decoder for it or the data are damaged.
    """
    header = Dataset()
    try:
        array = pixel_array(str(path), index=index, ds_out=header)
    except Exception as exc:  # decoders raise many types on bad input
        raise RenderError(f"{path.name}: cannot decode frame {index}: {exc}") from exc
    return array, header


def display_array(array: np.ndarray, header: Dataset) -> np.ndarray:
    """Map a decoded frame to 8-bit display values (H×W or H×W×3).

    Raises
    ------
    RenderError
        If the photometric interpretation or a lookup table cannot be used.
    """
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    try:
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(array, header)
            return _scale(rgb, _palette_bits(header))
        if photometric in MONOCHROME:
            return _grayscale(array, header, photometric == "MONOCHROME1")
        return _scale(array, int(header.get("BitsStored", 8)))
    except RenderError:
        raise
    except Exception as exc:
        raise RenderError(f"cannot map {photometric} to display: {exc}") from exc


def gray_values(array: np.ndarray, header: Dataset) -> GrayValues:
    """Return a grayscale frame's Modality LUT output, for windowing."""
    values = np.asarray(apply_modality_lut(array, header), dtype=np.float32)
    photometric = str(header.get("PhotometricInterpretation", ""))
    return GrayValues(
        values,
        float(values.min()),
        float(values.max()),
        invert=photometric.strip() == "MONOCHROME1",
    )


def first_window(header: Dataset) -> Window | None:
    """Return the header's first VOI window, or None (PS3.3 C.11.2)."""
    center = _first_number(header.get("WindowCenter"))
    width = _first_number(header.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(header.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return Window(center, width, function)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map values through a window to 0.0-1.0 (PS3.3 C.11.2.1.2, C.11.2.1.3)."""
    center, width = window.center, window.width
    if window.function == "SIGMOID":
        return np.asarray(1.0 / (1.0 + np.exp(-4.0 * (values - center) / width)))
    if window.function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)

    # LINEAR: the standard's half-pixel offsets, and a width of at least 1.
    center, width = center - 0.5, max(width - 1.0, 1e-6)
    result = (values - center) / width + 0.5
    result[values <= center - width / 2] = 0.0
    result[values > center + width / 2] = 1.0
    return np.clip(result, 0.0, 1.0)


def _grayscale(array: np.ndarray, header: Dataset, invert: bool) -> np.ndarray:
    values = apply_modality_lut(array, header)

    # A VOI LUT if there is one, else the first window, else the full range.
    if header.get("VOILUTSequence"):
        lut_input = (
            np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
        )
        mapped = apply_voi(lut_input, header)
        bits = int(header.VOILUTSequence[0].LUTDescriptor[2])
        unit = mapped.astype(np.float64) / float(2**bits - 1)
    else:
        window = first_window(header)
        if window is not None:
            unit = apply_window(values.astype(np.float64), window)
        else:
            low, high = float(values.min()), float(values.max())
            unit = (values.astype(np.float64) - low) / max(high - low, 1e-6)

    if invert:
        unit = 1.0 - unit
    return _to_uint8(unit * 255.0)


def _scale(array: np.ndarray, bits: int) -> np.ndarray:
    if array.dtype == np.uint8 and bits <= 8:
        return array
    top = float(2 ** min(max(bits, 1), 16) - 1)
    return _to_uint8(array.astype(np.float64) * (255.0 / top))


def _palette_bits(header: Dataset) -> int:
    # PS3.3 C.7.6.3.1.5: the descriptor's third value, 8 or 16 bits an entry.
    descriptor = header.get("RedPaletteColorLookupTableDescriptor")
    return int(descriptor[2]) if descriptor else 8


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(
            value[0]
            if hasattr(value, "__len__") and not isinstance(value, str)
            else value
        )
    except (TypeError, ValueError, IndexError):
        return None
