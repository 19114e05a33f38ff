"""Email: rendering from templates/email/ and delivery through the configured backend.

``MAIL_URL`` picks the backend:
- ``outbox``: each message is written as an RFC 5322 ``.eml`` file to instance/outbox/;
- ``smtp://user:pass@host:port`` (``?starttls=1`` to upgrade) or ``smtps://...``.

Only RQ jobs call :func:`send`; web requests queue jobs instead.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from email_validator import EmailNotValidError, validate_email
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


logger = logging.getLogger(__name__)


# The standard library's original MIME classes write a message in half the time the
# newer ``EmailMessage`` API takes (about 0.7 ms against 1.4 ms), a large share of a
# fan-out's cost. Lines end in CRLF, as SMTP wants them; long unsubscribe URLs must stay
# on one raw header line for mail clients to read them.
LONGEST_LINE = 998  # what SMTP allows in a line


class _MailPolicy(Compat32):
    """``compat32``, except that a header value of plain ASCII that fits on its line is
    written as it is: folding it would give the same line, through a dozen calls a header."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if isinstance(value, str) and value.isascii() and _one_line(value):
            line = f"{name}: {value}"
            if len(line) <= self.max_line_length:
                return line + self.linesep
        return super()._fold(name, value, sanitize)


def _one_line(value: str) -> bool:
    # Folding splits on every line boundary ``splitlines`` knows, form feeds included.
    return value.splitlines() in ([], [value])


MAIL_POLICY = _MailPolicy(linesep="\r\n", max_line_length=LONGEST_LINE, mangle_from_=False)
# Plain ASCII goes as it is, so links stay whole in the raw message; anything else as
# quoted-printable, which keeps mostly-ASCII text readable where base64 would not.
ASCII = Charset("us-ascii")
UTF8 = Charset("utf-8")
UTF8.header_encoding = UTF8.body_encoding = QP


def _header(value: str) -> str | Header:
    """A header value, as an RFC 2047 encoded word where it is not ASCII."""
    _refuse_line_breaks(value)
    return value if value.isascii() else Header(value, UTF8)


def _refuse_line_breaks(value: str) -> None:
    # A line break would start a header of the sender's choosing.
    if "\r" in value or "\n" in value:
        raise ValueError(f"a line break in the header value {value!r}")


def as_mailed(address: str) -> str:
    """The address as mail servers take it, and so one spelling of one inbox.

    An international domain goes in its ASCII form, so any server can deliver to it; only
    a local part that is not ASCII still needs a server that offers SMTPUTF8.
    """
    if address.isascii():
        return address
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return address
    return checked.ascii_email or checked.normalized


# Providers that deliver name+tag@ to name@, and those that also ignore dots.
PLUS_TAG_DOMAINS = {
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com",
    "fastmail.com", "protonmail.com", "proton.me", "icloud.com",
}  # fmt: skip
DOTLESS_DOMAINS = {"gmail.com", "googlemail.com"}
DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}


def inbox_key(email: str) -> str:
    """One key per inbox, whatever the spelling: case, and the tricks of big providers.

    ``A.B+x@Gmail.com`` and ``ab@gmail.com`` reach the same inbox, so they share a key, as
    do ``rui@exämple.org`` and ``rui@xn--exmple-cua.org``.
    """
    local, _, domain = as_mailed(email.strip()).lower().rpartition("@")
    if domain in PLUS_TAG_DOMAINS:
        local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{DOMAIN_ALIASES.get(domain, domain)}"


def _address_header(address: str) -> str:
    """An address header value; one that is not ASCII goes as raw UTF-8 (RFC 6532).

    An encoded word is not allowed inside an address, so the value is handed to the
    writer as escaped bytes, which it writes as they are.
    """
    _refuse_line_breaks(address)
    return address.encode().decode("ascii", "surrogateescape")


