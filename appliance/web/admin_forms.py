"""The admin pages' forms; Flask-WTF adds a CSRF token to each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField, StringField
from wtforms.validators import AnyOf, DataRequired, Length, NumberRange, Optional

from appliance.state.users import Role

# (value, label) of each role, for the pages' <select> elements; the forms
# take the value as text and check it, which keeps them free of the select
# field's changing API.
ROLE_CHOICES = [
    (Role.ADMIN.value, "Admin"),
    (Role.CLINICIAN.value, "Clinician"),
    (Role.FRONTDESK.value, "Front desk"),
]
ROLE_VALUES = [value for value, _label in ROLE_CHOICES]


class NewUserForm(FlaskForm):
    """A new local account: its name and role (the password is made for it)."""

    name = StringField("User name", validators=[DataRequired(), Length(max=64)])
    role = StringField(
        "Role", validators=[AnyOf(ROLE_VALUES)], default=Role.CLINICIAN.value
    )


class RoleForm(FlaskForm):
    """Another role for an account."""

    role = StringField("Role", validators=[AnyOf(ROLE_VALUES)])


class ActionForm(FlaskForm):
    """Only a CSRF token: for buttons that change one thing (disable, end...)."""


class ModalityForm(FlaskForm):
    """A DICOM peer: AE title, where it connects from, and its defaults."""

    ae_title = StringField("AE title", validators=[DataRequired(), Length(max=16)])
    host = StringField(
        "Host or address (empty: any)", validators=[Optional(), Length(max=253)]
    )
    port = IntegerField(
        "Port (where the appliance reaches it)",
        validators=[Optional(), NumberRange(1, 65535)],
    )
    default_issuer = StringField(
        "Default issuer of patient IDs", validators=[Optional(), Length(max=64)]
    )
    description = StringField("Description", validators=[Optional(), Length(max=200)])
