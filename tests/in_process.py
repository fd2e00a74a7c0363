"""An appliance served in the test's own process, on free loopback ports.

For tests that need to reach inside the running parts (the wizard, the
listener's sockets); tests of the command and of start-up use the real
``appliance serve`` subprocess of ``conftest.py`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.service import Appliance
from appliance.state import open_state
from appliance.state.modalities import add_modality
from tests.conftest import free_port


@contextmanager
def served_here(data_dir: Path, **settings: object) -> Iterator[Appliance]:
    """Serve `data_dir` (PYNETDICOM registered) until the block ends.

    Parameters
    ----------
    data_dir : pathlib.Path
        Made if missing.
    **settings
        More settings, such as ``backup_dir``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with closing(open_state(data_dir / "app.db")) as conn:
        add_modality(conn, "PYNETDICOM")
    overrides: dict[str, object] = {
        "data_dir": str(data_dir),
        "dicom_host": "127.0.0.1",
        "dicom_port": free_port(),
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "shutdown_grace": 5,
        **settings,
    }
    appliance = Appliance(load_settings(environ={}, overrides=overrides))
    appliance.start()
    try:
        yield appliance
    finally:
        appliance.stop()


@pytest.fixture
def in_process_appliance(tmp_path: Path) -> Iterator[Appliance]:
    """An appliance served in this process on `tmp_path`; stopped after."""
    with served_here(tmp_path / "data") as appliance:
        yield appliance
