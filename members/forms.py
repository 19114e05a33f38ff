"""Forms for accounts."""

from __future__ import annotations

from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, InputRequired, Length

from core.forms import Form, email_field, strip_whitespace, text_field

PASSWORD_HELP = "At least 10 characters. A few unrelated words make a strong password."


def _new_password_fields(label: str = "Password") -> tuple[PasswordField, PasswordField]:
    password = PasswordField(
        label,
        description=PASSWORD_HELP,
        validators=[
            InputRequired("Please choose a password."),
            Length(min=10, max=128, message="Your password must be 10 to 128 characters long."),
        ],
        render_kw={"autocomplete": "new-password"},
    )
    confirm = PasswordField(
        f"Repeat the {label.lower()}",
        validators=[
            InputRequired("Please repeat the password."),
            EqualTo("password", message="The two passwords do not match."),
        ],
        render_kw={"autocomplete": "new-password"},
    )
    return password, confirm


def _display_name_field() -> StringField:
    return StringField(
        "Display name",
        description="Shown on your profile and beside what you start.",
        filters=[strip_whitespace],
        validators=[
            DataRequired("Please enter a name to show."),
            Length(max=80, message="A display name can be at most 80 characters."),
        ],
        render_kw={"autocomplete": "name"},
    )


def _city_field() -> StringField:
    return StringField(
        "Home city",
        description="We show you what is happening there first.",
        filters=[strip_whitespace],
        validators=[
            DataRequired("Please enter your city."),
            Length(max=80, message="A city name can be at most 80 characters."),
        ],
        render_kw={"autocomplete": "address-level2"},
    )


def _current_password_field(form_id: str) -> PasswordField:
    # The account page shows several forms that each ask for it: each needs its own id.
    return PasswordField(
        "Current password",
        validators=[InputRequired("Please enter your current password.")],
        id=f"{form_id}-current_password",
        render_kw={"autocomplete": "current-password"},
    )


class RegisterForm(Form):
    display_name = _display_name_field()
    email = email_field()
    password, confirm = _new_password_fields()
    city = _city_field()


class LoginForm(Form):
    email = email_field()
    password = PasswordField(
        "Password",
        validators=[InputRequired("Please enter your password.")],
        render_kw={"autocomplete": "current-password"},
    )
    remember = BooleanField("Keep me logged in on this device")


class ResetRequestForm(Form):
    email = email_field()


class ResetPasswordForm(Form):
    password, confirm = _new_password_fields("New password")


class ProfileForm(Form):
    display_name = _display_name_field()
    city = _city_field()


class ChangeEmailForm(Form):
    email = email_field("New email address")
    current_password = _current_password_field("email")


class ChangePasswordForm(Form):
    current_password = _current_password_field("password")
    password, confirm = _new_password_fields("New password")


class DeleteAccountForm(Form):
    current_password = _current_password_field("delete")
    understood = BooleanField(
        "I understand that my account will be deleted for good",
        validators=[InputRequired("Please tick the box to confirm.")],
    )


class ApiTokenForm(Form):
    name = text_field("Token name", 80, help="What it is for, e.g. “Chapter spreadsheet”.")
