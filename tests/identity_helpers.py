"""An office's archive in process, for the identity tests: files, decisions, rebuilds.

:class:`Office` stores real ultrasound files (pydicom-data, rewritten under
made-up patients) the way the listener does, through an index writer that
applies the identity rules of ``app.db``, records decisions in ``app.db``
and applies them live as the web does, and rebuilds the index as
``appliance rebuild-index`` does. :meth:`Office.patients` and
:meth:`Office.snapshot` describe the index without row ids, so a live index
and a rebuilt one compare equal when they file everything alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid

from appliance import db
from appliance.index import IndexWriter, index_reader
from appliance.index.identity import Demographics
from appliance.index.identity_actions import IdentityActions
from appliance.index.identity_rules import DecisionKind
from appliance.index.rebuild import Rebuilder, RebuildFiles
from appliance.index.status import RebuildStatus
from appliance.state import add_modality, open_state
from appliance.state.identity import (
    DecisionEntry,
    IdentityRulesSource,
    read_identity_rules,
    record_decision,
    record_undo,
)
from appliance.state.worklist import NewEntry, add_entry
from appliance.storage import Storage
from tests._rebuild_helpers import index_snapshot, ingest

SENDER = "SEQUOIA"
_SOURCE: dict[str, FileDataset] = {}


def person(
    name: str, patient_id: str, birth_date: str = "", sex: str = "", issuer: str = ""
) -> Demographics:
    """Demographics, in the order staff say them."""
    return Demographics(patient_id, issuer, name, birth_date, sex)


@dataclass
class Office:
    """A data folder with a running writer and an ``app.db``."""

    data_dir: Path
    storage: Storage
    writer: IndexWriter
    rules: IdentityRulesSource
    actions: IdentityActions
    work: Path
    sent: int = 0
    studies: dict[str, str] = field(default_factory=dict)

    @property
    def app_db(self) -> Path:
        return self.data_dir / "app.db"

    @property
    def index_db(self) -> Path:
        return self.data_dir / "index.db"

    def send(
        self,
        who: Demographics,
        study: str = "",
        *,
        accession: str = "",
        sender: str = SENDER,
        issuer: str | None = None,
    ) -> str:
        """Store one instance naming `who` in study `study` (a label); return its UID.

        `issuer` is what the file carries (default: the person's issuer).
        """
        study_uid = self.studies.setdefault(study or generate_uid(), generate_uid())
        ds = _source()
        ds.PatientName, ds.PatientID = who.name, who.patient_id
        ds.PatientBirthDate, ds.PatientSex = who.birth_date, who.sex
        carried = who.issuer if issuer is None else issuer
        if carried:
            ds.IssuerOfPatientID = carried
        elif "IssuerOfPatientID" in ds:
            del ds.IssuerOfPatientID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber = accession
        ds.StudyDate = "20250105"
        self.sent += 1
        path = self.work / f"{self.sent:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ingest(self.storage, self.writer, path, sender)
        return str(ds.SOPInstanceUID)

    def study_uid(self, label: str) -> str:
        return self.studies[label]

    def register(self, ae_title: str, issuer: str = "") -> None:
        with closing(open_state(self.app_db)) as conn:
            add_modality(conn, ae_title, default_issuer=issuer)

    def schedule(self, who: Demographics, accession: str) -> None:
        entry = NewEntry(
            patient_id=who.patient_id,
            patient_name=who.name,
            accession_number=accession,
            scheduled=datetime.now(),
            birth_date=who.birth_date,
            sex=who.sex,
            issuer=who.issuer,
        )
        with closing(open_state(self.app_db)) as conn:
            add_entry(conn, entry, created_by="test")

    def decide(
        self,
        kind: DecisionKind,
        *records: Demographics,
        result: Demographics | None = None,
        study: str = "",
        by: str = "doc",
    ) -> DecisionEntry:
        """Record a decision in ``app.db`` and apply it live, as the web does."""
        with closing(db.connect(self.app_db)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            entry = record_decision(
                conn,
                kind,
                records,
                by,
                result=result,
                study_uid=self.study_uid(study) if study else "",
            )
            conn.execute("COMMIT")
        self.actions.apply(entry.as_decision())
        return entry

    def undo(self, entry: DecisionEntry, by: str = "doc") -> DecisionEntry:
        """Record an undo and derive the records again, as the web does."""
        with closing(db.connect(self.app_db)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            undone, undo = record_undo(conn, entry.id, by)
            conn.execute("COMMIT")
        self.actions.undo(undone.as_decision())
        return undo

    def rebuild(self) -> None:
        """Rebuild the index from storage, with the decisions of ``app.db``."""
        rebuilder = Rebuilder(
            self.storage,
            RebuildFiles(self.index_db, self.data_dir / "maintenance"),
            self.writer,
            RebuildStatus(),
            lambda: list(read_identity_rules(self.app_db).decisions),
            rules=lambda: read_identity_rules(self.app_db),
        )
        assert rebuilder.run("test") is not None

    def patients(self) -> list[tuple[Any, ...]]:
        """Each record: demographics and the labels of the studies it holds."""
        labels = {uid: label for label, uid in self.studies.items()}
        with index_reader(self.index_db) as conn:
            rows = conn.execute("SELECT * FROM patients ORDER BY id").fetchall()
            found = []
            for row in rows:
                studies = conn.execute(
                    "SELECT study_uid FROM studies WHERE patient_ref = ?", (row["id"],)
                ).fetchall()
                found.append(
                    (
                        row["patient_id"],
                        row["issuer"],
                        row["name"],
                        row["birth_date"],
                        row["sex"],
                        tuple(sorted(labels.get(s[0], s[0]) for s in studies)),
                    )
                )
        return sorted(found)

    def conflicts(self) -> list[tuple[str, str, str, str]]:
        """Each open conflict: both names, the fields and the source."""
        with index_reader(self.index_db) as conn:
            rows = conn.execute(
                "SELECT a.name AS a, b.name AS b, c.fields, c.source_ae"
                " FROM identity_conflicts c JOIN patients a ON a.id = c.patient_a"
                " JOIN patients b ON b.id = c.patient_b"
            ).fetchall()
        return sorted(
            (*sorted((row["a"], row["b"])), row["fields"], row["source_ae"])
            for row in rows
        )

    def instance_owner(self, sop_uid: str) -> str:
        """The name on the record an instance is filed under."""
        with index_reader(self.index_db) as conn:
            row = conn.execute(
                "SELECT p.name FROM instances i JOIN patients p ON p.id = i.patient_ref"
                " WHERE i.sop_uid = ?",
                (sop_uid,),
            ).fetchone()
        return str(row[0])

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the index without ids (see ``index_snapshot``)."""
        return index_snapshot(self.index_db)


@contextmanager
def office(tmp_path: Path) -> Iterator[Office]:
    """Start an office: storage, ``app.db`` with the sender, a running writer."""
    data_dir = tmp_path / "data"
    storage = Storage(data_dir)
    storage.prepare()
    with closing(open_state(data_dir / "app.db")) as conn:
        add_modality(conn, SENDER)
    rules = IdentityRulesSource(data_dir / "app.db")
    writer = IndexWriter(data_dir / "index.db", identity=rules)
    writer.start()
    work = tmp_path / "work"
    work.mkdir()
    try:
        yield Office(
            data_dir,
            storage,
            writer,
            rules,
            IdentityActions(writer, storage, rules),
            work,
        )
    finally:
        writer.stop()
        rules.close()


def _source() -> FileDataset:
    if "rgb" not in _SOURCE:
        path = get_testdata_file("US1_UNCR.dcm")
        assert isinstance(path, str)
        _SOURCE["rgb"] = pydicom.dcmread(path)
    return _SOURCE["rgb"]
