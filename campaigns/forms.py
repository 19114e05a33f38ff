"""Forms for launching and running campaigns."""

from __future__ import annotations

from wtforms import IntegerField, RadioField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, NumberRange, Optional

from campaigns.models import AMOUNT_BANDS, FUNDER_KIND_LABELS, Stance, Status
from core.forms import Form, email_field, link_field, text_area, text_field
from core.topics import TOPICS


def _choices(pairs) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in pairs]


def _topic_field(label: str = "Topic", required: bool = True, help: str = "") -> SelectField:
    choices = _choices(TOPICS)
    if not required:
        choices = [SelectChoice("", "Choose one"), *choices]
    return SelectField(
        label,
        description=help,
        choices=choices,
        validators=[InputRequired("Please choose a topic.")] if required else [Optional()],
    )


class CampaignForm(Form):
    title = text_field("Title", 150, minimum=10, help="e.g. “Cap short-term rentals in Alfama”.")
    summary = text_area("Summary", 500, minimum=20, help="Two or three sentences for the list.")
    change_wanted = text_area(
        "The change we want",
        5000,
        minimum=30,
        help="What should change, and why. You can use **bold**, *italics*, lists and links.",
    )
    city = text_field("City or region", 80, minimum=2)
    topic = _topic_field()


class DecisionMakerForm(Form):
    name = text_field(
        "Decision-maker", 150, minimum=2, help="A person or a body, e.g. “Ana Lopes”."
    )
    role = text_field("Role", 150, minimum=2, help="e.g. “Councillor for housing”.")
    body = text_field("Body", 150, minimum=2, help="e.g. “Lisbon City Council”.")


class NewCampaignForm(CampaignForm, DecisionMakerForm):
    """The campaign with its first decision-maker."""


class FundingForm(Form):
    funding = RadioField(
        "Who funds this campaign?",
        choices=_choices(
            [("volunteer", "It is volunteer-run, with no funding"), ("funded", "It has funders")]
        ),
        validators=[InputRequired("Please choose one.")],
    )


class FunderForm(Form):
    name = text_field("Funder's name", 150, minimum=2)
    kind = SelectField(
        "Kind of funder",
        choices=_choices(FUNDER_KIND_LABELS.items()),
        validators=[InputRequired("Please choose a kind.")],
    )
    amount_band = SelectField(
        "Amount",
        choices=_choices(AMOUNT_BANDS.items()),
        validators=[InputRequired("Please choose an amount.")],
    )


class AffiliationForm(Form):
    company = text_field(
        "Company",
        100,
        required=False,
        help="Leave empty if you have no paid relationship with a sharing-economy company.",
    )
    topic = _topic_field(
        "The company's field", required=False, help="Needed if you name a company."
    )
    details = text_field(
        "How are you paid?",
        300,
        required=False,
        help="Needed if you name a company, e.g. “I drive for it”, “paid consultant”.",
    )

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        if self.company.data and not self.topic.data:
            self.topic.errors = [*self.topic.errors, "Please choose the company's field."]
            valid = False
        if self.company.data and not self.details.data:
            self.details.errors = [*self.details.errors, "Please say how you are paid."]
            valid = False
        return valid


def _someone_elses_email(label: str):
    """An email field for another person's address: the browser must not offer one's own."""
    field = email_field(label)
    field.kwargs["render_kw"] = {"autocomplete": "off"}
    _, *checks = field.kwargs["validators"]
    field.kwargs["validators"] = [InputRequired("Please enter their email address."), *checks]
    return field


class OrganiserForm(Form):
    email = _someone_elses_email("Their email address")


class StanceForm(Form):
    stance = SelectField(
        "Stance",
        choices=_choices((s.value, s.value.capitalize()) for s in Stance),
        validators=[InputRequired("Please choose a stance.")],
    )
    note = text_area("Note", 1000, minimum=5, help="What did they say or do?")
    source_url = link_field("Source link")


class StatusForm(Form):
    status = SelectField(
        "Status",
        choices=_choices((s.value, s.value.capitalize()) for s in Status),
        validators=[InputRequired("Please choose a status.")],
    )
    note = text_area("Note", 1000, minimum=5, help="Why is the status changing?")


class UpdateForm(Form):
    title = text_field("Headline", 150, minimum=5)
    body = text_area("Update", 5000, minimum=20, help="Emailed to the campaign's followers.")


class FollowForm(Form):
    name = text_field("Your name", 100, minimum=2, autocomplete="name")
    email = email_field(description="We send you a link to confirm.")


class AttachForm(Form):
    kind = SelectField(
        "What to attach",
        choices=_choices([("petition", "Petition"), ("meetup", "Meetup")]),
        validators=[InputRequired("Please choose petition or meetup.")],
    )
    target_id = IntegerField(
        "Its number",
        description="The number at the end of its address, e.g. 12 for /petitions/12.",
        validators=[
            InputRequired("Please enter a whole number."),
            NumberRange(min=1, max=2**31 - 1, message="Please enter a number from the address."),
        ],
    )
