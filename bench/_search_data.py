"""A made-up archive for the search benchmark: the same studies in both indexes.

The appliance's ``index.db`` is written directly, rows and all, through the
appliance's own schema (:func:`appliance.index.schema.open_index`), so a
million instances take seconds and no DICOM file exists behind them. Orthanc
cannot be given rows: it gets the same patients and studies as tiny DICOM
files (one per study, no pixel data) through its REST API.

Everything follows from the plan and a seeded random generator: the same
plan gives the same names, dates and UIDs on every run, so a built index is
kept beside a small JSON manifest and reused.
"""

from __future__ import annotations

import io
import json
import logging
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from appliance.index.identity import normalise_name
from appliance.index.schema import open_index

logger = logging.getLogger(__name__)

UID_ROOT = "1.2.826.0.1.3680043.8.498.77"  # pydicom's root, a branch of ours
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_CLIP = "1.2.840.10008.5.1.4.1.1.3.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
NEWEST_STUDY = date(2025, 11, 28)
YEARS = 10
BATCH = 50_000

SURNAMES = (
    "ADAMS ALLEN BAKER BELL BROOKS BROWN BUTLER CAMPBELL CARTER CLARK COLLINS COOK "
    "COOPER COX DAVIS EDWARDS EVANS FISHER FOSTER GARCIA GRAY GREEN GRIFFIN HALL "
    "HARRIS HAYES HILL HOWARD HUGHES JACKSON JAMES JENKINS JOHNSON JONES KELLY "
    "KING LEE LEWIS LONG LOPEZ MARTIN MILLER MITCHELL MOORE MORGAN MORRIS MURPHY "
    "NELSON OWENS PARKER PERRY PETERSON PHILLIPS PRICE REED RICHARDSON RIVERA "
    "ROBERTS ROBINSON ROGERS ROSS RUSSELL SANDERS SCOTT SMITH STEWART SULLIVAN "
    "TAYLOR THOMAS THOMPSON TURNER WALKER WARD WATSON WHITE WILLIAMS WILSON WOOD "
    "WRIGHT YOUNG ABERNATHY BALDWIN CALLOWAY DELACROIX ESPINOZA FAIRWEATHER "
    "GALLAGHER HOLLOWAY IVANOVA JANSSEN KOWALSKI LINDQVIST MACALLISTER NAKAMURA "
    "OKONKWO PETROVIC QUINTERO ROSENBERG SCHNEIDER TANAKA UNDERWOOD VASQUEZ "
    "WAINWRIGHT YAMAMOTO ZIMMERMANN"
).split()
GIVEN_NAMES = (
    "ANNA AMELIA BEATRICE CHLOE CLARA DIANA ELENA EMILY EMMA EVA FIONA GRACE "
    "HANNAH HELEN IRIS ISABEL JANE JULIA KATE LAURA LILY LUCY MARIA MARTHA MARY "
    "MIA NORA OLIVIA PAULA ROSE RUTH SARAH SOFIA SUSAN TESSA VERA ZOE ALICE "
    "CAROL DORA EDITH FRIDA GRETA HEIDI INES JOY KIRA LENA MAYA NINA"
).split()
DESCRIPTIONS = (
    "OB 2nd trimester",
    "OB 3rd trimester",
    "Early pregnancy",
    "Fetal echo",
    "Pelvis",
    "Abdomen",
    "Thyroid",
    "Breast",
)


@dataclass(frozen=True)
class SearchPlan:
    """The archive's size; its fields are also the cache key."""

    studies: int = 20_000
    instances: int = 1_000_000
    patients: int = 8_000
    series_per_study: int = 2
    seed: int = 2025


def build_index(work_dir: Path, plan: SearchPlan) -> Path:
    """Return an ``index.db`` holding `plan`'s archive, built once and cached."""
    path = work_dir / f"index-{plan.studies}-{plan.instances}" / "index.db"
    key = {"kind": "appliance-index", **asdict(plan)}
    if _cached(path, key):
        return path

    logger.info(
        "Writing %d studies, %d instances into %s", plan.studies, plan.instances, path
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob("index.db*"):
        leftover.unlink()
    started = time.perf_counter()
    with closing(open_index(path)) as conn:
        # A throw-away build: no journal to fsync until it is done
        conn.execute("PRAGMA synchronous = OFF")
        _fill(conn, plan)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _manifest(path).write_text(json.dumps(key))
    logger.info("Wrote the index in %.0f s", time.perf_counter() - started)
    return path


def patients(plan: SearchPlan) -> list[tuple[str, str, str, str]]:
    """Return each patient's (ID, DICOM name, birth date, sex)."""
    rng = random.Random(plan.seed)
    people = []
    for number in range(plan.patients):
        name = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN_NAMES)}"
        birth = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 55))
        people.append((f"PID{number:06d}", name, f"{birth:%Y%m%d}", "F"))
    return people


