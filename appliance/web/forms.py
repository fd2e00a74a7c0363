"""The web's forms; Flask-WTF adds a CSRF token to each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from appliance.state.users import MIN_PASSWORD_LENGTH


class LoginForm(FlaskForm):
    """Name and password."""

    name = StringField("User name", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class PasswordForm(FlaskForm):
    """A new password, typed twice, and the current one."""

    current = PasswordField("Current password", validators=[DataRequired()])
    new = PasswordField(
        "New password",
        validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=256)],
    )
    confirm = PasswordField(
        "New password again",
        validators=[DataRequired(), EqualTo("new", message="The passwords differ.")],
    )


class LogoutForm(FlaskForm):
    """Only a CSRF token: logging out changes state, so it is a POST."""
