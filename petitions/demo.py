"""Demo petitions with signatures, for ``flask seed-demo``."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from core import mail
from core.cli import demo_seeder
from core.db import utcnow
from core.extensions import db
from core.places import city_slug
from members.models import Member
from petitions import services
from petitions.models import Petition, PetitionState, Signature, SignatureState

DEMO_PETITIONS = [
    (
        "demo@groundswell.example.org",
        "Cap short-term rentals in Alfama at one in five homes",
        "Limit new short-term rental licences in Alfama so that at least four in five homes "
        "are lived in all year, and publish the licence register every month.",
        ("Lisbon City Council", "Municipal government"),
        "Lisbon",
        "short-term-rentals",
        500,
        320,
    ),
    (
        "jonas@groundswell.example.org",
        "Minimum pay per delivery for Berlin couriers",
        "Set a minimum payment per delivery that covers waiting time at restaurants, and "
        "require platforms to publish how pay is calculated.",
        ("Berlin Senate Department for Labour", "State government"),
        "Berlin",
        "delivery",
        1000,
        140,
    ),
    (
        "marta@groundswell.example.org",
        "Fair licence fees for Barcelona ride-hailing drivers",
        "Bring the licence fee for individual ride-hailing drivers in line with taxi "
        "licences, and let drivers who own their car apply directly.",
        ("Barcelona Metropolitan Area", "Transport authority"),
        "Barcelona",
        "ride-hailing",
        250,
        60,
    ),
    (
        "sam@groundswell.example.org",
        "Safe parking bays for London cargo bikes",
        "Create loading bays for cargo bikes on every high street in Hackney within two "
        "years, so couriers stop risking fines and collisions.",
        ("Hackney Council", "Borough council"),
        "London",
        "delivery",
        100,
        12,
    ),
]

SIGNER_NAMES = ["Inês", "Tomás", "Lena", "Karim", "Jordi", "Aisha", "Piotr", "Maya", "Noor", "Leo"]
SIGNER_CITIES = ["Lisbon", "Porto", "Berlin", "Barcelona", "London", "Madrid"]


def _signatures(petition: Petition, count: int) -> list[Signature]:
    now = utcnow()
    signatures = []
    for n in range(count):
        city = SIGNER_CITIES[0] if n % 3 else SIGNER_CITIES[n % len(SIGNER_CITIES)]
        if n % 4 == 0:
            city = petition.city
        signed_at = now - timedelta(hours=(count - n) * 30 / max(count, 1) * 24 / 10)
        email = f"signer{n}.p{petition.id}@example.org"
        signatures.append(
            Signature(
                petition_id=petition.id,
                name=f"{SIGNER_NAMES[n % len(SIGNER_NAMES)]} {chr(65 + n % 26)}.",
                email=email,
                email_key=mail.inbox_key(email),
                city=city,
                city_slug=city_slug(city),
                comment="This affects my street every day." if n % 7 == 0 else None,
                show_name=n % 2 == 0,
                wants_updates=n % 3 == 0,
                state=SignatureState.CONFIRMED,
                created_at=signed_at,
                confirmed_at=signed_at,
            )
        )
    return signatures


@demo_seeder(order=20)
def seed_petitions() -> list[str]:
    """Open petitions in four cities, with confirmed signatures spread over recent weeks."""
    for email, title, ask, (maker, role), city, topic, goal, signed in DEMO_PETITIONS:
        organiser = db.session.scalar(select(Member).where(Member.email == email))
        petition = Petition(
            organiser_id=organiser.id if organiser else None,
            title=title,
            ask=ask,
            decision_maker_name=maker,
            decision_maker_role=role,
            city=city,
            city_slug=city_slug(city),
            topic=topic,
            goal=goal,
            closes_at=Petition.default_closing_date(),
            state=PetitionState.OPEN,
            opened_at=utcnow() - timedelta(days=30),
        )
        db.session.add(petition)
        db.session.flush()
        db.session.add_all(_signatures(petition, signed))
        db.session.flush()
        services.reconcile(petition.id)
    return [f"Demo petitions: {len(DEMO_PETITIONS)}"]