def _envelope_address(message: Message, name: str) -> str:
    """The address in a header written by :func:`_address_header`, as text again."""
    value = next(value for key, value in message.raw_items() if key == name)
    return parseaddr(str(value).encode("ascii", "surrogateescape").decode())[1]


@lru_cache(maxsize=64)  # the sender's address, on every message
def _address(value: str) -> str:
    """The sender's address header, with a display name that may not be ASCII.

    The address itself goes in its ASCII form where it has one; a local part that is not
    ASCII leaves the whole header as raw UTF-8, since an encoded word cannot hold it.
    """
    name, address = parseaddr(value)
    address = as_mailed(address)
    if not address.isascii():
        local, _, domain = address.rpartition("@")
        return _address_header(str(Address(name, local, domain)))
    return str(_header(formataddr((name, address), charset=UTF8)))


def _text_part(body: str, subtype: str) -> MIMEText:
    lines_fit = all(len(line) <= LONGEST_LINE for line in body.splitlines())
    charset = ASCII if body.isascii() and lines_fit else UTF8
    return MIMEText(body, subtype, charset, policy=MAIL_POLICY)


def render(
    template: str,
    to: str,
    *,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
    **context: Any,
) -> Message:
    """Render ``email/<template>.txt`` and ``.html`` into one multipart/alternative message.

    The text template sets the subject with ``{% set subject = "..." %}``. A caller that
    may send the same message again passes its own ``message_id``, so the copy is known
    for what it is.
    """
    context.setdefault("base_url", current_app.config["BASE_URL"])
    text_template = current_app.jinja_env.get_template(f"email/{template}.txt")
    current_app.update_template_context(context)
    text_module = text_template.make_module(context)
    html = render_template(f"email/{template}.html", **context)
    # A random boundary of our own: the writer would otherwise compile a new regular
    # expression for every message to check that its boundary is not in the text.
    message = MIMEMultipart(
        "alternative", boundary=f"=_{secrets.token_hex(16)}", policy=MAIL_POLICY
    )
    subject = str(getattr(text_module, "subject", "Groundswell"))
    message["Subject"] = _header(" ".join(subject.split()))  # no stray line breaks
    message["From"] = _address(current_app.config["MAIL_FROM"])
    message["To"] = _address_header(as_mailed(to))
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = _header(message_id or make_msgid(domain=message_domain()))
    for name, value in (headers or {}).items():
        message[name] = _header(value)
    message.attach(_text_part(str(text_module), "plain"))
    message.attach(_text_part(html, "html"))
    return message


def message_domain() -> str:
    """The right-hand side of this installation's Message-IDs: the host it serves."""
    return urlsplit(current_app.config["BASE_URL"]).hostname or "groundswell.localhost"


HandedOver = Callable[[], None]


class Connection(Protocol):
    def send(self, message: Message, handed_over: HandedOver | None = None) -> None:
        """Deliver ``message``. ``handed_over`` runs the moment the message is the server's
        to accept, before its answer is read, so the caller can record it as sent with
        almost no gap in which a crash could leave a delivered message unrecorded."""


