"""The forms of the identity review; Flask-WTF adds a CSRF token to each.

Each form that acts on patient records carries their fingerprints (see
:func:`appliance.index.review.fingerprint`), so that a page left open across
a rebuild or another person's decision cannot act on the wrong record.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import HiddenField, RadioField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from appliance.index.identity import Demographics

try:
    from wtforms.fields.choices import SelectChoice
except ImportError:  # WTForms before 3.3 takes (value, label) pairs
    SelectChoice = None


def choice(value: str, label: str) -> Any:
    """One option of a select or radio field, as this WTForms wants it."""
    return (value, label) if SelectChoice is None else SelectChoice(value, label)


SIDES = [choice("first", "first"), choice("second", "second")]
SEXES = [
    choice("", "unknown"),
    choice("F", "F"),
    choice("M", "M"),
    choice("O", "Other"),
]
MERGED_FIELDS = ("patient_id", "issuer", "name", "birth_date", "sex")


class _Noted(FlaskForm):
    note = StringField("Note (optional)", validators=[Optional(), Length(max=500)])


class DifferentForm(_Noted):
    """Two records are different people."""

    first_token = HiddenField(validators=[DataRequired()])
    second_token = HiddenField(validators=[DataRequired()])


class MergeForm(_Noted):
    """Two records are one person; for each field, whose value is right."""

    first_token = HiddenField(validators=[DataRequired()])
    second_token = HiddenField(validators=[DataRequired()])
    patient_id = RadioField("Patient ID", choices=SIDES, default="first")
    issuer = RadioField("Issuer", choices=SIDES, default="first")
    name = RadioField("Name", choices=SIDES, default="first")
    birth_date = RadioField("Birth date", choices=SIDES, default="first")
    sex = RadioField("Sex", choices=SIDES, default="first")


class _Demographics(_Noted):
    # Checked by appliance.state.identity.checked_demographics, whose
    # messages name the field; a move to an existing record leaves them out.
    patient_id = StringField("Patient ID", validators=[Optional(), Length(max=64)])
    issuer = StringField("Issuer", validators=[Optional(), Length(max=64)])
    name = StringField("Name (FAMILY^GIVEN)", validators=[Optional(), Length(max=324)])
    birth_date = StringField(
        "Birth date (YYYYMMDD)", validators=[Optional(), Length(max=10)]
    )
    sex = SelectField("Sex", choices=SEXES, validate_choice=True)

    def demographics(self) -> Demographics:
        """What was typed (checked later by the state layer)."""
        return Demographics(
            patient_id=self.patient_id.data or "",
            issuer=self.issuer.data or "",
            name=self.name.data or "",
            birth_date=(self.birth_date.data or "").replace("-", ""),
            sex=self.sex.data or "",
        )

    def fill(self, demographics: Demographics) -> None:
        """Show `demographics` in the fields (a GET)."""
        self.patient_id.data = demographics.patient_id
        self.issuer.data = demographics.issuer
        self.name.data = demographics.name
        self.birth_date.data = demographics.birth_date
        self.sex.data = demographics.sex


class CorrectForm(_Demographics):
    """A record's demographics, corrected."""

    token = HiddenField(validators=[DataRequired()])


class MoveForm(_Demographics):
    """Move a study to another record, or to a new patient typed here."""

    token = HiddenField(validators=[DataRequired()])
    study_uid = SelectField("Study", validate_choice=True)
    target = SelectField("Move to", validate_choice=True)


class UndoForm(_Noted):
    """Undo one decision."""
