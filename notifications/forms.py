"""The notification preferences form."""

from __future__ import annotations

from wtforms import RadioField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired

from core.forms import Form
from notifications.models import CATEGORY_LABELS, FREQUENCY_LABELS, Category


def _frequency_field(label: str) -> RadioField:
    return RadioField(
        label,
        choices=[SelectChoice(value, text) for value, text in FREQUENCY_LABELS.items()],
        validators=[InputRequired("Please choose how often.")],
    )


class PreferencesForm(Form):
    """One choice per category: immediately, in a daily digest, or off."""

    petitions = _frequency_field(CATEGORY_LABELS[Category.PETITIONS])
    campaigns = _frequency_field(CATEGORY_LABELS[Category.CAMPAIGNS])
    meetups = _frequency_field(CATEGORY_LABELS[Category.MEETUPS])
    decisions = _frequency_field(CATEGORY_LABELS[Category.DECISIONS])
