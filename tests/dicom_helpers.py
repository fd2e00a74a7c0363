"""Real DICOM clients for the tests: pynetdicom as SCU, and DCMTK's tools."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

# storescu proposes uncompressed syntaxes unless told which compressed one.
STORESCU_FLAG_BY_SYNTAX = {
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
}


def echo(port: int, calling_ae: str, called_ae: str = "APPLIANCE") -> int | None:
    """C-ECHO; return the status, or None when no association was made."""
    ae = AE(calling_ae)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def send_datasets(
    port: int,
    datasets: Sequence[Dataset],
    calling_ae: str = "PYNETDICOM",
    called_ae: str = "APPLIANCE",
) -> list[int | None]:
    """C-STORE data sets on one association; return each status (None: none)."""
    ae = AE(calling_ae)
    ae.maximum_pdu_size = 0
    for context in {
        (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets
    }:
        ae.add_requested_context(context[0], context[1])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return [None] * len(datasets)
    statuses: list[int | None] = []
    try:
        for dataset in datasets:
            response = assoc.send_c_store(dataset)
            statuses.append(int(response.Status) if "Status" in response else None)
    finally:
        assoc.release()
    return statuses


def send_files(port: int, paths: Iterable[Path], **kwargs: str) -> list[int | None]:
    """C-STORE files, each with its own transfer syntax, on one association."""
    return send_datasets(port, [pydicom.dcmread(path) for path in paths], **kwargs)


def storescu(
    port: int, path: Path, calling_ae: str = "STORESCU", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Send one file with DCMTK's storescu, proposing the file's own syntax."""
    syntax = str(
        pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    )
    flags = (
        [STORESCU_FLAG_BY_SYNTAX[syntax]] if syntax in STORESCU_FLAG_BY_SYNTAX else []
    )
    return subprocess.run(
        [
            "storescu",
            *flags,
            "-aet",
            calling_ae,
            "-aec",
            "APPLIANCE",
            "127.0.0.1",
            str(port),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def renamed_copy(
    path: Path,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    birth_date: str | None = None,
    sex: str | None = None,
    new_study: bool = True,
) -> Dataset:
    """A copy of a real file as a new instance (fresh UIDs), demographics set."""
    dataset = pydicom.dcmread(path)
    if new_study:
        dataset.StudyInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    for keyword, value in (
        ("PatientID", patient_id),
        ("PatientName", patient_name),
        ("PatientBirthDate", birth_date),
        ("PatientSex", sex),
    ):
        if value is not None:
            setattr(dataset, keyword, value)
    return dataset


def dataset_without_meta(path: Path) -> Dataset:
    """Read a file and drop its file meta, for comparing data sets.

    Data Set Trailing Padding (FFFC,FFFC) goes too: DCMTK's storescu never
    sends it (PS3.10 7.2 lets a sender drop it).
    """
    dataset = pydicom.dcmread(path)
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    if (0xFFFC, 0xFFFC) in dataset:
        del dataset[0xFFFC, 0xFFFC]
    return dataset
