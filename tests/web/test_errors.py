"""A crash becomes a friendly 500 page that leaks nothing."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from appliance.index import open_index_reader
from appliance.state import open_state
from appliance.state.users import Role, add_user
from appliance.web import create_app
from tests.web.archive import RENDER_FILES, data_file, store_all
from tests.web.conftest import PASSWORD, login, make_options


def test_missing_file_is_a_500_page_without_details(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store_all(data_dir, [data_file(RENDER_FILES["rgb"])])
    with closing(open_state(data_dir / "app.db")) as conn:
        add_user(conn, "doc", Role.CLINICIAN, PASSWORD)
    with closing(open_index_reader(data_dir / "index.db")) as conn:
        row = conn.execute("SELECT id, file_path FROM instances").fetchone()
    (data_dir / "storage" / row["file_path"]).unlink()

    client = create_app(lambda: {"ok": True}, make_options(data_dir)).test_client()
    login(client, "doc")
    response = client.get(f"/instances/{row['id']}/info")
    assert response.status_code == 500
    assert b"Something went wrong" in response.data
    assert row["file_path"].encode() not in response.data
    assert b"Traceback" not in response.data

    frame = client.get(f"/instances/{row['id']}/frames/1")
    assert frame.status_code in (422, 500)
    assert b"storage" not in frame.data
