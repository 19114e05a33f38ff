"""Demo accounts for ``flask seed-demo``."""

from __future__ import annotations

import secrets

from core.cli import demo_seeder
from core.db import utcnow
from core.extensions import db
from members.models import Member

DEMO_EMAIL = "demo@groundswell.example.org"

DEMO_PEOPLE = [
    ("Ana Ribeiro", "ana@groundswell.example.org", "Lisbon"),
    ("Jonas Weber", "jonas@groundswell.example.org", "Berlin"),
    ("Marta Puig", "marta@groundswell.example.org", "Barcelona"),
    ("Sam Okafor", "sam@groundswell.example.org", "London"),
]


@demo_seeder(order=10)
def seed_members() -> list[str]:
    """A confirmed demo member whose login is printed, and a few neighbours."""
    password = secrets.token_urlsafe(9)
    demo = Member(display_name="Demo Organiser", email=DEMO_EMAIL, password=password, city="Lisbon")
    people = [
        Member(display_name=name, email=email, password=secrets.token_urlsafe(12), city=city)
        for name, email, city in DEMO_PEOPLE
    ]
    for member in [demo, *people]:
        member.email_confirmed_at = utcnow()
        db.session.add(member)
    db.session.flush()
    return [f"Demo login: {DEMO_EMAIL}  password: {password}"]
