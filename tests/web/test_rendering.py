"""What the viewer shows, checked against pydicom's own decoding.

Every image is compared pixel by pixel with ``ds.pixel_array`` after
pydicom's colour conversion (YBR to RGB, palette lookup) or its grayscale
pipeline (Modality LUT, VOI LUT or window, MONOCHROME1 inverted). Lossless
renders must agree to rounding; JPEG frames, decoded by the browser's kind
of decoder instead of pydicom's, within JPEG tolerance.
"""

from __future__ import annotations

import io
from contextlib import closing
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from appliance.index import open_index_reader
from appliance.index.browse import InstanceEntry, get_instance
from appliance.web.render.frames import read_frame
from tests.web.archive import RENDER_FILES, data_file
from tests.web.conftest import Archive

LOSSLESS = {
    "rgb",
    "j2k",
    "palette16",
    "palette8",
    "rle",
    "jpeg_lossless",
    "mr",
    "monochrome1",
    "voi_lut",
    "ybr",
}
PASSTHROUGH = {"cine", "jpeg_ybr_full"}


def entry_for(archive: Archive, key: str) -> InstanceEntry:
    """The indexed instance of one pydicom-data file."""
    uid = pydicom.dcmread(data_file(RENDER_FILES[key]), stop_before_pixels=True)
    with closing(open_index_reader(archive.data_dir / "index.db")) as conn:
        row = conn.execute(
            "SELECT id FROM instances WHERE sop_uid = ? ORDER BY id LIMIT 1",
            (str(uid.SOPInstanceUID),),
        ).fetchone()
        found = get_instance(conn, int(row["id"]))
    assert found is not None
    return found


def expected(path: Path, index: int = 0) -> np.ndarray:
    """pydicom's rendering of a frame as 8-bit display values."""
    ds = pydicom.dcmread(path)
    array = ds.pixel_array
    if int(ds.get("NumberOfFrames") or 1) > 1:
        array = array[index]
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds).astype(np.float64)
        bits = ds.RedPaletteColorLookupTableDescriptor[2]
        return np.rint(rgb * 255 / (2**bits - 1)).astype(np.uint8)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return _grayscale(array, ds)
    bits = int(ds.BitsStored)
    return np.rint(array.astype(np.float64) * 255 / (2**bits - 1)).astype(np.uint8)


