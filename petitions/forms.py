"""Forms for launching, signing and organising petitions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from wtforms import (
    BooleanField,
    DateField,
    IntegerField,
    SelectField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    InputRequired,
    NumberRange,
    ValidationError,
)

from core.forms import Form, email_field, strip_whitespace, text_area, text_field
from core.topics import TOPICS
from petitions.models import DEFAULT_OPEN_DAYS, MAX_OPEN_DAYS


def _default_closing_day() -> date:
    return datetime.now(UTC).date() + timedelta(days=DEFAULT_OPEN_DAYS)


class PetitionForm(Form):
    title = text_field(
        "Title",
        150,
        minimum=10,
        help="Say what you want in one line, e.g. “Cap holiday lets in Alfama”.",
    )
    ask = text_area(
        "What should the decision-maker do?",
        5000,
        minimum=30,
        missing="Please say what the decision-maker should do.",
        help="The text people sign. You can use **bold**, *italics*, lists and links.",
    )
    decision_maker_name = text_field(
        "Decision-maker",
        150,
        minimum=2,
        help="Who can make this happen, e.g. “City Council of Barcelona”.",
    )
    decision_maker_role = text_field(
        "Their role", 150, minimum=2, help="e.g. “Municipal government” or “Minister of Transport”."
    )
    city = text_field("City or region", 80, minimum=2)
    topic = SelectField(
        "Topic",
        choices=[SelectChoice(key, label) for key, label in TOPICS],
        validators=[InputRequired("Please choose a topic.")],
    )
    goal = IntegerField(
        "Signature goal",
        default=1000,
        validators=[
            InputRequired("Please enter a whole number of signatures."),
            NumberRange(min=10, max=10_000_000, message="Choose a goal between 10 and 10,000,000."),
        ],
    )
    closes_on = DateField(
        "Closing date",
        default=_default_closing_day,
        description=(
            f"The last day to sign, to midnight UTC; at most {MAX_OPEN_DAYS - 1} days from today."
        ),
        validators=[InputRequired("Please enter a date as YYYY-MM-DD.")],
    )

    def validate_closes_on(self, field: DateField) -> None:
        today = datetime.now(UTC).date()
        if field.data is None:
            return
        if field.data < today:
            raise ValidationError("The closing date cannot be in the past.")
        if field.data > today + timedelta(days=MAX_OPEN_DAYS - 1):
            raise ValidationError("A petition can stay open for at most a year.")


class _SignatureOptions(Form):
    comment = text_area("Why are you signing? (shown publicly)", 500, required=False)
    show_name = BooleanField("Show my name on the petition")
    wants_updates = BooleanField("Email me updates from the organiser of this petition")
    # Hidden from people; bots fill it in.
    website = StringField("Leave this field empty", filters=[strip_whitespace])


class SignForm(_SignatureOptions):
    name = text_field("Your name", 100, minimum=2, autocomplete="name")
    email = email_field(description="We send you a link to confirm your signature.")
    city = text_field("City or postcode", 80, minimum=2, autocomplete="address-level2")


class MemberSignForm(_SignatureOptions):
    """One click for a confirmed member: name, email and city come from the account."""


class UpdateForm(Form):
    title = text_field("Headline", 150, minimum=5)
    body = text_area("Update", 5000, minimum=20, help="Emailed to signers who asked for updates.")


class VictoryForm(Form):
    note = text_area(
        "What was won?",
        2000,
        minimum=20,
        missing="Please say what was won.",
        help="Shown on the petition page.",
    )


class HideForm(Form):
    reason = text_area("Reason", 500, minimum=5, help="Shown to the organiser.")


class EmbedSignForm(SignForm):
    """The signature form inside another site's iframe.

    It has no CSRF token: browsers withhold our session cookie from third-party frames,
    and a forged post can do no more than ask someone to confirm by email.
    """

    class Meta:
        csrf = False
