"""URL converters shared by every blueprint."""

from __future__ import annotations

from werkzeug.routing import IntegerConverter, Map

MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """A database id in a URL: a positive integer that fits every database's integer column."""

    # ASCII digits only: ``\d`` would also take other scripts' digits, giving one page
    # many addresses.
    regex = r"[0-9]+"

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)
