"""The worklist pages' forms; Flask-WTF adds a CSRF token to each.

The form checks what a person can get wrong while typing (a missing field,
a date in the future, a ``^`` in a name); what a modality could not take
(lengths, backslashes, AE titles, a used accession number) is checked by
:meth:`appliance.state.worklist.NewEntry.validated`, whose messages name the
field and are shown next to it by :meth:`EntryForm.show_error`.
"""

from __future__ import annotations

from datetime import date, datetime, time

from flask_wtf import FlaskForm
from wtforms import DateField, Field, SelectField, StringField, TimeField
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    Optional,
    ValidationError,
)

from appliance.config import parse_ae_title
from appliance.state.worklist import NewEntry
from appliance.web.identity_forms import choice

SEXES = [
    choice("", "Unknown"),
    choice("F", "Female"),
    choice("M", "Male"),
    choice("O", "Other"),
]
# PS3.5 6.2.1: "^" separates the name's components, "=" its groups.
NAME_SEPARATORS = "^="
# The state API's field names, by the form field that shows their errors.
STATE_FIELDS = {
    "patient_name": "family_name",
    "patient_id": "patient_id",
    "issuer": "issuer",
    "birth_date": "birth_date",
    "sex": "sex",
    "accession_number": "accession_number",
    "description": "description",
    "modality": "modality",
}


def _name_part(_form: FlaskForm, field: Field) -> None:
    if any(mark in (field.data or "") for mark in NAME_SEPARATORS):
        raise ValidationError("Type the name without ^ or =.")


def _not_in_future(_form: FlaskForm, field: Field) -> None:
    if field.data is not None and field.data > date.today():
        raise ValidationError("The birth date cannot be in the future.")


def _ae_title(_form: FlaskForm, field: Field) -> None:
    try:
        parse_ae_title(field.data or "")
    except ValueError:
        raise ValidationError(
            "An AE title has 1 to 16 letters, digits or signs, without a backslash."
        ) from None


def _this_minute() -> time:
    return datetime.now().time().replace(second=0, microsecond=0)


class EntryForm(FlaskForm):
    """One scheduled procedure as the front desk types it."""

    family_name = StringField(
        "Family name", validators=[DataRequired(), Length(max=64), _name_part]
    )
    given_name = StringField(
        "Given name(s)", validators=[Optional(), Length(max=64), _name_part]
    )
    patient_id = StringField("Patient ID", validators=[DataRequired(), Length(max=64)])
    issuer = StringField(
        "Issuer of the patient ID (optional)", validators=[Optional(), Length(max=64)]
    )
    birth_date = DateField("Birth date", validators=[Optional(), _not_in_future])
    sex = SelectField("Sex", choices=SEXES, default="", validate_choice=True)
    accession_number = StringField(
        "Accession number",
        validators=[Optional(), Length(max=16)],
        render_kw={"placeholder": "empty: numbered automatically"},
    )
    scheduled_date = DateField(
        "Scheduled date", validators=[InputRequired()], default=date.today
    )
    scheduled_time = TimeField(
        "Scheduled time", validators=[InputRequired()], default=_this_minute
    )
    description = StringField(
        "Procedure description", validators=[Optional(), Length(max=64)]
    )
    station_ae = StringField(
        "Station AE title (empty: any modality)", validators=[Optional(), _ae_title]
    )
    modality = StringField(
        "Modality", validators=[DataRequired(), Length(max=16)], default="US"
    )

    def new_entry(self) -> NewEntry:
        """What was typed, for :func:`appliance.state.worklist.add_entry`."""
        birth: date | None = self.birth_date.data
        return NewEntry(
            patient_id=self.patient_id.data or "",
            patient_name=to_person_name(self.family_name.data, self.given_name.data),
            accession_number=self.accession_number.data or "",
            scheduled=datetime.combine(
                self.scheduled_date.data, self.scheduled_time.data
            ),
            birth_date=birth.strftime("%Y%m%d") if birth else "",
            sex=self.sex.data or "",
            issuer=self.issuer.data or "",
            description=self.description.data or "",
            station_ae=self.station_ae.data or "",
            modality=self.modality.data or "",
        )

    def show_error(self, error: ValueError) -> str:
        """Put the state API's message next to its field; return it as a sentence.

        Parameters
        ----------
        error : ValueError
            Raised by :func:`appliance.state.worklist.add_entry`, its message
            starting with the field's name, e.g. ``accession_number: ...``.

        Returns
        -------
        str
            The message with the field's label, for a flash.
        """
        name, _, message = str(error).partition(": ")
        field = self._fields.get(STATE_FIELDS.get(name, ""))
        if field is None or not message:
            return _sentence(str(error))

        text = _sentence(message)
        field.errors = [*field.errors, text]
        label = "Name" if field is self.family_name else field.label.text
        return f"{label}: {text}"


def to_person_name(family: str | None, given: str | None) -> str:
    """Family and given names → a DICOM person name (PS3.5 6.2.1, VR PN).

    ``("Doe", "Jane")`` → ``"Doe^Jane"``; without a given name, the family
    name alone.
    """
    family_name = (family or "").strip()
    given_name = (given or "").strip()
    return f"{family_name}^{given_name}" if given_name else family_name


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return f"{text[:1].upper()}{text[1:]}."