class OutboxConnection:
    """Writes each message to a file, for development and tests."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def send(self, message: Message, handed_over: HandedOver | None = None) -> None:
        name = f"{uuid.uuid1().hex}.eml"  # time-ordered names list in sending order
        temporary = self.folder / f".{name}.tmp"
        temporary.write_bytes(message.as_bytes(policy=MAIL_POLICY))
        temporary.rename(self.folder / name)
        if handed_over is not None:
            handed_over()


# A line that starts with a dot gets another, so that only the final one ends the message.
LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


class SMTPConnection:
    """One SMTP session, reused for every message sent through it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.in_data = False
        self._open()

    def _open(self) -> None:
        parts = urlsplit(self.url)
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
            self.smtp.ehlo_or_helo_if_needed()
            # The final dot goes in a write of its own; without this, Nagle's algorithm
            # may hold it until the server acknowledges the body, a delayed ACK later.
            self.smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, smtplib.SMTPException) as error:
            # Even a 5xx here (a wrong password, say) says nothing about the recipients.
            raise TemporaryMailError(str(error)) from error

    def send(self, message: Message, handed_over: HandedOver | None = None) -> None:
        """One SMTP transaction; ``handed_over`` runs between the final dot and the reply.

        Until the dot, the server discards the message if the connection drops; once the
        dot is written it may accept it. Recording the message as sent right then leaves
        a gap of a few system calls, not a round trip, where a crash could cause a
        second send; a refusal that follows is reported as usual, to correct the record.
        """
        sender = _envelope_address(message, "From")
        recipient = _envelope_address(message, "To")
        data = message.as_bytes(policy=MAIL_POLICY)
        if self.smtp.sock is None:  # the last message's reply was lost with the session
            self._open()
        try:
            self._expect(self.smtp.mail(sender, self._options(sender, recipient)))
            code, reply = self.smtp.rcpt(recipient)
            if code not in (250, 251):
                raise _classify(code, reply, refused_address=True)
            self._expect(self.smtp.docmd("DATA"), 354)
            self.in_data = True
            self.smtp.send(LEADING_DOT.sub(b"..", data).rstrip(b"\r\n") + b"\r\n")
            self.smtp.send(b".\r\n")
            self.in_data = False
            if handed_over is not None:
                handed_over()
            self._read_final_reply()
        except MailError:
            self._reset()
            raise
        except (OSError, smtplib.SMTPException) as error:
            raise TemporaryMailError(str(error)) from error

    def _read_final_reply(self) -> None:
        """The server's answer to a message it has. A refusal corrects the record of
        sending; silence does not. A reply lost to a timeout or a dropped connection says
        nothing, and servers that scan mail can take minutes to answer: the server may have
        the message, so sending it again would make a duplicate."""
        try:
            response = self.smtp.getreply()
        except (OSError, smtplib.SMTPException) as error:  # smtplib has closed the session
            logger.warning("No reply after a message's final dot; kept as sent: %s", error)
            return
        self._expect(response)

    def _options(self, *addresses: str) -> list[str]:
        if all(address.isascii() for address in addresses):
            return []
        if not self.smtp.has_extn("smtputf8"):
            raise PermanentMailError("the server cannot take international addresses")
        return ["SMTPUTF8", "BODY=8BITMIME"]

    @staticmethod
    def _expect(response: tuple[int, bytes], code: int = 250) -> None:
        if response[0] != code:
            raise _classify(*response)

    def _reset(self) -> None:
        # Abandon the transaction but keep the session for the rest of the batch.
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self.smtp.rset()

    def is_alive(self) -> bool:
        try:
            return self.smtp.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def close(self) -> None:
        if self.in_data:  # abandoned mid-message: hang up so the server discards it
            self.smtp.close()
            return
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


KEEP_OPEN_SECONDS = 30

# A worker runs one job after another: between jobs, the last SMTP session stays open
# for a while, so that a stream of one-message jobs (confirmations) does not pay for a
# new connection each.
_kept: dict[str, tuple[SMTPConnection, float]] = {}


def _reuse_or_open(url: str) -> SMTPConnection:
    kept, since = _kept.pop(url, (None, 0.0))
    if kept is not None:
        if time.monotonic() - since < KEEP_OPEN_SECONDS and kept.is_alive():
            return kept
        kept.close()
    return SMTPConnection(url)


@contextmanager
def connection() -> Iterator[Connection]:
    """A delivery connection for a batch of messages: an SMTP session kept from the last
    batch if it still answers, or a new one."""
    url = current_app.config["MAIL_URL"]
    if url == OUTBOX_MAIL:
        yield OutboxConnection(outbox_folder())
        return
    smtp = _reuse_or_open(url)
    try:
        yield smtp
    except BaseException:
        smtp.close()
        raise
    if smtp.in_data:
        smtp.close()
    else:
        _kept[url] = (smtp, time.monotonic())
