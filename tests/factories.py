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


# --- campaigns -------------------------------------------------------------------------------
# Imports stay inside the helpers so this section only appends to the module.


def make_campaign(owner: Member, *, publish: bool = True, **fields):
    """A campaign by ``owner`` with one decision-maker; volunteer-run and published by default.

    With ``publish=False`` the campaign is saved without any disclosure.
    """
    from campaigns import services as campaigns

    values = {
        "title": "Keep Alfama lived in",
        "summary": "Residents ask for a cap on holiday lets in the historic centre.",
        "change_wanted": (
            "A cap of one holiday let in five homes, and a public register of licences."
        ),
        "city": "Lisbon",
        "topic": "short-term-rentals",
        "decision_maker": {
            "name": "Filipa Matos",
            "role": "Councillor for housing",
            "body": "Lisbon City Council",
        },
        **fields,
    }
    campaign = campaigns.create_campaign(owner, **values)
    if publish:
        disclose(campaign)
        campaigns.publish(campaign)
    return campaign


def disclose(campaign, funding: str = "volunteer") -> None:
    """Complete the disclosure: the funding, and "none" for every organiser yet to declare."""
    from campaigns import services as campaigns
    from campaigns.models import Funding

    campaigns.set_funding(campaign, Funding(funding))
    for organiser in campaign.organisers:
        if organiser.affiliation_declared_at is None:
            campaigns.declare_affiliation(organiser, company=None, topic=None, details=None)


def add_co_organiser(campaign, member: Member, *, declare: bool = True):
    """``member`` accepts the owner's invitation; by default they then declare "no paid
    relationship"."""
    from campaigns import services as campaigns

    campaigns.invite_organiser(campaign, campaign.owner.member, member.email)
    invitation = campaigns.invitation_to(campaign, member)
    organiser = campaigns.accept_invitation(invitation, member)
    if declare:
        campaigns.declare_affiliation(organiser, company=None, topic=None, details=None)
    return organiser


# --- chapters --------------------------------------------------------------------------------


def make_chapter(founder: Member, *members: Member, **fields):
    """A chapter founded by ``founder`` and joined by ``members`` (active from three)."""
    from chapters import services as chapters

    values = {
        "name": "Lisbon Hosts and Riders",
        "city": "Lisbon",
        "time_zone": "Europe/Lisbon",
        "description": "Hosts, drivers and couriers in Lisbon who want fair, local rules.",
        **fields,
    }
    chapter = chapters.create_chapter(founder, **values)
    for member in members:
        chapters.join(chapter, member)
    return chapter


def make_meetup(chapter, organiser: Member, *, starts_in: timedelta = timedelta(days=3), **fields):
    """A two-hour meetup of ``chapter`` starting ``starts_in`` from now."""
    from chapters import services as chapters

    starts = utcnow() + starts_in
    values = {
        "title": "Planning night",
        "description": "We plan the next month of the campaign.",
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=2),
        "venue": "Café Lua",
        "address": "Rua dos Remédios 12, Lisbon",
        "online_link": None,
        "capacity": None,
        **fields,
    }
    return chapters.schedule_meetup(chapter, organiser, chapters.MeetupDetails(**values))
