"""Synthetic ultrasound test data for the ingest benchmark.

Every instance is a copy of a real vendor file shipped by the ``pydicom-data``
package, given fresh Study, Series and SOP Instance UIDs and one of a few
made-up patients. Cine clips are the SonoSite 120-frame JPEG Baseline clip
with its encapsulated frames repeated (or cut) to a planned length, so that
nothing is decoded or re-encoded (PS3.5 A.4).

The generated files are cached under the work directory next to a small JSON
manifest; a rerun with the same plan reuses them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

logger = logging.getLogger(__name__)

MB = 1_000_000
SINGLE_FRAME_SOURCES = ("US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm")
CLIP_SOURCE = "color3d_jpeg_baseline.dcm"


@dataclass(frozen=True)
class IngestPlan:
    """The shape of the ingest set; its fields are also the cache key."""

    instances: int = 200
    clips: int = 20
    total_bytes: int = 220 * MB
    patients: int = 5
    studies_per_patient: int = 2
    seed: int = 2024


@dataclass(frozen=True)
class Study:
    """The identifiers shared by the instances of one made-up study."""

    patient_name: str
    patient_id: str
    accession: str
    study_uid: str
    series_uid: str


def build_ingest_set(work_dir: Path, plan: IngestPlan | None = None) -> Path:
    """Return a folder of ultrasound instances made to `plan`, cached.

    Parameters
    ----------
    work_dir : pathlib.Path
        Where the set and its manifest are kept between runs.
    plan : IngestPlan, optional
        The number of instances, clips and bytes to aim for.

    Returns
    -------
    pathlib.Path
        The folder holding one ``.dcm`` file per instance.
    """
    plan = plan or IngestPlan()
    folder = work_dir / "ingest-set"
    key = {"kind": "ingest-set", **asdict(plan)}
    if _is_cached(folder, key):
        return folder

    logger.info("Building %d instances in %s", plan.instances, folder)
    _reset(folder)
    _write_ingest_set(folder, plan)
    _write_manifest(folder, key)
    return folder


def build_large_clip(work_dir: Path, size_bytes: int = 500 * MB) -> Path:
    """Return the path of one JPEG Baseline cine clip of about `size_bytes`.

    Parameters
    ----------
    work_dir : pathlib.Path
        Where the clip and its manifest are kept between runs.
    size_bytes : int, optional
        The size to aim for; the clip is a whole number of frames.

    Returns
    -------
    pathlib.Path
        The clip's file.
    """
    folder = work_dir / "large-clip"
    key = {"kind": "large-clip", "size_bytes": size_bytes}
    if not _is_cached(folder, key):
        logger.info("Building a %d MB clip in %s", size_bytes // MB, folder)
        _reset(folder)
        _write_large_clip(folder, size_bytes)
        _write_manifest(folder, key)

    return folder / "clip.dcm"


def dicom_files(folder: Path) -> list[Path]:
    """Return the ``.dcm`` files directly inside `folder`, sorted by name."""
    return sorted(folder.glob("*.dcm"))


def total_size(paths: list[Path]) -> int:
    """Return the summed size in bytes of `paths`."""
    return sum(path.stat().st_size for path in paths)


def _write_ingest_set(folder: Path, plan: IngestPlan) -> None:
    """Write the singles and clips of `plan` into `folder`."""
    singles = [_load(name) for name in SINGLE_FRAME_SOURCES]
    clip = _load(CLIP_SOURCE)
    frames = _frames(clip)

    # Size the clips so that singles plus clips come to the planned total
    sizes = [os.path.getsize(_source(name)) for name in SINGLE_FRAME_SOURCES]
    lengths = _plan_clip_lengths(plan, sizes, frames)
    studies = _make_studies(plan)
    per_study = -(-plan.instances // len(studies))
    clip_every = plan.instances // plan.clips

    for index in range(plan.instances):
        if index % clip_every == clip_every - 1 and lengths:
            ds = _set_frames(clip, frames, lengths.pop())
        else:
            ds = singles[index % len(singles)]
        _stamp(ds, studies[index // per_study], index + 1)
        ds.save_as(folder / f"{index + 1:03d}.dcm", enforce_file_format=True)


def _write_large_clip(folder: Path, size_bytes: int) -> None:
    """Write one clip of about `size_bytes` as ``clip.dcm`` in `folder`."""
    clip = _load(CLIP_SOURCE)
    frames = _frames(clip)
    count = max(1, round(size_bytes / _mean_length(frames)))

    study = _make_studies(IngestPlan(patients=1, studies_per_patient=1))[0]
    _stamp(_set_frames(clip, frames, count), study, 1)
    clip.save_as(folder / "clip.dcm", enforce_file_format=True)


def _plan_clip_lengths(
    plan: IngestPlan, single_sizes: list[int], frames: list[bytes]
) -> list[int]:
    """Return a frame count for each clip, varied but adding up to the budget."""
    single_count = plan.instances - plan.clips
    single_bytes = sum(
        single_sizes[index % len(single_sizes)] for index in range(single_count)
    )
    budget = max(plan.total_bytes - single_bytes, plan.clips)

    # Clips of 0.3 to 1.7 times the mean length, like short and long loops
    rng = random.Random(plan.seed)
    weights = [rng.uniform(0.3, 1.7) for _ in range(plan.clips)]
    scale = budget / _mean_length(frames) / sum(weights)
    return [max(1, round(weight * scale)) for weight in weights]


def _make_studies(plan: IngestPlan) -> list[Study]:
    """Return made-up studies, `plan.studies_per_patient` for each patient."""
    studies = []
    for patient in range(1, plan.patients + 1):
        for number in range(1, plan.studies_per_patient + 1):
            studies.append(
                Study(
                    patient_name=f"BENCH^PATIENT^{patient:02d}",
                    patient_id=f"BENCH{patient:02d}",
                    accession=f"BENCH{patient:02d}{number:02d}",
                    study_uid=generate_uid(),
                    series_uid=generate_uid(),
                )
            )
    return studies


def _stamp(ds: FileDataset, study: Study, number: int) -> None:
    """Give `ds` the identity of `study` and a fresh SOP Instance UID."""
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19800101"
    ds.AccessionNumber = study.accession
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = study.series_uid
    ds.InstanceNumber = number

    # The file meta must name the same instance (PS3.10 7.1)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _set_frames(clip: FileDataset, frames: list[bytes], count: int) -> FileDataset:
    """Give `clip` `count` frames, cycling through `frames`; return it."""
    chosen = [frames[index % len(frames)] for index in range(count)]
    clip.PixelData = encapsulate(chosen, has_bot=True)
    clip.NumberOfFrames = count
    return clip


def _frames(clip: FileDataset) -> list[bytes]:
    """Return the encapsulated frames of `clip`, still JPEG encoded."""
    count = int(clip.NumberOfFrames)
    return list(generate_frames(clip.PixelData, number_of_frames=count))


def _mean_length(frames: list[bytes]) -> float:
    """Return the mean encoded length of `frames`, with item overhead."""
    return sum(len(frame) + 8 for frame in frames) / len(frames)


def _load(name: str) -> FileDataset:
    """Return the ``pydicom-data`` test file `name`, read in full."""
    return dcmread(_source(name))


def _source(name: str) -> str:
    """Return the path of the ``pydicom-data`` test file `name`."""
    path = get_testdata_file(name)
    if not isinstance(path, str):
        raise FileNotFoundError(f"pydicom-data has no test file {name!r}")
    return path


def _is_cached(folder: Path, key: dict[str, object]) -> bool:
    """Return True if `folder` holds a complete set made for `key`."""
    manifest = folder.with_suffix(".json")
    try:
        return bool(json.loads(manifest.read_text()) == key)
    except (OSError, ValueError):
        return False


def _write_manifest(folder: Path, key: dict[str, object]) -> None:
    """Record beside `folder` that it is complete and was made for `key`."""
    folder.with_suffix(".json").write_text(json.dumps(key, indent=2))


def _reset(folder: Path) -> None:
    """Remove `folder`, its manifest first, and create it empty."""
    folder.with_suffix(".json").unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
