"""Downloads: an image as JPEG or PNG, a study as a streamed ZIP; all audited."""

from __future__ import annotations

import io
import zipfile
from contextlib import closing

import pydicom
from flask.testing import FlaskClient
from PIL import Image

from appliance.index import open_index_reader
from appliance.index.browse import get_study, study_instances
from appliance.state import open_state
from appliance.state.audit import recent
from appliance.storage import Storage
from appliance.web.zipstream import stream_zip
from tests.web.conftest import Archive
from tests.web.test_rendering import entry_for


def last_audit(archive: Archive, user: str) -> tuple[str, str, str, str]:
    with closing(open_state(archive.data_dir / "app.db")) as conn:
        event = recent(conn, 1, user)[0].event
    return event.action, event.patient_id, event.study_uid, event.detail


def test_study_zip_is_streamed_and_holds_every_file(
    role_clients: dict[str, FlaskClient], archive: Archive
) -> None:
    response = role_clients["doc"].get(f"/studies/{archive.today_study}/download")
    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    assert "DOE" not in response.headers["Content-Disposition"]

    storage = Storage(archive.data_dir)
    with closing(open_index_reader(archive.data_dir / "index.db")) as conn:
        study = get_study(conn, archive.today_study)
        assert study is not None
        entries = study_instances(conn, study.id)
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive_zip:
        assert archive_zip.testzip() is None
        names = archive_zip.namelist()
        assert len(names) == len(entries) == 3
        for entry in entries:
            name = next(n for n in names if entry.sop_uid in n)
            stored = storage.absolute(entry.file_path).read_bytes()
            assert archive_zip.read(name) == stored
    assert last_audit(archive, "doc")[:3] == (
        "download-study",
        "P001",
        archive.today_study,
    )


def test_zip_stream_never_holds_a_whole_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "big.dcm"
    big.write_bytes(b"\x01" * (5 * 1024 * 1024 + 7))
    chunks = list(stream_zip([("a/big.dcm", big)]))
    assert max(len(chunk) for chunk in chunks) <= 1024 * 1024 + 1024
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive_zip:
        assert archive_zip.read("a/big.dcm") == big.read_bytes()


def test_image_downloads(
    role_clients: dict[str, FlaskClient], archive: Archive
) -> None:
    doc = role_clients["doc"]
    clip = entry_for(archive, "cine")
    jpeg = doc.get(f"/instances/{clip.id}/download/jpeg?frame=5")
    ds = pydicom.dcmread(archive.data_dir / "storage" / clip.file_path)
    assert jpeg.mimetype == "image/jpeg"
    assert jpeg.data == pydicom.encaps.get_frame(ds.PixelData, 4, number_of_frames=120)
    assert last_audit(archive, "doc")[0] == "download-image"
    assert last_audit(archive, "doc")[3] == "jpeg frame 5"

    png = doc.get(f"/instances/{clip.id}/download/png?frame=5")
    with Image.open(io.BytesIO(png.data)) as image:
        assert image.format == "PNG" and image.size == (640, 480)

    palette = entry_for(archive, "palette16")
    for kind, image_format in (("jpeg", "JPEG"), ("png", "PNG")):
        response = doc.get(f"/instances/{palette.id}/download/{kind}")
        with Image.open(io.BytesIO(response.data)) as image:
            assert image.format == image_format
    assert doc.get(f"/instances/{palette.id}/download/gif").status_code == 404


def test_views_are_audited(
    role_clients: dict[str, FlaskClient], archive: Archive
) -> None:
    admin = role_clients["admin1"]
    admin.get(f"/studies/{archive.old_study}")
    assert last_audit(archive, "admin1")[:3] == (
        "view-study",
        "P002",
        archive.old_study,
    )

    clip = entry_for(archive, "cine")
    admin.get(f"/instances/{clip.id}/info")
    action, _patient, _study, _detail = last_audit(archive, "admin1")
    assert action == "view-instance"

    admin.get("/?name=roe")
    assert last_audit(archive, "admin1")[0] == "list-studies"
    assert last_audit(archive, "admin1")[3] == "name=roe"

    page = admin.get("/admin/audit?user=admin1").get_data(as_text=True)
    assert "view-instance" in page and "list-studies" in page
