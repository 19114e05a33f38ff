"""Email: rendering from templates/email/ and delivery through the configured backend.

``MAIL_URL`` picks the backend:
- ``outbox``: each message is written as an RFC 5322 ``.eml`` file to instance/outbox/;
- ``smtp://user:pass@host:port`` (``?starttls=1`` to upgrade) or ``smtps://...``.

Only RQ jobs call :func:`send`; web requests queue jobs instead.
"""

from __future__ import annotations

import smtplib
import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from flask import current_app, render_template

from core.config import OUTBOX_MAIL


class MailError(Exception):
    """Delivery failed."""


class TemporaryMailError(MailError):
    """Worth retrying later: a 4xx reply, a refused or dropped connection."""


class PermanentMailError(MailError):
    """Retrying will not help: a 5xx reply to this message."""


class AddressRefused(PermanentMailError):
    """The server refused the recipient's address itself, for good."""


# Long unsubscribe URLs must stay on one raw header line for mail clients to read them.
MAIL_POLICY = SMTP_POLICY.clone(max_line_length=998)


def render(
    template: str, to: str, *, headers: dict[str, str] | None = None, **context: Any
) -> EmailMessage:
    """Render ``email/<template>.txt`` and ``.html`` into one multipart/alternative message.

    The text template sets the subject with ``{% set subject = "..." %}``.
    """
    context.setdefault("base_url", current_app.config["BASE_URL"])
    text_template = current_app.jinja_env.get_template(f"email/{template}.txt")
    current_app.update_template_context(context)
    text_module = text_template.make_module(context)
    message = EmailMessage(policy=MAIL_POLICY)
    subject = str(getattr(text_module, "subject", "Groundswell"))
    message["Subject"] = " ".join(subject.split())  # no stray line breaks from user titles
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = to
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="groundswell.localhost")
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(str(text_module))
    message.add_alternative(render_template(f"email/{template}.html", **context), subtype="html")
    return message


class Connection(Protocol):
    def send(self, message: EmailMessage) -> None: ...


class OutboxConnection:
    """Writes each message to a file, for development and tests."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def send(self, message: EmailMessage) -> None:
        name = f"{uuid.uuid1().hex}.eml"  # time-ordered names list in sending order
        temporary = self.folder / f".{name}.tmp"
        temporary.write_bytes(message.as_bytes(policy=MAIL_POLICY))
        temporary.rename(self.folder / name)


class SMTPConnection:
    """One SMTP session, reused for every message sent through it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = parse_qs(parts.query)
        host, port = parts.hostname or "localhost", parts.port
        try:
            if parts.scheme == "smtps":
                self.smtp = smtplib.SMTP_SSL(
                    host, port or 465, timeout=30, context=ssl.create_default_context()
                )
            else:
                self.smtp = smtplib.SMTP(host, port or 25, timeout=30)
                if options.get("starttls", ["0"])[0] in ("1", "true", "yes"):
                    self.smtp.starttls(context=ssl.create_default_context())
            if parts.username:
                self.smtp.login(unquote(parts.username), unquote(parts.password or ""))
        except (OSError, smtplib.SMTPException) as error:
            # Even a 5xx here (a wrong password, say) says nothing about the recipients.
            raise TemporaryMailError(str(error)) from error

    def send(self, message: EmailMessage) -> None:
        try:
            refused = self.smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            raise _classify(code, reply, refused_address=True) from error
        except smtplib.SMTPResponseException as error:
            raise _classify(error.smtp_code, error.smtp_error) from error
        except (OSError, smtplib.SMTPException) as error:
            raise TemporaryMailError(str(error)) from error
        if refused:
            code, reply = next(iter(refused.values()))
            raise _classify(code, reply, refused_address=True)

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (OSError, smtplib.SMTPException):
            self.smtp.close()


def _classify(code: int, reply: bytes | str, *, refused_address: bool = False) -> MailError:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    if not 500 <= code < 600:
        return TemporaryMailError(f"{code} {text}")
    return (AddressRefused if refused_address else PermanentMailError)(f"{code} {text}")


def outbox_folder() -> Path:
    """Where the outbox backend writes messages."""
    return Path(current_app.instance_path) / "outbox"


@contextmanager
def connection() -> Iterator[Connection]:
    """Open one delivery connection for a batch of messages."""
    url = current_app.config["MAIL_URL"]
    if url == OUTBOX_MAIL:
        yield OutboxConnection(outbox_folder())
        return
    smtp = SMTPConnection(url)
    try:
        yield smtp
    finally:
        smtp.close()


def send(message: EmailMessage) -> None:
    """Deliver one message now. Raises TemporaryMailError or PermanentMailError."""
    with connection() as conn:
        conn.send(message)


def deliver(template: str, to: str, **context: Any) -> bool:
    """Render and send one message from a job.

    Returns False when the address refused it for good (the failure is logged and
    dropped); temporary failures propagate so that RQ retries the job.
    """
    message = render(template, to, **context)
    try:
        send(message)
    except PermanentMailError as error:
        current_app.logger.warning("permanent mail failure to %s: %s", to, error)
        return False
    return True
