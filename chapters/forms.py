"""Forms for founding and running chapters, scheduling meetups and voting on proposals."""

from __future__ import annotations

from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    IntegerField,
    RadioField,
    SelectField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, NumberRange, Optional, ValidationError

from chapters.models import CHOICE_LABELS
from chapters.services import FIRST_YEAR, LAST_YEAR, TIME_ZONES
from core.forms import Form, link_field, text_area, text_field

# The browser's datetime-local format first, so edit forms render values it understands.
LOCAL_TIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]


def _time_zone_field() -> SelectField:
    return SelectField(
        "Time zone",
        description="Meetup times are shown in this zone.",
        choices=[SelectChoice("", "Choose a time zone")]
        + [SelectChoice(zone, zone.replace("_", " ")) for zone in TIME_ZONES],
        validators=[InputRequired("Please choose a time zone.")],
    )


def _local_time(label: str, missing: str, help: str = "") -> DateTimeLocalField:
    return DateTimeLocalField(
        label,
        description=help,
        format=LOCAL_TIME_FORMATS,
        validators=[InputRequired(missing), _within_the_years],
        invalid_value_message="Please give a date and time, like 2026-05-14 18:30.",
    )


def _within_the_years(form, field) -> None:
    if field.data and not FIRST_YEAR <= field.data.year <= LAST_YEAR:
        raise ValidationError(f"Please give a date between the years {FIRST_YEAR} and {LAST_YEAR}.")


class ChapterForm(Form):
    name = text_field("Chapter name", 100, minimum=3, help="e.g. “Lisbon Hosts and Riders”.")
    city = text_field("City", 80, minimum=2)
    time_zone = _time_zone_field()
    description = text_area(
        "What the chapter is for",
        5000,
        minimum=20,
        help="Who it brings together and what it works on. Markdown is allowed.",
    )


class SettingsForm(Form):
    description = ChapterForm.description
    time_zone = _time_zone_field()
    members_can_schedule = BooleanField("Any member may schedule meetups")
    quorum_percent = IntegerField(
        "Quorum: share of members who must vote (%)",
        validators=[
            InputRequired("Please give a percentage."),
            NumberRange(0, 100, "Please give a percentage from 0 to 100."),
        ],
    )
    quorum_minimum = IntegerField(
        "Quorum: fewest votes for a decision",
        validators=[
            InputRequired("Please give a number of votes."),
            NumberRange(1, 10000, "Please give a number from 1 to 10,000."),
        ],
    )


class MeetupForm(Form):
    title = text_field("Title", 150, minimum=5)
    description = text_area("Description", 5000, minimum=10, help="Markdown is allowed.")
    starts = _local_time(
        "Start", "Please give the start date and time.", help="In the chapter's time zone."
    )
    ends = _local_time("End", "Please give the end date and time.")
    venue = text_field("Venue", 150, required=False, help="e.g. “Café Lua, back room”.")
    address = text_field("Address", 300, required=False)
    online_link = link_field("Online link", "For an online meetup, or a stream of this one.")
    capacity = IntegerField(
        "Capacity",
        description="Leave empty for no limit. When it is full, RSVPs join a waitlist.",
        validators=[Optional(), NumberRange(1, 100000, "Please give a number from 1 to 100,000.")],
    )

    def validate_ends(self, field) -> None:
        if field.data and self.starts.data and field.data <= self.starts.data:
            raise ValidationError("The end must be after the start.")

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        # Each place field is optional alone, so the rule for all three lives here.
        if not (self.venue.data or self.address.data or self.online_link.data):
            self.venue.errors = [
                *self.venue.errors,
                "Please give a venue, an address or an online link.",
            ]
            valid = False
        return valid


class ProposalForm(Form):
    title = text_field("Proposal", 150, minimum=5, help="What the chapter decides, in a line.")
    details = text_area(
        "Details", 5000, minimum=10, help="Background and what happens if it passes."
    )
    closes = _local_time(
        "Voting closes",
        "Please give the closing date and time.",
        help="In the chapter's time zone; from an hour to 90 days away.",
    )


class VoteForm(Form):
    choice = RadioField(
        "Your vote",
        choices=[SelectChoice(value, label) for value, label in CHOICE_LABELS.items()],
        validators=[InputRequired("Please choose agree, abstain, disagree or block.")],
    )
    reason = text_area("Reason", 1000, required=False)


class ImportForm(Form):
    export = FileField(
        "Chapter export file",
        description="The .json file exported from a chapter's manage page on any Groundswell.",
        validators=[FileRequired("Please choose the export file.")],
    )
