"""Identity: names compare without case or spacing, never by ID alone."""

from __future__ import annotations

import pytest

from appliance.index.identity import Demographics, disagreements, normalise_name


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Doe^Jane", "DOE^JANE"),
        ("Doe^Jane", " doe ^  jane "),
        ("Doe^Jane^^^", "Doe^Jane"),
        ("Van  der Berg^Ann", "VAN DER BERG^ann"),
        ("Doe^Jane=ドウ^ジェーン", "Doe^Jane"),
    ],
)
def test_name_variants_are_the_same_name(left: str, right: str) -> None:
    assert normalise_name(left) == normalise_name(right)


@pytest.mark.parametrize(
    ("left", "right"),
    [("Doe^Jane", "Doe^Jnae"), ("Doe^Jane", "Jane^Doe"), ("Doe^Jane", "Doe")],
)
def test_typos_and_swaps_are_different_names(left: str, right: str) -> None:
    assert normalise_name(left) != normalise_name(right)


def _person(**changes: str) -> Demographics:
    values = {
        "patient_id": "123",
        "issuer": "",
        "name": "Doe^Jane",
        "birth_date": "19900101",
        "sex": "F",
    }
    values.update(changes)
    return Demographics(**values)


def test_same_person_agrees() -> None:
    assert disagreements(_person(), _person(name="DOE^JANE^^")) == []


def test_empty_birth_date_or_sex_does_not_disagree() -> None:
    assert disagreements(_person(), _person(birth_date="", sex="")) == []
    assert disagreements(_person(birth_date="", sex=""), _person()) == []


def test_every_differing_attribute_is_named() -> None:
    other = _person(issuer="SITE-B", name="Roe^John", birth_date="19700101", sex="M")

    assert disagreements(_person(), other) == ["issuer", "name", "birth_date", "sex"]
