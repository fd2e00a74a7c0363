"""Patient identity: records, conflicts, decisions, and a rebuild that keeps them.

Every test stores real files through the index writer with the identity
rules of ``app.db``, as the listener does, makes decisions as the web does,
and most end by rebuilding the index from storage and checking that the
rebuilt index files everything exactly as the live one did.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from appliance import db
from appliance.dicom.coercion import coerce_patient
from appliance.index import index_reader
from appliance.index.decisions import apply_identity_decisions, row_demographics
from appliance.index.identity import Demographics
from appliance.index.identity_rules import (
    DecisionKind,
    IdentityDecision,
    IdentityRules,
)
from appliance.state.identity import (
    DecisionEntry,
    IdentityRulesSource,
    decisions_in_force,
    history,
    record_decision,
)
from tests.identity_helpers import Office, office, person

JANE = person("DOE^JANE", "P100", "19850214", "F")
JANE_TYPO = person("DOE^JNAE", "P100", "19850214", "F")
JOHN = person("DOE^JOHN", "P100", "19700101", "M")


@pytest.fixture
def here(tmp_path: Path) -> Iterator[Office]:
    with office(tmp_path) as running:
        yield running


def rebuilt_alike(here: Office) -> None:
    """Rebuild from storage and check the index came out as it was."""
    before = here.snapshot()
    here.rebuild()
    assert here.snapshot() == before


# --- Who is one patient -----------------------------------------------------


def test_a_man_and_a_pregnant_woman_with_one_id_stay_two_people(
    here: Office,
) -> None:
    here.send(JOHN, "abdomen")
    here.send(JANE, "obstetric")
    here.send(JANE, "obstetric")

    assert here.patients() == [
        ("P100", "", "DOE^JANE", "19850214", "F", ("obstetric",)),
        ("P100", "", "DOE^JOHN", "19700101", "M", ("abdomen",)),
    ]
    assert here.conflicts() == [
        ("DOE^JANE", "DOE^JOHN", "name,birth_date,sex", "SEQUOIA")
    ]
    rebuilt_alike(here)
    assert len(here.patients()) == 2


def test_name_variants_are_one_record(here: Office) -> None:
    for name in ("Doe^Jane", "DOE^JANE^^^", " doe ^ jane", "DOE^JANE"):
        here.send(person(name, "P100", "19850214", "F"), "one")

    assert [p[5] for p in here.patients()] == [("one",)]
    assert here.conflicts() == []


def test_a_typo_is_a_conflict_until_merged_and_stays_merged(here: Office) -> None:
    here.send(JANE, "first")
    here.send(JANE_TYPO, "second")
    assert here.conflicts() == [("DOE^JANE", "DOE^JNAE", "name", "SEQUOIA")]

    here.decide(DecisionKind.SAME_PERSON, JANE, JANE_TYPO, result=JANE)
    merged = [("P100", "", "DOE^JANE", "19850214", "F", ("first", "second"))]
    assert here.patients() == merged
    assert here.conflicts() == []

    # The machine still has the typo: its next image joins the merged record.
    later = here.send(JANE_TYPO, "third")
    assert here.instance_owner(later) == "DOE^JANE"
    assert here.conflicts() == []

    rebuilt_alike(here)
    assert here.patients() == [
        ("P100", "", "DOE^JANE", "19850214", "F", ("first", "second", "third"))
    ]


def test_merge_takes_each_chosen_field(here: Office) -> None:
    no_birth = person("DOE^JANE", "P100", "", "F")
    other_birth = person("DOE^JANE", "P100", "19850215", "F")
    here.send(other_birth, "a")
    here.send(JANE, "b")
    chosen = person("DOE^JANE", "P100", "19850214", "F")

    here.decide(DecisionKind.SAME_PERSON, other_birth, JANE, result=chosen)
    here.send(no_birth, "c")

    assert here.patients() == [
        ("P100", "", "DOE^JANE", "19850214", "F", ("a", "b", "c"))
    ]
    rebuilt_alike(here)


def test_a_merge_never_pulls_in_a_third_person(here: Office) -> None:
    here.send(JANE, "a")
    here.send(JANE_TYPO, "b")
    here.decide(DecisionKind.SAME_PERSON, JANE, JANE_TYPO, result=JANE)

    # Same name and ID, another birth date: still someone else.
    namesake = person("DOE^JANE", "P100", "19990101", "F")
    here.send(namesake, "c")

    assert len(here.patients()) == 2
    assert here.conflicts() == [("DOE^JANE", "DOE^JANE", "birth_date", "SEQUOIA")]
    rebuilt_alike(here)


# --- Issuers ---------------------------------------------------------------


def test_two_sites_keep_their_own_id_space(here: Office) -> None:
    here.register("CLINIC_A", issuer="SITE-A")
    here.register("CLINIC_B", issuer="SITE-B")
    here.send(JANE, "a1", sender="CLINIC_A")
    here.send(JANE, "a2", sender="CLINIC_A")
    here.send(JANE, "b1", sender="CLINIC_B")
    # A file that names its own issuer keeps it.
    here.send(JANE, "own", sender="CLINIC_B", issuer="HOSPITAL")

    assert here.patients() == [
        ("P100", "HOSPITAL", "DOE^JANE", "19850214", "F", ("own",)),
        ("P100", "SITE-A", "DOE^JANE", "19850214", "F", ("a1", "a2")),
        ("P100", "SITE-B", "DOE^JANE", "19850214", "F", ("b1",)),
    ]
    assert {c[2] for c in here.conflicts()} == {"issuer"}
    # The sender's AE title is in each stored path: a rebuild finds the issuer.
    rebuilt_alike(here)


# --- Decisions ---------------------------------------------------------------


def test_different_people_closes_the_conflict_for_good(here: Office) -> None:
    here.send(JOHN, "abdomen")
    here.send(JANE, "obstetric")
    here.decide(DecisionKind.DIFFERENT_PEOPLE, JOHN, JANE)
    assert here.conflicts() == []

    here.send(JANE, "obstetric")
    here.send(JOHN, "follow-up")
    assert here.conflicts() == []
    rebuilt_alike(here)
    assert here.conflicts() == []


def test_different_people_survives_a_later_correction(here: Office) -> None:
    here.send(JOHN, "abdomen")
    here.send(JANE_TYPO, "obstetric")
    here.decide(DecisionKind.DIFFERENT_PEOPLE, JOHN, JANE_TYPO)
    here.decide(DecisionKind.CORRECT, JANE_TYPO, result=JANE)

    assert here.conflicts() == []
    assert [p[2] for p in here.patients()] == ["DOE^JANE", "DOE^JOHN"]
    rebuilt_alike(here)


def test_correct_a_typo(here: Office) -> None:
    wrong_birth = person("DOE^JANE", "P100", "19580214", "F")
    here.send(wrong_birth, "one")
    here.decide(DecisionKind.CORRECT, wrong_birth, result=JANE)

    later = here.send(wrong_birth, "two")
    assert here.instance_owner(later) == "DOE^JANE"
    assert here.patients() == [
        ("P100", "", "DOE^JANE", "19850214", "F", ("one", "two"))
    ]
    rebuilt_alike(here)


def test_move_a_study_to_a_new_patient(here: Office) -> None:
    here.send(JANE, "hers")
    # The husband's scan was done under her selected patient.
    here.send(JANE, "his")
    husband = person("DOE^JOHN", "P200", "19700101", "M")
    here.decide(DecisionKind.NEW_PATIENT, JANE, result=husband, study="his")

    late = here.send(JANE, "his")
    assert here.instance_owner(late) == "DOE^JOHN"
    assert here.patients() == [
        ("P100", "", "DOE^JANE", "19850214", "F", ("hers",)),
        ("P200", "", "DOE^JOHN", "19700101", "M", ("his",)),
    ]
    assert here.conflicts() == []
    rebuilt_alike(here)


def test_move_a_study_to_another_record(here: Office) -> None:
    here.send(JOHN, "abdomen")
    here.send(JANE, "obstetric")
    here.send(JOHN, "second-trimester")
    here.decide(DecisionKind.MOVE_STUDY, JOHN, result=JANE, study="second-trimester")

    assert here.patients() == [
        ("P100", "", "DOE^JANE", "19850214", "F", ("obstetric", "second-trimester")),
        ("P100", "", "DOE^JOHN", "19700101", "M", ("abdomen",)),
    ]
    rebuilt_alike(here)


def test_undo_a_merge(here: Office) -> None:
    here.send(JANE, "first")
    here.send(JANE_TYPO, "second")
    before = here.patients()
    merge = here.decide(DecisionKind.SAME_PERSON, JANE, JANE_TYPO, result=JANE)
    here.send(JANE_TYPO, "third")

    undo = here.undo(merge)

    assert here.patients() == [
        ("P100", "", "DOE^JANE", "19850214", "F", ("first",)),
        ("P100", "", "DOE^JNAE", "19850214", "F", ("second", "third")),
    ]
    assert before[0] == here.patients()[0]
    assert here.conflicts() == [("DOE^JANE", "DOE^JNAE", "name", "SEQUOIA")]
    with closing(db.connect(here.app_db, readonly=True)) as conn:
        assert decisions_in_force(conn) == []
        shown = history(conn, {"P100"})
    assert [(e.id, e.kind, e.undone_by, e.undoes) for e in shown] == [
        (undo.id, "undo", None, merge.id),
        (merge.id, "same-person", undo.id, None),
    ]
    rebuilt_alike(here)


def test_undo_keeps_later_decisions(here: Office) -> None:
    here.send(JOHN, "abdomen")
    here.send(JANE, "first")
    here.send(JANE_TYPO, "second")
    merge = here.decide(DecisionKind.SAME_PERSON, JANE, JANE_TYPO, result=JANE)
    here.decide(DecisionKind.DIFFERENT_PEOPLE, JOHN, JANE)

    here.undo(merge)

    assert ("DOE^JANE", "DOE^JOHN") not in {c[:2] for c in here.conflicts()}
    assert ("DOE^JANE", "DOE^JNAE", "name", "SEQUOIA") in here.conflicts()
    rebuilt_alike(here)


def test_decisions_made_while_the_index_is_lost_apply_on_rebuild(
    here: Office,
) -> None:
    here.send(JANE, "first")
    here.send(JANE_TYPO, "second")
    here.decide(DecisionKind.SAME_PERSON, JANE, JANE_TYPO, result=JANE)

    # A rebuild of the index from nothing but storage and app.db.
    here.rebuild()
    assert here.patients() == [
        ("P100", "", "DOE^JANE", "19850214", "F", ("first", "second"))
    ]


def test_a_decision_applied_twice_changes_nothing_more(here: Office) -> None:
    # A rebuild that reads a decision the web is applying at that moment
    # applies it twice; that must be harmless.
    wrong_birth = person("DOE^JANE", "P100", "", "F")
    here.send(JOHN, "abdomen")
    here.send(wrong_birth, "one")
    here.send(JANE_TYPO, "two")
    decisions = [
        here.decide(DecisionKind.CORRECT, wrong_birth, result=JANE),
        here.decide(DecisionKind.SAME_PERSON, JANE, JANE_TYPO, result=JANE),
        here.decide(DecisionKind.DIFFERENT_PEOPLE, JANE, JOHN),
    ]
    before = here.snapshot()

    for entry in decisions:
        here.actions.apply(entry.as_decision())

    assert here.snapshot() == before
    assert here.conflicts() == []


# --- The worklist link ---------------------------------------------------------


def test_the_worklist_patient_takes_the_study(here: Office) -> None:
    here.register("CLINIC_A", issuer="SITE-A")
    scheduled = person("DOE^JANE", "P100", "19850214", "F")
    here.schedule(scheduled, "ACC-7")
    # The machine had the name mistyped, and no issuer: the worklist entry
    # has none either, so both take the sender's.
    typed = here.send(JANE_TYPO, "scan", accession="ACC-7", sender="CLINIC_A")

    assert here.patients() == [
        ("P100", "SITE-A", "DOE^JANE", "19850214", "F", ("scan",)),
        ("P100", "SITE-A", "DOE^JNAE", "19850214", "F", ()),
    ]
    assert here.instance_owner(typed) == "DOE^JNAE"
    assert here.conflicts() == [("DOE^JANE", "DOE^JNAE", "name", "worklist")]
    rebuilt_alike(here)


def test_a_matching_worklist_entry_raises_nothing(here: Office) -> None:
    here.schedule(person("DOE^JANE", "P100", "19850214", "F"), "ACC-8")
    here.send(person("Doe^Jane", "P100", "", ""), "scan", accession="ACC-8")

    assert here.patients() == [("P100", "", "DOE^JANE", "19850214", "F", ("scan",))]
    assert here.conflicts() == []


def test_a_worklist_conflict_is_settled_by_a_merge(here: Office) -> None:
    here.schedule(JANE, "ACC-9")
    here.send(JANE_TYPO, "scan", accession="ACC-9")
    here.decide(DecisionKind.SAME_PERSON, JANE, JANE_TYPO, result=JANE)

    here.send(JANE_TYPO, "scan", accession="ACC-9")
    assert here.patients() == [("P100", "", "DOE^JANE", "19850214", "F", ("scan",))]
    assert here.conflicts() == []
    rebuilt_alike(here)


# --- Pieces --------------------------------------------------------------------


def test_unknown_decisions_are_refused(here: Office) -> None:
    with pytest.raises(TypeError, match="identity decision"):
        apply_identity_decisions(None, [object()])  # type: ignore[arg-type, list-item]


def test_a_decision_needs_what_its_kind_needs(here: Office) -> None:
    with closing(db.connect(here.app_db)) as conn:
        with pytest.raises(ValueError, match="two records"):
            record_decision(conn, DecisionKind.SAME_PERSON, [JANE], "doc", result=JANE)
        with pytest.raises(ValueError, match="a study"):
            record_decision(conn, DecisionKind.NEW_PATIENT, [JANE], "doc", result=JOHN)
        with pytest.raises(ValueError, match="birth_date"):
            record_decision(
                conn,
                DecisionKind.CORRECT,
                [JANE],
                "doc",
                result=person("DOE^JANE", "P100", "1985-02-31"),
            )


def test_the_rules_follow_app_db(here: Office) -> None:
    source = IdentityRulesSource(here.app_db)
    try:
        assert source().default_issuers == {}
        first = source()
        assert source() is first  # nothing changed: the snapshot is kept
        here.register("CLINIC_A", issuer="SITE-A")
        assert source().default_issuers == {"CLINIC_A": "SITE-A"}
    finally:
        source.close()


def test_redirect_follows_decisions_in_order() -> None:
    y = person("B^B", "X1")
    z = person("C^C", "X1")
    x = person("A^A", "X1")
    rules = IdentityRules(
        decisions=[
            IdentityDecision(1, DecisionKind.CORRECT, (y,), z),
            IdentityDecision(2, DecisionKind.CORRECT, (x,), y),
        ]
    )
    # A is now B (decision 2); a B sent before decision 2 became C.
    assert rules.redirect(x) == y
    assert rules.redirect(y) == z


def test_outgoing_data_sets_name_the_corrected_patient() -> None:
    path = get_testdata_file("US1_UNCR.dcm")
    assert isinstance(path, str)
    dataset = pydicom.dcmread(path)
    dataset.PatientName, dataset.PatientID = "DOE^JNAE", "P100"
    dataset.PatientBirthDate, dataset.PatientSex = "19850214", "F"

    changed = coerce_patient(
        dataset,
        {
            "PatientID": "P100",
            "IssuerOfPatientID": "SITE-A",
            "PatientName": "DOE^JANE",
            "PatientBirthDate": "19850214",
            "PatientSex": "F",
        },
    )

    assert changed == ["IssuerOfPatientID", "PatientName"]
    assert str(dataset.PatientName) == "DOE^JANE"
    assert dataset.IssuerOfPatientID == "SITE-A"
    original = dataset.OriginalAttributesSequence[-1]
    assert original.ReasonForTheAttributeModification == "COERCE"
    assert str(original.ModifiedAttributesSequence[0].PatientName) == "DOE^JNAE"
    # Same name but for case and spacing: left as the file has it.
    assert coerce_patient(dataset, {**_row(dataset), "PatientName": "doe ^ jane"}) == []


def _row(dataset: pydicom.Dataset) -> dict[str, str]:
    keys = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate")
    return {key: str(dataset.get(key, "")) for key in (*keys, "PatientSex")}


# --- Live and rebuilt agree, whatever people decide -----------------------------

VARIANTS = (
    JANE,
    JANE_TYPO,
    JOHN,
    person("DOE^JANE", "P200", "19850214", "F"),
    person("ROE^ANNA", "P200", "19900101", "F"),
)


@pytest.mark.parametrize("seed", range(8))
def test_a_rebuild_files_everything_as_the_live_index_did(
    here: Office, seed: int
) -> None:
    # Random arrivals, decisions of every kind and undos, some of them
    # contradicting each other; then where each instance and study is filed,
    # and which conflicts are open, must come out the same after a rebuild.
    rng = random.Random(seed)
    here.schedule(JANE, "ACC-1")
    made: list[DecisionEntry] = []
    for _step in range(30):
        records = _records(here)
        roll = rng.random()
        if roll < 0.5 or len(records) < 2:
            study = f"s{rng.randrange(6)}"
            here.send(rng.choice(VARIANTS), study, accession=_accession(study))
        elif roll < 0.85:
            made.append(_random_decision(here, rng, records))
        elif made:
            here.undo(made.pop(rng.randrange(len(made))))

    live = _grouping(here)
    here.rebuild()
    assert _grouping(here) == live


def _random_decision(
    here: Office, rng: random.Random, records: list[Demographics]
) -> DecisionEntry:
    first, second = rng.sample(records, 2)
    kind = rng.choice(list(DecisionKind))
    if kind is DecisionKind.DIFFERENT_PEOPLE:
        return here.decide(kind, first, second)
    if kind is DecisionKind.SAME_PERSON:
        return here.decide(kind, first, second, result=rng.choice([first, second]))
    if kind is DecisionKind.CORRECT:
        return here.decide(kind, first, result=rng.choice(VARIANTS))
    study = rng.choice(_studies_of(here, first))
    target = second if kind is DecisionKind.MOVE_STUDY else rng.choice(VARIANTS)
    return here.decide(kind, first, result=target, study=study)


def _accession(study: str) -> str:
    return "ACC-1" if study == "s0" else ""


def _records(here: Office) -> list[Demographics]:
    with index_reader(here.index_db) as conn:
        rows = conn.execute(
            "SELECT * FROM patients WHERE id IN (SELECT patient_ref FROM studies)"
            " ORDER BY id"
        ).fetchall()
    return [row_demographics(row) for row in rows]


def _studies_of(here: Office, record: Demographics) -> list[str]:
    labels = {uid: label for label, uid in here.studies.items()}
    with index_reader(here.index_db) as conn:
        rows = conn.execute(
            "SELECT s.study_uid FROM studies s JOIN patients p ON p.id = s.patient_ref"
            " WHERE p.patient_id = ? AND p.name_key = ? AND p.birth_date = ?"
            " AND p.sex = ?",
            (record.patient_id, record.name_key, record.birth_date, record.sex),
        ).fetchall()
    return [labels[row[0]] for row in rows]


def _grouping(here: Office) -> dict[str, list[tuple[object, ...]]]:
    """Who each instance and its study are filed under; the open conflicts."""
    with index_reader(here.index_db) as conn:
        instances = conn.execute(
            "SELECT i.sop_uid, p.patient_id, p.name, p.birth_date, p.sex,"
            " o.patient_id, o.name, o.birth_date, o.sex FROM instances i"
            " JOIN patients p ON p.id = i.patient_ref"
            " JOIN series se ON se.id = i.series_ref"
            " JOIN studies s ON s.id = se.study_ref"
            " JOIN patients o ON o.id = s.patient_ref"
        ).fetchall()
        conflicts = conn.execute(
            "SELECT a.patient_id, a.name, a.birth_date, a.sex,"
            " b.patient_id, b.name, b.birth_date, b.sex FROM identity_conflicts c"
            " JOIN patients a ON a.id = c.patient_a"
            " JOIN patients b ON b.id = c.patient_b"
        ).fetchall()
    return {
        "instances": sorted(tuple(row) for row in instances),
        "conflicts": sorted(
            tuple(sorted((tuple(row[:4]), tuple(row[4:])))) for row in conflicts
        ),
    }
