"""Demo campaigns for ``flask seed-demo``: one volunteer-run, one industry-backed."""

from __future__ import annotations

from sqlalchemy import select

from campaigns import services
from campaigns.models import Funding, Stance
from core.cli import demo_seeder
from core.extensions import db
from members.models import Member


def _member(email: str) -> Member | None:
    return db.session.scalar(select(Member).where(Member.email == email))


@demo_seeder(order=30)
def seed_campaigns() -> list[str]:
    """A published campaign in Lisbon and one in Berlin, with disclosures and stances."""
    demo, ana, jonas = (
        _member("demo@groundswell.example.org"),
        _member("ana@groundswell.example.org"),
        _member("jonas@groundswell.example.org"),
    )
    lisbon = services.create_campaign(
        demo,
        title="Keep Alfama lived in",
        summary="Residents and hosts together for a cap on short-term rentals in Alfama.",
        change_wanted="A cap of one holiday let in five homes in Alfama, and a public register.",
        city="Lisbon",
        topic="short-term-rentals",
        decision_maker={
            "name": "Filipa Matos",
            "role": "Councillor for housing",
            "body": "Lisbon City Council",
        },
    )
    services.invite_organiser(lisbon, demo, ana.email)
    services.accept_invitation(services.invitation_to(lisbon, ana), ana)
    services.set_funding(lisbon, Funding.VOLUNTEER)
    for organiser in lisbon.organisers:
        services.declare_affiliation(organiser, company=None, topic=None, details=None)
    services.publish(lisbon)
    maker = lisbon.decision_makers[0]
    services.record_stance(
        lisbon,
        maker.id,
        stance=Stance.UNDECIDED,
        note="Said at the assembly she is listening.",
        source_url=None,
    )
    services.attach_work(lisbon, "petition", 1, demo)
    services.follow_as_member(lisbon, ana)

    berlin = services.create_campaign(
        jonas,
        title="Minimum pay per delivery in Berlin",
        summary="Couriers ask the Senate for pay that covers waiting time.",
        change_wanted="A minimum payment per delivery, including waiting time at restaurants.",
        city="Berlin",
        topic="delivery",
        decision_maker={
            "name": "Senate Department for Labour",
            "role": "Ministry",
            "body": "Berlin Senate",
        },
    )
    services.add_funder(berlin, name="Couriers' Union Berlin", kind="union", amount_band="1k-10k")
    services.add_funder(berlin, name="QuickBite GmbH", kind="company", amount_band="under-1k")
    services.declare_affiliation(
        berlin.organisers[0], company="QuickBite", topic="delivery", details="I deliver for it."
    )
    services.publish(berlin)
    return ["Demo campaigns: 2"]