def _grayscale(array: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    values = apply_modality_lut(array, ds)
    shown = apply_voi_lut(values, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        low, high = 0.0, float(2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1)
    elif "WindowCenter" in ds:
        # pydicom's windowing output range (apply_windowing).
        bits = int(ds.BitsStored)
        low, high = (
            (0.0, 2.0**bits - 1)
            if ds.PixelRepresentation == 0
            else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
        )
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        if slope is not None and intercept is not None:
            low, high = low * slope + intercept, high * slope + intercept
    else:
        low, high = float(shown.min()), float(shown.max())
    unit = (shown - low) / (high - low)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    return np.rint(np.clip(unit, 0, 1) * 255).astype(np.uint8)


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB" if image.mode != "L" else "L"))


def fetch(client: FlaskClient, url: str) -> tuple[np.ndarray, str]:
    response = client.get(url)
    assert response.status_code == 200, url
    return decoded(response.data), response.mimetype


@pytest.mark.parametrize("key", sorted(LOSSLESS))
def test_lossless_renders_match_pydicom(
    role_clients: dict[str, FlaskClient], archive: Archive, key: str
) -> None:
    entry = entry_for(archive, key)
    shown, mimetype = fetch(role_clients["doc"], f"/instances/{entry.id}/frames/1")
    assert mimetype == "image/png"
    truth = expected(data_file(RENDER_FILES[key]))
    assert shown.shape == truth.shape
    difference = np.abs(shown.astype(int) - truth.astype(int))
    assert difference.max() <= 1, key


@pytest.mark.parametrize("key", sorted(PASSTHROUGH))
def test_jpeg_baseline_frames_are_sent_as_stored(
    role_clients: dict[str, FlaskClient], archive: Archive, key: str
) -> None:
    path = data_file(RENDER_FILES[key])
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames") or 1)
    entry = entry_for(archive, key)
    for number in sorted({1, (frames + 1) // 2, frames}):
        response = role_clients["doc"].get(f"/instances/{entry.id}/frames/{number}")
        assert response.mimetype == "image/jpeg"
        stored = get_frame(ds.PixelData, number - 1, number_of_frames=frames)
        assert response.data == stored

        # What a browser decodes from it is what pydicom decodes.
        difference = np.abs(
            decoded(response.data).astype(int) - expected(path, number - 1).astype(int)
        )
        assert difference.mean() < 2.5
        assert np.percentile(difference, 99) <= 12


def test_frame_map_is_exact_for_every_frame_of_the_clip() -> None:
    path = data_file(RENDER_FILES["cine"])
    ds = pydicom.dcmread(path)
    for index in range(120):
        assert read_frame(path, index, 120) == get_frame(
            ds.PixelData, index, number_of_frames=120
        )


def test_renders_are_cached_on_disk(
    role_clients: dict[str, FlaskClient], archive: Archive
) -> None:
    entry = entry_for(archive, "rle")
    role_clients["doc"].get(f"/instances/{entry.id}/frames/1")
    role_clients["doc"].get(f"/instances/{entry.id}/thumbnail")
    folder = archive.data_dir / "cache" / entry.sha256[:2] / entry.sha256
    assert sorted(p.name for p in folder.iterdir()) == ["frame-1.png", "thumbnail.jpg"]


def test_frames_revalidate_with_their_etag(
    role_clients: dict[str, FlaskClient], archive: Archive
) -> None:
    url = f"/instances/{entry_for(archive, 'cine').id}/frames/3"
    first = role_clients["doc"].get(url)
    assert first.headers["Cache-Control"] == "private, no-cache"
    again = role_clients["doc"].get(
        url, headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304


@pytest.mark.parametrize("key", ["cine", "palette16", "monochrome1"])
def test_thumbnails_are_small_jpegs(
    role_clients: dict[str, FlaskClient], archive: Archive, key: str
) -> None:
    entry = entry_for(archive, key)
    response = role_clients["doc"].get(f"/instances/{entry.id}/thumbnail")
    assert response.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(response.data)) as image:
        assert max(image.size) <= 192


def test_grayscale_values_for_window_level(
    role_clients: dict[str, FlaskClient], archive: Archive
) -> None:
    entry = entry_for(archive, "mr")
    response = role_clients["doc"].get(f"/instances/{entry.id}/frames/1/values")
    values = np.frombuffer(response.data, dtype="<f4").reshape(64, 64)
    ds = pydicom.dcmread(data_file(RENDER_FILES["mr"]))
    assert np.allclose(values, apply_modality_lut(ds.pixel_array, ds))
    assert response.headers["X-Invert"] == "0"

    info = role_clients["doc"].get(f"/instances/{entry.id}/info").get_json()
    assert info["grayscale"] is True
    assert info["window"] == {
        "center": float(ds.WindowCenter),
        "width": float(ds.WindowWidth),
    }


def test_clip_info_gives_its_native_rate(
    role_clients: dict[str, FlaskClient], archive: Archive
) -> None:
    info = (
        role_clients["doc"]
        .get(f"/instances/{entry_for(archive, 'cine').id}/info")
        .get_json()
    )
    assert info["kind"] == "clip"
    assert info["frames"] == 120
    assert info["frameRate"] == pytest.approx(1000 / 33.333)
    assert info["passthrough"] is True


def test_structured_report_as_text(
    role_clients: dict[str, FlaskClient], app: Flask, archive: Archive
) -> None:
    page = (
        role_clients["doc"]
        .get(f"/studies/{archive.today_study}")
        .get_data(as_text=True)
    )
    report_id = page.split('"kind": "report"')[0].rsplit('"id": ', 1)[1].split(",")[0]
    body = role_clients["doc"].get(f"/instances/{report_id}/report").get_json()
    texts = [line["text"] for line in body["lines"]]
    assert texts[0]
    assert any(":" in text for text in texts[1:])
    source = pydicom.dcmread(data_file("test-SR.dcm"))
    first_text = next(
        item.TextValue for item in _items(source) if item.get("ValueType") == "TEXT"
    )
    assert any(first_text in text for text in texts)


def _items(ds: pydicom.Dataset):  # type: ignore[no-untyped-def]
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)
