"""Twenty kill -9s at random moments while a modality sends: nothing is lost.

After every restart (and once the start-up reconcile is over), every
instance the modality heard Success for is in the index, its file is in
``storage/``, hashes to the recorded SHA-256 and reads back as the same
instance; the index and ``storage/`` list the same files; ``incoming/`` is
empty. At the end ``appliance check --deep`` agrees. The kill moments come
from a seeded generator, printed so that a failure can be replayed.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.conftest import make_appliance
from tests.reliability.support import (
    Modality,
    assert_index_matches_storage,
    assert_kept,
    read_sources,
    wait_until_settled,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILLS = 20
SEED = 20261203
# The clip is 6 MB: a kill often lands while it is being received.
SOURCES = ("ge_rgb", "aloka_palette", "sonosite_cine", "philips_palette")


def test_twenty_kills_mid_send_lose_nothing_acknowledged(
    tmp_path: Path, ultrasound_files: dict[str, Path]
) -> None:
    appliance = make_appliance(tmp_path / "data")
    sources = read_sources(ultrasound_files[key] for key in SOURCES)
    chooser = random.Random(SEED)
    print(f"seed {SEED}")
    acknowledged: list[str] = []
    try:
        for kill in range(KILLS):
            appliance.start()
            wait_until_settled(appliance)
            assert_kept(appliance, acknowledged, read=False)
            assert_index_matches_storage(appliance)

            modality = Modality(
                appliance.dicom_port, sources, per_association=chooser.randint(1, 5)
            )
            modality.start()
            moment = chooser.uniform(0.05, 1.5)
            time.sleep(moment)
            appliance.kill()
            modality.join(timeout=60)
            assert not modality.is_alive(), "the sender hangs after the kill"
            acknowledged += modality.acknowledged
            print(
                f"kill {kill + 1} at {moment:.2f} s: {len(modality.acknowledged)} ack"
            )

        appliance.start()
        wait_until_settled(appliance)
        assert len(acknowledged) >= KILLS, "too few stores before the kills"
        assert_kept(appliance, acknowledged)
        assert_index_matches_storage(appliance)
        check = appliance.cli("check", "--deep")
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        appliance.kill()
