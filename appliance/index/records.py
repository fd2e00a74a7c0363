"""What the index keeps of one stored instance, read from its header.

Only the header is read (``stop_before_pixels``): a 500 MB cine clip costs the
same as a single image. Everything here can be derived again from the stored
file and its path, which is what lets the index rebuild itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue


class UnreadableInstanceError(ValueError):
    """A file is not DICOM, or lacks what every instance must have."""


@dataclass(frozen=True)
class InstanceRecord:
    """The indexed attributes of one stored instance."""

    # Where it is and where it came from.
    file_path: str
    file_size: int
    sha256: str
    received_at: str
    source_ae: str

    # The patient as this instance names them (PS3.3 C.7.1.1).
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str

    # Study, series and instance (PS3.3 C.7.2.1, C.7.3.1, C.12.1).
    study_instance_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str
    referring_physician: str
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    number_of_frames: int
    rows: int | None
    columns: int | None
    photometric_interpretation: str


@dataclass(frozen=True)
class Header:
    """A header read up to the pixel data, and where in the file that begins.

    ``pixel_offset`` is the byte offset of the pixel data element's tag
    (7FE0,0008, 0009 or 0010), None when parsing reached the end of the file
    without one; it lets the listener check that the pixel data arrived whole
    without reading it.
    """

    dataset: Dataset
    pixel_offset: int | None


def read_header(path: Path) -> Dataset:
    """Read a stored file's header, without its pixel data.

    Raises
    ------
    UnreadableInstanceError
        If pydicom cannot parse it as DICOM.
    """
    return parse_header(path).dataset


def parse_header(path: Path) -> Header:
    """Read a file's header, and where its pixel data begins.

    Raises
    ------
    UnreadableInstanceError
        If pydicom cannot parse it as DICOM.
    """
    try:
        with open(path, "rb") as stream:
            dataset = pydicom.dcmread(stream, stop_before_pixels=True)
            position = stream.tell()
            at_pixels = stream.read(4) in _PIXEL_TAGS
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableInstanceError(
            f"{path.name}: not readable DICOM: {exc}"
        ) from exc
    except Exception as exc:  # pydicom raises a wide range on broken input
        raise UnreadableInstanceError(f"{path.name}: cannot parse: {exc}") from exc
    return Header(dataset, position if at_pixels else None)


# Where pydicom's stop_before_pixels leaves the stream: at one of the pixel
# data elements (7FE0,0008/0009/0010), in little or big endian byte order.
_PIXEL_TAGS = {
    bytes.fromhex(tag)
    for tag in ("e07f1000", "e07f0800", "e07f0900", "7fe00010", "7fe00008", "7fe00009")
}


def read_header_prefix(prefix: bytes, *, whole_file: bool) -> Dataset | None:
    """Read a header from the first bytes of a Part 10 file, if they hold it.

    As :func:`parse_header_prefix`, without the pixel data's offset.
    """
    header = parse_header_prefix(prefix, whole_file=whole_file)
    return None if header is None else header.dataset


def parse_header_prefix(prefix: bytes, *, whole_file: bool) -> Header | None:
    """Read a header, and where its pixel data begins, from a file's first bytes.

    Parameters
    ----------
    prefix : bytes
        The start of the file.
    whole_file : bool
        True when `prefix` is the complete file.

    Returns
    -------
    Header or None
        None when the header may go on past `prefix` (the caller then reads
        the file) or cannot be parsed. A header is taken only if the whole
        file is there or parsing stopped exactly at the pixel data, so a
        prefix cut between two elements never passes for a whole header.
    """
    stream = BytesIO(prefix)
    try:
        dataset = pydicom.dcmread(stream, stop_before_pixels=True)
    except Exception:  # a cut-off prefix fails in many ways; the file decides
        return None
    position = stream.tell()
    if prefix[position : position + 4] in _PIXEL_TAGS:
        return Header(dataset, position)
    if whole_file:
        return Header(dataset, None)
    return None


def record_from_header(
    dataset: Dataset,
    *,
    file_path: str,
    file_size: int,
    sha256: str,
    received_at: datetime,
    source_ae: str,
) -> InstanceRecord:
    """Build the index record of one instance from its header.

    Raises
    ------
    UnreadableInstanceError
        If a UID the index needs (study, series, SOP instance, SOP class) is
        missing or an attribute cannot be decoded.
    """
    try:
        return _build(dataset, file_path, file_size, sha256, received_at, source_ae)
    except UnreadableInstanceError:
        raise
    except Exception as exc:  # a broken value in a hostile or buggy header
        raise UnreadableInstanceError(f"cannot decode header: {exc}") from exc


def describe_header(dataset: Dataset) -> InstanceRecord:
    """Build a record from a header alone, before the file has its place.

    The file fields stay empty until :func:`locate` fills them; this lets the
    listener describe a data set while its pixel data is still arriving.

    Raises
    ------
    UnreadableInstanceError
        As :func:`record_from_header`.
    """
    return record_from_header(
        dataset,
        file_path="",
        file_size=0,
        sha256="",
        received_at=datetime.min,
        source_ae="",
    )


def locate(
    record: InstanceRecord,
    *,
    file_path: str,
    file_size: int,
    sha256: str,
    received_at: datetime,
    source_ae: str,
) -> InstanceRecord:
    """Return `record` with the facts of its stored file filled in."""
    return dataclasses.replace(
        record,
        file_path=file_path,
        file_size=file_size,
        sha256=sha256,
        received_at=_timestamp(received_at),
        source_ae=source_ae,
    )


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _build(
    ds: Dataset,
    file_path: str,
    file_size: int,
    sha256: str,
    received_at: datetime,
    source_ae: str,
) -> InstanceRecord:
    meta = getattr(ds, "file_meta", None) or _NO_META
    sop_class = _text(ds, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    sop_instance = _text(ds, "SOPInstanceUID") or _text(
        meta, "MediaStorageSOPInstanceUID"
    )
    required = {
        "StudyInstanceUID": _text(ds, "StudyInstanceUID"),
        "SeriesInstanceUID": _text(ds, "SeriesInstanceUID"),
        "SOPInstanceUID": sop_instance,
        "SOPClassUID": sop_class,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise UnreadableInstanceError(f"missing {', '.join(missing)}")

    return InstanceRecord(
        file_path=file_path,
        file_size=file_size,
        sha256=sha256,
        received_at=_timestamp(received_at),
        source_ae=source_ae,
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex").upper(),
        study_instance_uid=required["StudyInstanceUID"],
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        accession_number=_text(ds, "AccessionNumber"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        series_instance_uid=required["SeriesInstanceUID"],
        modality=_text(ds, "Modality"),
        series_number=_number(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        sop_instance_uid=sop_instance,
        sop_class_uid=sop_class,
        transfer_syntax_uid=_text(meta, "TransferSyntaxUID"),
        instance_number=_number(ds, "InstanceNumber"),
        number_of_frames=_number(ds, "NumberOfFrames") or 1,
        rows=_number(ds, "Rows"),
        columns=_number(ds, "Columns"),
        photometric_interpretation=_text(ds, "PhotometricInterpretation"),
    )


# Elements whose value representation is plain ASCII whatever the character
# set (PS3.5 6.2: UI, DA, TM, CS, IS), so their raw bytes can be read without
# pydicom's conversion, which dominates the cost of describing a header.
_ASCII_TAGS = {
    keyword: tag_for_keyword(keyword)
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "Modality",
        "PhotometricInterpretation",
        "SeriesNumber",
        "InstanceNumber",
        "NumberOfFrames",
    )
}


# Text elements in the data set's character set (PN, LO, SH); read raw only
# under a single-byte or UTF-8 set, where decoding needs no escape sequences.
_TEXT_TAGS = {
    keyword: tag_for_keyword(keyword)
    for keyword in (
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "AccessionNumber",
        "StudyDescription",
        "ReferringPhysicianName",
        "SeriesDescription",
    )
}
_SIMPLE_CHARSETS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin_1"}
_CHARSET_TAG = 0x00080005  # Specific Character Set

# Binary unsigned shorts (US) read from their raw bytes, as pydicom would.
_UNSIGNED_TAGS = {
    keyword: tag_for_keyword(keyword)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")
}
_NO_META = Dataset()


def _raw_text(ds: Dataset, keyword: str, element: Any) -> str | None:
    """The first value of an element still in its raw form, or None.

    None means "ask pydicom": the element is converted already, has binary
    or unusual text, or the character set needs pydicom's decoding.
    """
    if not isinstance(element, RawDataElement) or element.value is None:
        return None
    codec = "ascii" if keyword in _ASCII_TAGS else _simple_codec(ds)
    if codec is None or keyword not in _ASCII_TAGS and keyword not in _TEXT_TAGS:
        return None
    try:
        text = element.value.decode(codec).split("\\", 1)[0]
    except UnicodeDecodeError:
        return None
    return text.strip().replace("\x00", "")


def _simple_codec(ds: Dataset) -> str | None:
    # pydicom converts the character set as it reads the header: its value
    # is then a string, or a list for several sets (None: pydicom decodes).
    element = ds.get_item(_CHARSET_TAG)
    if element is None:
        return "ascii"
    value = element.value
    if isinstance(value, bytes) and isinstance(element, RawDataElement):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    return _SIMPLE_CHARSETS.get(value.strip())


def _raw_unsigned(element: Any) -> int | None:
    # One raw US value in the byte order it was read in; None asks pydicom.
    if not isinstance(element, RawDataElement) or element.VR not in ("US", None):
        return None
    if element.value is None or len(element.value) != 2:
        return None
    if element.is_little_endian:
        return int.from_bytes(element.value, "little")
    return int.from_bytes(element.value, "big")


def _value(ds: Dataset, keyword: str, element: Any) -> Any:
    # A converted element's value as it is; a raw one converted by pydicom.
    if isinstance(element, RawDataElement):
        return ds.get(keyword)
    return element.value


def header_text(dataset: Dataset, keyword: str) -> str:
    """The first value of a text element, stripped; "" if absent or empty.

    Read from the raw bytes, as pydicom would decode them, where the
    encoding allows (the element then stays raw); through pydicom otherwise.
    """
    return _text(dataset, keyword)


def header_number(dataset: Dataset, keyword: str) -> int | None:
    """A whole number (IS, or a binary US); None if absent, empty or not one.

    Read from the raw bytes where possible, as :func:`header_text`.
    """
    return _number(dataset, keyword)


def _text(ds: Dataset, keyword: str) -> str:
    element = ds.get_item(_tag(keyword))
    if element is None:
        return ""
    raw = _raw_text(ds, keyword, element)
    if raw is not None:
        return raw
    value = _value(ds, keyword, element)
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else ""
    return str(value).strip().replace("\x00", "")


def _number(ds: Dataset, keyword: str) -> int | None:
    element = ds.get_item(_tag(keyword))
    if element is None:
        return None
    if keyword in _UNSIGNED_TAGS and (unsigned := _raw_unsigned(element)) is not None:
        return unsigned
    raw = _raw_text(ds, keyword, element)
    if raw:
        try:
            return int(raw)
        except ValueError:
            pass  # e.g. "1.0": let pydicom's IS decide, as it always has
    value = _value(ds, keyword, element)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _tag(keyword: str) -> int:
    tag = (
        _ASCII_TAGS.get(keyword)
        or _TEXT_TAGS.get(keyword)
        or _UNSIGNED_TAGS.get(keyword)
    )
    return tag if tag is not None else int(tag_for_keyword(keyword) or 0)
