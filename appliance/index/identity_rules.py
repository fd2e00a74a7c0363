"""What a person decided about patient identity, and what ingest makes of it.

The index keys patients by row ids that change on every rebuild, so a
decision never names a row. It names patient records by what they showed
when the person decided: PatientID, IssuerOfPatientID, name, birth date and
sex (a :class:`~appliance.index.identity.Demographics`), and studies by
their Study Instance UID. Those come out of the stored files the same way
every time, which is what lets a decision survive ``appliance
rebuild-index``.

This module holds no SQL. :class:`IdentityRules` is a snapshot of everything
ingest needs beyond the file itself: the registered modalities' default
issuers, the worklist (by accession number) and the decisions in force,
oldest first. Ingest asks it where an arriving instance belongs;
:mod:`appliance.index.decisions` applies the decisions to patient rows.

Not done yet: a modality's default issuer and the worklist are read as they
are now, also by a rebuild. Setting an issuer on a modality that has sent
before files its new images apart from its old ones until the next
``appliance rebuild-index`` (which applies the issuer to all of them), and
removing a worklist entry unlinks its images at the next rebuild. Keeping
when each was in force would fix both; until then, set the issuer before a
modality's first study, and rebuild after changing it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from appliance.index.identity import Demographics
from appliance.index.records import InstanceRecord

WORKLIST_SOURCE = "worklist"
"""The source of a conflict raised by the worklist link, in place of an AE."""


class DecisionKind(enum.StrEnum):
    """What a person decided about one or more patient records."""

    DIFFERENT_PEOPLE = "different-people"
    """Two records that share an ID are two people: the conflict closes."""

    SAME_PERSON = "same-person"
    """Records are one person: merged, with the demographics chosen."""

    MOVE_STUDY = "move-study"
    """A study belongs to another, existing patient record."""

    NEW_PATIENT = "new-patient"
    """A study belongs to a patient the archive did not have: split off."""

    CORRECT = "correct"
    """A record's demographics had a typo: corrected in the index only."""


@dataclass(frozen=True)
class IdentityDecision:
    """One decision in force, as the index applies it.

    Parameters
    ----------
    id : int
        Its number in ``app.db``; decisions apply in this order.
    kind : DecisionKind
        What was decided.
    records : tuple of Demographics
        The records as the person saw them: two for different people, two
        or more for same person, one for a correction, and for a move the
        record the study was under.
    result : Demographics or None
        The chosen (merge), corrected or target (move) demographics.
    study_uid : str
        The study moved, for the two move kinds.
    made_at : str
        When it was decided (ISO 8601), also the time of conflicts it raises.
    """

    id: int
    kind: DecisionKind
    records: tuple[Demographics, ...]
    result: Demographics | None = None
    study_uid: str = ""
    made_at: str = ""

    def rewrite(self, incoming: Demographics) -> Demographics | None:
        """Return what `incoming` becomes under this decision, or None.

        Only a merge or a correction changes who an instance names; a record
        fits when its ID, issuer and name are those of a record decided
        about, and its birth date and sex are empty, the old value or the
        new one (see :func:`fits`).
        """
        if self.result is None or self.kind not in REKEYING:
            return None
        for record in self.records:
            if fits(incoming, record, self.result):
                return rewritten(incoming, record, self.result)
        return None

    def patient_ids(self) -> set[str]:
        """Every PatientID this decision mentions."""
        ids = {record.patient_id for record in self.records}
        if self.result is not None:
            ids.add(self.result.patient_id)
        return ids


REKEYING = frozenset({DecisionKind.SAME_PERSON, DecisionKind.CORRECT})
MOVES = frozenset({DecisionKind.MOVE_STUDY, DecisionKind.NEW_PATIENT})


def fits(incoming: Demographics, record: Demographics, result: Demographics) -> bool:
    """Tell whether demographics are those of a record a decision is about.

    ID, issuer and normalised name must be the record's. A birth date or sex
    may be empty, the record's (the value being corrected) or the result's;
    when the decision leaves a field empty on both sides, any value fits, as
    ingest would have filed it there. A different value never fits: a
    correction of Jane's birth date must not pull in another Jane's images.
    """
    return (
        incoming.patient_id == record.patient_id
        and incoming.issuer == record.issuer
        and incoming.name_key == record.name_key
        and _field_fits(incoming.birth_date, record.birth_date, result.birth_date)
        and _field_fits(incoming.sex, record.sex, result.sex)
    )


def rewritten(
    incoming: Demographics, record: Demographics, result: Demographics
) -> Demographics:
    """Return `incoming` as a decision that turned `record` into `result` has it.

    A birth date or sex the decision left empty on both sides keeps the
    incoming value, so the record can still learn it.
    """
    return replace(
        result,
        birth_date=_kept(incoming.birth_date, record.birth_date, result.birth_date),
        sex=_kept(incoming.sex, record.sex, result.sex),
    )


def same_demographics(left: Demographics, right: Demographics) -> bool:
    """Tell whether two records show exactly the same person (name normalised)."""
    return (
        left.patient_id == right.patient_id
        and left.issuer == right.issuer
        and left.name_key == right.name_key
        and left.birth_date == right.birth_date
        and left.sex == right.sex
    )


