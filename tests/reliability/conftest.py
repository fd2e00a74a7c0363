"""Fixtures of the reliability suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import RunningAppliance, make_appliance
from tests.reliability.support import wait_until_settled


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    """One appliance for the module, with room for many half-open peers."""
    root = tmp_path_factory.mktemp("hostile-dicom")
    appliance = make_appliance(
        root / "data", extra_env={"APPLIANCE_MAX_ASSOCIATIONS": "200"}
    )
    appliance.start()
    try:
        wait_until_settled(appliance)
        yield appliance
    finally:
        appliance.kill()
