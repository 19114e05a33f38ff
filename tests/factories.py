"""Test data built through the same services the views and jobs use. Call inside an app context."""

from __future__ import annotations

import itertools
from datetime import timedelta

from sqlalchemy import select

from core.db import utcnow
from core.extensions import db
from members.models import Member
from petitions import services
from petitions.models import Petition, Signature
from petitions.services import SignerDetails, SignOutcome

PASSWORD = "correct horse battery"

_addresses = itertools.count(1)


def make_member(
    email: str = "olga@example.org", name: str = "Olga Organiser", city: str = "Lisbon"
) -> Member:
    """A confirmed member who can log in with PASSWORD."""
    member = Member(display_name=name, email=email, password=PASSWORD, city=city)
    member.email_confirmed_at = utcnow()
    db.session.add(member)
    db.session.commit()
    return member


def member_by_email(email: str) -> Member | None:
    return db.session.scalar(select(Member).where(Member.email == email))


def make_petition(organiser: Member, *, publish: bool = True, **fields) -> Petition:
    """A petition by ``organiser``, open unless ``publish`` is False."""
    values = {
        "title": "Fair pay for couriers",
        "ask": "Set a minimum rate per delivery for every platform in the city.",
        "decision_maker_name": "Carla Mendes",
        "decision_maker_role": "Mayor of Lisbon",
        "city": "Lisbon",
        "topic": "delivery",
        "goal": 100,
        "closes_at": utcnow() + timedelta(days=30),
        **fields,
    }
    petition = services.create_petition(organiser, **values)
    if publish:
        services.publish(petition)
    return petition


def add_signature(
    petition: Petition,
    name: str = "Xavier Yates",
    *,
    email: str | None = None,
    city: str = "Lisbon",
    comment: str | None = None,
    show_name: bool = True,
    wants_updates: bool = False,
    confirm: bool = True,
) -> Signature:
    """A guest's signature, signed from an address of its own and (by default) confirmed."""
    email = email or f"{name.lower().replace(' ', '.')}@example.org"
    details = SignerDetails(name, email, city, comment, show_name, wants_updates)
    outcome = services.sign(petition, details, address=f"198.51.100.{next(_addresses)}")
    assert outcome == SignOutcome.CHECK_EMAIL
    signature = db.session.scalar(
        select(Signature).where(Signature.petition_id == petition.id, Signature.email == email)
    )
    if confirm:
        assert services.confirm_signature(signature)
    return signature


def add_signatures(petition: Petition, count: int, **options) -> list[Signature]:
    """``count`` signatures from x0@example.org, x1@example.org, ..."""
    return [add_signature(petition, email=f"x{n}@example.org", **options) for n in range(count)]
