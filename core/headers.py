"""The security headers every response carries."""

from __future__ import annotations

from flask import Response

# Scripts and everything else come only from our own files: text or a link someone slipped
# past the checks cannot run as script (no inline script, no javascript: links). Inline
# style attributes are allowed because progress bars are drawn with them.
_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors {frame_ancestors}"
)


def content_security_policy(frame_ancestors: str = "'self'") -> str:
    """The policy for a page that may be framed by ``frame_ancestors`` (embeds: ``*``)."""
    return _POLICY.format(frame_ancestors=frame_ancestors)


def add_default_headers(response: Response) -> Response:
    """Our pages may be framed only by ourselves, unless a view says otherwise (embeds)."""
    response.headers.setdefault("Content-Security-Policy", content_security_policy())
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    return response
