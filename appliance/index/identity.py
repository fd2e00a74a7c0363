"""Who a patient is: never a PatientID alone.

Two instances belong to the same patient record only when PatientID,
IssuerOfPatientID, the normalised name, birth date and sex all agree. An empty
birth date or sex does not count as disagreeing. When records share an ID but
disagree, a separate record is made and the pair is a conflict for a person
to review; nothing is merged automatically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Demographics:
    """The identifying attributes of one patient as an instance names them."""

    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str

    @property
    def name_key(self) -> str:
        """The name as compared: see :func:`normalise_name`."""
        return normalise_name(self.name)


def normalise_name(name: str) -> str:
    """Return the comparable form of a DICOM person name (PS3.5 6.2, VR PN).

    Only the first (alphabetic) representation is used. Case, runs of spaces,
    spaces around components, and empty trailing components do not matter:
    ``"Doe^Jane^^^"`` and ``" DOE ^ jane"`` are the same name. Typos do
    matter: they become a conflict for a person to review.
    """
    alphabetic = name.split("=", 1)[0]
    components = [
        _SPACES.sub(" ", part).strip().upper() for part in alphabetic.split("^")
    ]
    while components and not components[-1]:
        components.pop()
    return "^".join(components)


def disagreements(known: Demographics, incoming: Demographics) -> list[str]:
    """List the attributes on which two demographics of one ID disagree.

    Parameters
    ----------
    known : Demographics
        A patient record already in the index.
    incoming : Demographics
        What a new instance says.

    Returns
    -------
    list of str
        Empty when the instance belongs to the record. Birth date and sex
        disagree only when both sides have a value.
    """
    differing = []
    if known.issuer != incoming.issuer:
        differing.append("issuer")
    if known.name_key != incoming.name_key:
        differing.append("name")
    if _both_set_and_differ(known.birth_date, incoming.birth_date):
        differing.append("birth_date")
    if _both_set_and_differ(known.sex, incoming.sex):
        differing.append("sex")
    return differing


def _both_set_and_differ(left: str, right: str) -> bool:
    return bool(left) and bool(right) and left != right