def differences(left: Demographics, right: Demographics) -> list[str]:
    """List the fields two records do not share exactly (an empty one counts)."""
    fields = []
    for label, a, b in (
        ("patient_id", left.patient_id, right.patient_id),
        ("issuer", left.issuer, right.issuer),
        ("name", left.name_key, right.name_key),
        ("birth_date", left.birth_date, right.birth_date),
        ("sex", left.sex, right.sex),
    ):
        if a != b:
            fields.append(label)
    return fields


class DistinctPairs:
    """Records decided to be different people, followed through later decisions.

    A "different people" decision names two records as they were; a later
    correction or merge may change how one of them reads. The pairs are
    kept in the current form by :meth:`advance`, decision by decision.
    """

    def __init__(self, decisions: Iterable[IdentityDecision] = ()) -> None:
        self._pairs: list[tuple[Demographics, Demographics]] = []
        for decision in decisions:
            self.advance(decision)

    def advance(self, decision: IdentityDecision) -> None:
        """Take one more decision into account (in decision order)."""
        if decision.kind is DecisionKind.DIFFERENT_PEOPLE:
            first, second = decision.records[:2]
            self._pairs.append((first, second))
        elif decision.kind is DecisionKind.NEW_PATIENT and decision.result:
            # Splitting a study off to a new patient says they differ.
            self._pairs.append((decision.records[0], decision.result))
        elif decision.kind in REKEYING:
            self._pairs = [
                (decision.rewrite(a) or a, decision.rewrite(b) or b)
                for a, b in self._pairs
            ]

    def __call__(self, left: Demographics, right: Demographics) -> bool:
        """Tell whether two records were decided to be different people."""
        for a, b in self._pairs:
            if _agrees(left, a) and _agrees(right, b):
                return True
            if _agrees(left, b) and _agrees(right, a):
                return True
        return False


class IdentityRules:
    """Everything ingest applies beyond the file itself; a snapshot.

    Parameters
    ----------
    default_issuers : mapping
        Calling AE title → the IssuerOfPatientID its instances get when they
        carry none.
    worklist : mapping
        Accession number → the patient as scheduled on the worklist.
    decisions : sequence of IdentityDecision
        The decisions in force, oldest first.
    """

    def __init__(
        self,
        default_issuers: Mapping[str, str] | None = None,
        worklist: Mapping[str, Demographics] | None = None,
        decisions: Sequence[IdentityDecision] = (),
    ) -> None:
        self.default_issuers = dict(default_issuers or {})
        self.worklist = dict(worklist or {})
        self.decisions = tuple(decisions)
        self.distinct = DistinctPairs(self.decisions)
        self._rekeyed_ids = {
            record.patient_id
            for decision in self.decisions
            if decision.kind in REKEYING
            for record in decision.records
        }
        self._moves = {
            decision.study_uid: number
            for number, decision in enumerate(self.decisions)
            if decision.kind in MOVES and decision.result is not None
        }

    def without_decisions(self) -> IdentityRules:
        """The same issuers and worklist, without any decision.

        A rebuild indexes the files this way, then applies the decisions on
        top (:func:`appliance.index.decisions.apply_identity_decisions`).
        """
        return IdentityRules(self.default_issuers, self.worklist)

    def as_sent(self, record: InstanceRecord) -> Demographics:
        """The patient an instance names, with its sender's default issuer."""
        issuer = record.issuer_of_patient_id or self.default_issuers.get(
            record.source_ae, ""
        )
        return Demographics(
            patient_id=record.patient_id,
            issuer=issuer,
            name=record.patient_name,
            birth_date=record.patient_birth_date,
            sex=record.patient_sex,
        )

    def scheduled(self, record: InstanceRecord) -> Demographics | None:
        """The worklist's patient for the instance's accession number, if any.

        An entry without an issuer is in the sender's namespace, so it takes
        the sender's default issuer as the instance does.
        """
        if not record.accession_number:
            return None
        entry = self.worklist.get(record.accession_number)
        if entry is None:
            return None
        if entry.issuer:
            return entry
        return replace(entry, issuer=self.default_issuers.get(record.source_ae, ""))

    def redirect(self, incoming: Demographics) -> Demographics:
        """Follow `incoming` through every merge and correction, in order."""
        if incoming.patient_id not in self._rekeyed_ids:
            return incoming
        return follow(incoming, self.decisions)

    def study_target(self, study_uid: str) -> Demographics | None:
        """Where a person moved a study to, as that record reads now; or None."""
        number = self._moves.get(study_uid)
        if number is None:
            return None
        target = self.decisions[number].result
        assert target is not None
        return follow(target, self.decisions[number + 1 :])


def follow(
    incoming: Demographics, decisions: Iterable[IdentityDecision]
) -> Demographics:
    """Return `incoming` after each decision in turn has had its say."""
    current = incoming
    for decision in decisions:
        current = decision.rewrite(current) or current
    return current


NO_RULES = IdentityRules()
"""Files as they are: no default issuer, no worklist, no decision."""


def _field_fits(value: str, old: str, new: str) -> bool:
    return not value or value == old or value == new or (not old and not new)


def _kept(value: str, old: str, new: str) -> str:
    return new if new or old else value


def _agrees(record: Demographics, decided: Demographics) -> bool:
    return fits(record, decided, decided)
