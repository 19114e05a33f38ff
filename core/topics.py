"""The sharing-economy topics that petitions and campaigns are filed under. One list, here."""

from __future__ import annotations

TOPICS: list[tuple[str, str]] = [
    ("short-term-rentals", "Short-term rentals"),
    ("ride-hailing", "Ride-hailing"),
    ("delivery", "Delivery and courier work"),
    ("car-sharing", "Car sharing"),
    ("home-sharing", "Home sharing"),
    ("other", "Other"),
]

TOPIC_LABELS = dict(TOPICS)


def topic_label(key: str) -> str:
    """The readable name of a topic key."""
    return TOPIC_LABELS.get(key, key)