def studies(plan: SearchPlan) -> Iterator[dict[str, Any]]:
    """Yield each study: its UID, patient number, date, time and description."""
    rng = random.Random(plan.seed + 1)
    for number in range(plan.studies):
        day = NEWEST_STUDY - timedelta(days=rng.randrange(365 * YEARS))
        yield {
            "number": number,
            "uid": f"{UID_ROOT}.1.{number}",
            "patient": rng.randrange(plan.patients),
            "date": f"{day:%Y%m%d}",
            "time": f"{rng.randrange(8, 18):02d}{rng.randrange(60):02d}00",
            "accession": f"ACC{number:07d}",
            "description": rng.choice(DESCRIPTIONS),
        }


def search_words(plan: SearchPlan, count: int) -> list[str]:
    """Return `count` name searches: whole surnames, given names and parts."""
    rng = random.Random(plan.seed + 2)
    words = []
    for number in range(count):
        kind = number % 3
        if kind == 0:
            words.append(rng.choice(SURNAMES).lower())
        elif kind == 1:
            words.append(rng.choice(GIVEN_NAMES).capitalize())
        else:
            word = rng.choice(SURNAMES)
            start = rng.randrange(max(1, len(word) - 3))
            words.append(word[start : start + 4])
    return words


def orthanc_file(study: dict[str, Any], person: tuple[str, str, str, str]) -> bytes:
    """Return one tiny Part 10 file that carries `study` and its patient."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SECONDARY_CAPTURE)
    meta.MediaStorageSOPInstanceUID = UID(f"{UID_ROOT}.4.{study['number']}")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = person
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = f"{UID_ROOT}.2.{study['number']}.1"
    ds.StudyDate, ds.StudyTime = study["date"], study["time"]
    ds.AccessionNumber = study["accession"]
    ds.StudyDescription = study["description"]
    ds.Modality = "US"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _fill(conn: sqlite3.Connection, plan: SearchPlan) -> None:
    people = patients(plan)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO patients (id, patient_id, issuer, name, name_key, birth_date,"
        " sex, first_seen_at, first_source_ae) VALUES (?, ?, '', ?, ?, ?, ?,"
        " '2025-01-01T00:00:00', 'BENCH')",
        (
            (number + 1, pid, name, normalise_name(name), birth, sex)
            for number, (pid, name, birth, sex) in enumerate(people)
        ),
    )
    conn.execute("COMMIT")

    per_study = plan.instances // plan.studies
    per_series = max(1, per_study // plan.series_per_study)
    conn.execute("BEGIN IMMEDIATE")
    for study in studies(plan):
        _add_study(conn, study, per_study, per_series)
        if study["number"] % (BATCH // max(1, per_study)) == 0:
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
    conn.execute("COMMIT")


def _add_study(
    conn: sqlite3.Connection, study: dict[str, Any], instances: int, per_series: int
) -> None:
    number = study["number"]
    clips = instances // 10
    conn.execute(
        "INSERT INTO studies (id, study_uid, patient_ref, study_date, study_time,"
        " accession_number, description, referring_physician, modalities,"
        " image_count, clip_count, last_received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, '', 'US', ?, ?, '2025-01-01T00:00:00')",
        (
            number + 1,
            study["uid"],
            study["patient"] + 1,
            study["date"],
            study["time"],
            study["accession"],
            study["description"],
            instances - clips,
            clips,
        ),
    )
    series_count = -(-instances // per_series)
    first_series = number * series_count
    conn.executemany(
        "INSERT INTO series (id, series_uid, study_ref, modality, series_number,"
        " description) VALUES (?, ?, ?, 'US', ?, '')",
        (
            (first_series + s + 1, f"{UID_ROOT}.2.{number}.{s + 1}", number + 1, s + 1)
            for s in range(series_count)
        ),
    )
    conn.executemany(
        "INSERT INTO instances (sop_uid, series_ref, patient_ref, sop_class_uid,"
        " transfer_syntax_uid, instance_number, number_of_frames, rows, columns,"
        " photometric, file_path, file_size, sha256, received_at, source_ae)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 480, 640, 'YBR_FULL_422', ?, ?, ?,"
        " '2025-01-01T00:00:00', 'BENCH')",
        (
            _instance_row(study, first_series, per_series, i, clips)
            for i in range(instances)
        ),
    )


def _instance_row(
    study: dict[str, Any], first_series: int, per_series: int, i: int, clips: int
) -> tuple[Any, ...]:
    number = study["number"]
    uid = f"{UID_ROOT}.3.{number}.{i + 1}"
    digest = f"{number:032x}{i:032x}"
    clip = i < clips
    day = study["date"]
    return (
        uid,
        first_series + i // per_series + 1,
        study["patient"] + 1,
        US_CLIP if clip else US_IMAGE,
        JPEG_BASELINE,
        i + 1,
        120 if clip else 1,
        f"{day[:4]}/{day[4:6]}/{day[6:]}/BENCH/{uid}.{digest}.dcm",
        9_000_000 if clip else 80_000,
        digest,
    )


def _cached(path: Path, key: dict[str, Any]) -> bool:
    try:
        return path.exists() and json.loads(_manifest(path).read_text()) == key
    except (OSError, ValueError):
        return False


def _manifest(path: Path) -> Path:
    return path.with_name("manifest.json")
