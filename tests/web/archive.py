"""Build small archives for the web tests: real files, stored and indexed.

Files go into ``storage/`` exactly where the listener would put them (same
path rule, same content hash) and are indexed through the real
:class:`~appliance.index.IndexWriter`, without a DICOM association.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from appliance.index import IndexWriter, read_header, record_from_header
from appliance.storage import Storage, hash_file

SOURCE_AE = "TESTSCU"

# pydicom-data files by what they exercise (see FIELD-NOTES).
RENDER_FILES = {
    "rgb": "US1_UNCR.dcm",
    "j2k": "US1_J2KR.dcm",
    "palette16": "gdcm-US-ALOKA-16.dcm",
    "palette8": "OBXXXX1A.dcm",
    "cine": "color3d_jpeg_baseline.dcm",
    "rle": "SC_rgb_rle.dcm",
    "jpeg_lossless": "JPEG-LL.dcm",
    "mr": "MR_small.dcm",
    "monochrome1": "RG1_UNCR.dcm",
    "voi_lut": "vlut_04.dcm",
    "ybr": "SC_ybr_full_uncompressed.dcm",
    "jpeg_ybr_full": "SC_rgb_jpeg_dcmtk.dcm",
}


def data_file(name: str) -> Path:
    """Return the path of a pydicom test file."""
    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(name)
    return Path(path)


@dataclass(frozen=True)
class Patient:
    """Who a rewritten file names."""

    name: str
    patient_id: str
    birth_date: str = "19800101"
    sex: str = "F"


def rewrite(
    source: Path,
    target: Path,
    patient: Patient,
    study_uid: str,
    *,
    study_date: str,
    description: str = "",
    accession: str = "",
    series_uid: str | None = None,
) -> Path:
    """Copy a file under another patient and study (new SOP Instance UID)."""
    ds = pydicom.dcmread(source)
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyDescription = description
    ds.AccessionNumber = accession
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)
    return target


def store(storage: Storage, writer: IndexWriter, path: Path) -> str:
    """Put one file into storage and the index; return its SOP Instance UID."""
    sha256 = hash_file(path)
    received = datetime.now()
    header = read_header(path)
    relative = storage.relative_path(
        received, SOURCE_AE, str(header.SOPInstanceUID), sha256
    )
    target = storage.absolute(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    record = record_from_header(
        header,
        file_path=str(relative),
        file_size=target.stat().st_size,
        sha256=sha256,
        received_at=received,
        source_ae=SOURCE_AE,
    )
    writer.add_instance(record)
    return record.sop_instance_uid


def store_all(data_dir: Path, paths: Iterable[Path]) -> None:
    """Store and index files into a data folder."""
    storage = Storage(data_dir)
    storage.prepare()
    writer = IndexWriter(data_dir / "index.db")
    writer.start()
    try:
        for path in paths:
            store(storage, writer, path)
    finally:
        writer.stop()


def report_dataset(source: Path) -> Dataset:
    """Return pydicom's Comprehensive SR test file."""
    return pydicom.dcmread(source)
