"""Cities: one key per place however people spell it, for grouping and /cities/<slug>."""

from __future__ import annotations

from slugify import slugify


def city_slug(name: str) -> str:
    """A stable key for a city name: "São Paulo" and "sao paulo" both give "sao-paulo"."""
    return slugify(name or "", max_length=80) or "unknown"
