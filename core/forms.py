"""Form pieces shared by every feature: the base form and the invalid-form status."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import abort, g, has_request_context, request
from flask_wtf import FlaskForm
from flask_wtf.form import SUBMIT_METHODS
from werkzeug.datastructures import CombinedMultiDict, FileStorage, ImmutableMultiDict, MultiDict
from wtforms import EmailField, FileField, StringField, TextAreaField, URLField
from wtforms.validators import (
    DataRequired,
    Email,
    InputRequired,
    Length,
    Optional,
    ValidationError,
)

from core.urls import is_web_link

# The status for a form that was posted but did not validate.
INVALID_FORM_STATUS = 422

_CONTROL_CHARACTERS = {chr(c) for c in range(32) if chr(c) not in "\t\r\n"} | {"\x7f"}


def strip_whitespace(value: Any) -> Any:
    """Filter for text fields: drop surrounding spaces."""
    return value.strip() if isinstance(value, str) else value


def _unusual_characters(field) -> set[str]:
    one_line = isinstance(field, StringField) and not isinstance(field, TextAreaField)
    return unusual_characters(one_line)


def unusual_characters(one_line: bool) -> set[str]:
    """What no text of ours may hold; for input checked outside a form (the API)."""
    # Line breaks belong in text areas only; elsewhere they could split an email header.
    return _CONTROL_CHARACTERS | {"\r", "\n"} if one_line else _CONTROL_CHARACTERS


class Form(FlaskForm):
    """Base for every form: checks the CSRF token and refuses control characters.

    Control characters (NUL above all) are refused here once, because some databases
    reject them and no field of ours has a use for them.
    """

    class Meta(FlaskForm.Meta):
        def wrap_formdata(self, form, formdata):
            # Our forms take form posts only. A JSON body, whatever its shape (a list, a
            # number, nesting too deep to parse), counts as an empty post, so it gets the
            # form's own errors.
            if formdata is not None and has_request_context() and request.is_json:
                return ImmutableMultiDict() if request.method in SUBMIT_METHODS else None
            wrapped = super().wrap_formdata(form, formdata)
            if isinstance(wrapped, CombinedMultiDict):
                return _uploads_in_file_fields_only(form, wrapped)
            return wrapped

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        for field in self:
            if isinstance(field.data, str) and _unusual_characters(field).intersection(field.data):
                field.errors = [*field.errors, "Please remove the unusual characters here."]
                valid = False
        if not valid and has_request_context():
            g.form_refused = True  # the page's title says so, whichever form it was
        return valid


def _uploads_in_file_fields_only(form: FlaskForm, formdata: CombinedMultiDict) -> MultiDict:
    """The posted data without uploads sent for fields that take text: such a field then
    counts as left empty."""
    takes_files = {field.name for field in form._fields.values() if isinstance(field, FileField)}
    return MultiDict(
        (name, value)
        for name, value in formdata.items(multi=True)
        if name in takes_files or not isinstance(value, FileStorage)
    )


def email_field(label: str = "Email address", description: str = "") -> EmailField:
    """An email input with the same limits and messages everywhere."""
    return EmailField(
        label,
        description=description,
        filters=[strip_whitespace],
        validators=[
            InputRequired("Please enter your email address."),
            Length(max=254, message="An email address can be at most 254 characters."),
            Email("Please enter a valid email address, like name@example.org."),
        ],
        render_kw={"autocomplete": "email"},
    )


def link_field(label: str, description: str = "") -> URLField:
    """An optional web link: http or https only, so no link we show can run a script."""
    return URLField(
        label,
        description=description,
        filters=[strip_whitespace],
        validators=[
            Optional(),
            Length(max=500, message="A link can be at most 500 characters."),
            _web_link,
        ],
    )


def _web_link(form, field) -> None:
    if not is_web_link(field.data):
        raise ValidationError("Please give a full link, starting with https://.")


def _text(
    label: str,
    maximum: int,
    *,
    minimum: int = 1,
    help: str = "",
    required: bool = True,
    missing: str = "",
    autocomplete: str | None = None,
):
    # Checked after trimming, so that spaces alone count as nothing written.
    validators = [
        DataRequired(missing or f"Please fill in {label.lower()}.") if required else Optional(),
        Length(
            min=minimum,
            max=maximum,
            message=f"{label} must be {minimum} to {maximum} characters long."
            if minimum > 1
            else f"{label} can be at most {maximum} characters.",
        ),
    ]
    kwargs = {"label": label, "description": help, "filters": [strip_whitespace]}
    if autocomplete:  # browsers fill in the person's own details (WCAG 1.3.5)
        kwargs["render_kw"] = {"autocomplete": autocomplete}
    return validators, kwargs


def text_field(label: str, maximum: int, **options) -> StringField:
    """A one-line text input, trimmed, with its length bounded and explained."""
    validators, kwargs = _text(label, maximum, **options)
    return StringField(validators=validators, **kwargs)


def text_area(label: str, maximum: int, **options) -> TextAreaField:
    """A multi-line text input, trimmed, with its length bounded and explained."""
    validators, kwargs = _text(label, maximum, **options)
    return TextAreaField(validators=validators, **kwargs)


class ActionForm(Form):
    """A form with nothing but its CSRF token, for buttons that change state."""


def require_action_token() -> ActionForm:
    """Refuse a button's post whose CSRF token is missing or stale, before anything
    changes: the error page says to reload and try again. Returns the checked form, for
    a refusal to be shown with."""
    form = ActionForm()
    if not form.validate():
        abort(INVALID_FORM_STATUS)
    return form


def form_page(template: str, form: FlaskForm, status: int | None = None, **context: Any):
    """Render a page holding ``form``: 422 if it was posted and refused, else 200."""
    from flask import render_template

    if status is None:
        status = INVALID_FORM_STATUS if form.is_submitted() and form.errors else 200
    return render_template(template, form=form, **context), status


def refused_page(template: str, status: int = INVALID_FORM_STATUS, **context: Any):
    """Render a page holding several forms after one was refused (422 unless told), with
    the title saying so even when the refusal came from a service, not the form's checks."""
    from flask import render_template

    g.form_refused = True
    return render_template(template, **context), status


def safe_next(target: str | None, fallback: str) -> str:
    """Follow a ``next`` parameter only to a path on this site."""
    return target if target and _is_path_on_this_site(target) else fallback


def _is_path_on_this_site(target: str) -> bool:
    # Browsers drop tabs and line breaks and read a backslash as a slash, so "/\t/evil"
    # and "/\\evil" lead off-site; a line break would also split the Location header.
    if not target.isprintable() or " " in target or "\\" in target:
        return False
    if not target.startswith("/") or target.startswith("//"):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc
