"""The campaign story: launching, organisers, disclosure, decision-makers, status, updates,
followers, linked work and finding campaigns.

Views and jobs call these functions; they take models or ids and return results.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError

from campaigns.models import (
    AMOUNT_BANDS,
    FUNDER_KIND_LABELS,
    Campaign,
    CampaignError,
    CampaignOrganiser,
    CampaignUpdate,
    DecisionMaker,
    DisclosureRecord,
    Follower,
    Funder,
    Funding,
    LinkedWork,
    Stance,
    Status,
    StatusChange,
)
from core.db import Page, paginate, utcnow
from core.extensions import db
from core.hooks import WorkSummary, collect, linked_work, work_organised_by
from core.places import city_slug
from core.tokens import make_token, read_token
from core.topics import topic_label
from core.urls import external_url
from members.models import Member
from members.signals import data_export
from notifications.services import Recipient, address_confirmed, notify

FOLLOW_PURPOSE = "confirm-follow"
FOLLOW_MAX_AGE = 7 * 24 * 3600
PER_PAGE = 20
WORK_KINDS = ("petition", "meetup")


# --- launching and organising --------------------------------------------------------------


def create_campaign(owner: Member, *, decision_maker: dict[str, str], **fields: Any) -> Campaign:
    """Save a new, unpublished campaign with its founder as owner and first decision-maker."""
    campaign = Campaign(city_slug=city_slug(fields["city"]), status=Status.ACTIVE, **fields)
    campaign.organisers.append(CampaignOrganiser(member_id=owner.id, is_owner=True))
    campaign.decision_makers.append(DecisionMaker(stance=Stance.UNKNOWN, **decision_maker))
    db.session.add(campaign)
    db.session.commit()
    return campaign


def edit_campaign(campaign: Campaign, **fields: Any) -> None:
    """Change the campaign's description; a topic change that moves the label is recorded."""
    was_backed = campaign.industry_backed
    for name, value in fields.items():
        setattr(campaign, name, value)
    campaign.city_slug = city_slug(campaign.city)
    if campaign.industry_backed != was_backed:
        _record_disclosure(campaign)
    db.session.commit()


def visible_campaign(campaign_id: int, viewer: Member | None) -> Campaign | None:
    """The campaign if ``viewer`` may see it: unpublished ones only by their organisers."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.is_published or campaign.is_organised_by(viewer):
        return campaign
    return None


def add_organiser(campaign: Campaign, email: str) -> CampaignOrganiser:
    """Make the member with this account email a co-organiser."""
    member = db.session.scalar(select(Member).where(Member.email == email.strip().lower()))
    if member is None:
        raise CampaignError("No member has that email address. Ask them to join first.")
    if campaign.is_organised_by(member):
        raise CampaignError(f"{member.display_name} already organises this campaign.")
    organiser = CampaignOrganiser(member_id=member.id, is_owner=False)
    campaign.organisers.append(organiser)
    _record_disclosure(campaign)  # a new organiser has not declared yet
    return organiser


def remove_organiser(campaign: Campaign, organiser_id: int) -> None:
    """Remove a co-organiser; the owner stays."""
    organiser = next((o for o in campaign.organisers if o.id == organiser_id), None)
    if organiser is None:
        raise CampaignError("That person does not organise this campaign.")
    if organiser.is_owner:
        raise CampaignError("The owner cannot be removed.")
    campaign.organisers.remove(organiser)
    _record_disclosure(campaign)


def publish(campaign: Campaign) -> None:
    """Make the campaign public; refused until its disclosure is complete."""
    campaign.publish()
    db.session.commit()


# --- disclosure ---------------------------------------------------------------------------


def set_funding(campaign: Campaign, funding: Funding) -> None:
    """Declare the campaign volunteer-run, or funded (funders listed separately)."""
    campaign.funding = funding
    if funding == Funding.VOLUNTEER:
        campaign.funders.clear()
    _record_disclosure(campaign)


def add_funder(campaign: Campaign, *, name: str, kind: str, amount_band: str) -> None:
    """List a funder; the campaign is then declared funded."""
    campaign.funding = Funding.FUNDED
    campaign.funders.append(Funder(name=name, kind=kind, amount_band=amount_band))
    _record_disclosure(campaign)


def remove_funder(campaign: Campaign, funder_id: int) -> None:
    funder = next((f for f in campaign.funders if f.id == funder_id), None)
    if funder is None:
        raise CampaignError("That funder is not listed.")
    campaign.funders.remove(funder)
    _record_disclosure(campaign)


def declare_affiliation(
    organiser: CampaignOrganiser, *, company: str | None, topic: str | None, details: str | None
) -> None:
    """An organiser states any paid relationship with a sharing-economy company, or none."""
    organiser.declare_affiliation(company, topic, details)
    _record_disclosure(organiser.campaign)


def disclosure_summary(campaign: Campaign) -> str:
    """The disclosure in words, as it stands."""
    if campaign.funding is None:
        funding = "Funding not yet declared."
    elif campaign.funding == Funding.VOLUNTEER:
        funding = "Volunteer-run, no funding."
    else:
        funders = "; ".join(
            f"{f.name} ({FUNDER_KIND_LABELS[f.kind]}, {AMOUNT_BANDS[f.amount_band]})"
            for f in campaign.funders
        )
        funding = f"Funded by: {funders or 'no funders listed yet'}."
    ties = []
    for o in campaign.organisers:
        name = o.member.display_name if o.member else "A former member"
        if o.affiliation_declared_at is None:
            ties.append(f"{name}: not yet declared.")
        elif o.affiliation_company:
            topic = topic_label(o.affiliation_topic or "other")
            ties.append(
                f"{name}: paid relationship with {o.affiliation_company} ({topic}): "
                f"{o.affiliation_details or 'no details given'}."
            )
        else:
            ties.append(f"{name}: no paid relationship with a sharing-economy company.")
    return " ".join([funding, *ties])


def _record_disclosure(campaign: Campaign) -> None:
    """Commit a change to the disclosure together with a dated snapshot of the result."""
    db.session.flush()  # the snapshot describes the campaign as changed
    db.session.add(
        DisclosureRecord(
            campaign_id=campaign.id,
            summary=disclosure_summary(campaign),
            industry_backed=campaign.industry_backed,
        )
    )
    db.session.commit()


def disclosure_history(campaign: Campaign) -> list[DisclosureRecord]:
    """Every version of the disclosure, newest first."""
    return list(
        db.session.scalars(
            select(DisclosureRecord)
            .where(DisclosureRecord.campaign_id == campaign.id)
            .order_by(DisclosureRecord.id.desc())
        )
    )


# --- decision-makers and status ----------------------------------------------------------------


def add_decision_maker(campaign: Campaign, *, name: str, role: str, body: str) -> DecisionMaker:
    maker = DecisionMaker(name=name, role=role, body=body, stance=Stance.UNKNOWN)
    campaign.decision_makers.append(maker)
    db.session.commit()
    return maker


def record_stance(
    campaign: Campaign, maker_id: int, *, stance: Stance, note: str, source_url: str | None
) -> None:
    """Update where a decision-maker stands, keeping the dated history."""
    maker = next((m for m in campaign.decision_makers if m.id == maker_id), None)
    if maker is None:
        raise CampaignError("That decision-maker is not on this campaign.")
    maker.record_stance(stance, note, source_url)
    db.session.commit()


def change_status(campaign: Campaign, status: Status, note: str) -> None:
    """Move the campaign to a new status with a note, kept in its history."""
    campaign.change_status(status, note)
    db.session.add(StatusChange(campaign_id=campaign.id, status=status, note=note))
    db.session.commit()


def status_history(campaign: Campaign) -> list[StatusChange]:
    return list(
        db.session.scalars(
            select(StatusChange)
            .where(StatusChange.campaign_id == campaign.id)
            .order_by(StatusChange.id.desc())
        )
    )


# --- updates and followers ------------------------------------------------------------------


def post_update(campaign: Campaign, *, title: str, body: str) -> CampaignUpdate:
    """Publish news on the timeline and email it to followers."""
    if not campaign.is_published:
        raise CampaignError("Publish the campaign before posting updates.")
    news = CampaignUpdate(campaign_id=campaign.id, title=title, body=body)
    db.session.add(news)
    db.session.flush()  # the update and its notification are saved together by notify()
    notify(
        "campaign_update",
        title=f"{campaign.title}: {title}",
        link=external_url("campaigns.show", campaign_id=campaign.id),
        payload={"update_id": news.id},
        audience="campaign-followers",
    )
    return news


def updates_for(campaign: Campaign) -> list[CampaignUpdate]:
    return list(
        db.session.scalars(
            select(CampaignUpdate)
            .where(CampaignUpdate.campaign_id == campaign.id)
            .order_by(CampaignUpdate.id.desc())
        )
    )


def follower_audience(update_id: int) -> Select:
    """Confirmed followers of the update's campaign, for fan-out."""
    campaign_id = select(CampaignUpdate.campaign_id).where(CampaignUpdate.id == update_id)
    return select(
        Follower.id.label("key"), Follower.email, Follower.member_id, Follower.name
    ).where(
        Follower.campaign_id == campaign_id.scalar_subquery(),
        Follower.confirmed_at.is_not(None),
    )


def follower_count(campaign: Campaign) -> int:
    return (
        db.session.scalar(
            select(func.count()).where(
                Follower.campaign_id == campaign.id, Follower.confirmed_at.is_not(None)
            )
        )
        or 0
    )


def is_following(campaign: Campaign, member: Member | None) -> bool:
    if member is None or not member.is_authenticated:
        return False
    follower = _follower(campaign, member.email)
    return follower is not None and follower.confirmed_at is not None


def _follower(campaign: Campaign, email: str) -> Follower | None:
    return db.session.scalar(
        select(Follower).where(
            Follower.campaign_id == campaign.id, Follower.email_key == email.strip().lower()
        )
    )


def follow_as_member(campaign: Campaign, member: Member) -> bool:
    """One click: a member follows at once. False if they already did."""
    existing = _follower(campaign, member.email)
    if existing is not None:
        if existing.confirmed_at is not None:
            return False
        # An unconfirmed follow from this address: the logged-in owner confirms it.
        existing.member_id, existing.confirmed_at = member.id, utcnow()
        db.session.commit()
        return True
    db.session.add(
        Follower(
            campaign_id=campaign.id,
            member_id=member.id,
            name=member.display_name,
            email=member.email,
            email_key=member.email,
            confirmed_at=utcnow(),
        )
    )
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


def follow_as_guest(campaign: Campaign, *, name: str, email: str) -> bool:
    """A guest follows once they confirm their address; False if already following."""
    existing = _follower(campaign, email)
    if existing is not None and existing.confirmed_at is not None:
        return False
    if existing is None:
        existing = Follower(
            campaign_id=campaign.id, name=name, email=email.strip(), email_key=email.strip().lower()
        )
        db.session.add(existing)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return False
    notify(
        "confirm_follow",
        title=f"Confirm you follow {campaign.title}",
        payload={"follower_id": existing.id},
        recipients=[Recipient(existing.email, None, existing.name)],
    )
    return True


def follow_token(follower: Follower) -> str:
    return make_token(FOLLOW_PURPOSE, follower.id)


def follower_for_token(token: str) -> Follower | None:
    follower_id = read_token(FOLLOW_PURPOSE, token, max_age=FOLLOW_MAX_AGE)
    return db.session.get(Follower, follower_id) if isinstance(follower_id, int) else None


def confirm_follow(follower: Follower) -> None:
    if follower.confirmed_at is None:
        follower.confirmed_at = utcnow()
        db.session.commit()
        address_confirmed(follower.email)


def unfollow(campaign: Campaign, member: Member) -> None:
    follower = _follower(campaign, member.email)
    if follower is not None:
        db.session.delete(follower)
        db.session.commit()


# --- linked petitions and meetups ----------------------------------------------------------------


def attach_work(campaign: Campaign, kind: str, target_id: int, member: Member) -> None:
    """Attach a petition or meetup; by the campaign's organisers or the work's own."""
    if kind not in WORK_KINDS:
        raise CampaignError("Only petitions and meetups can be attached.")
    if not _work_exists(kind, target_id):
        raise CampaignError(f"There is no public {kind} with that number.")
    allowed = campaign.is_organised_by(member) or any(
        collect(work_organised_by, kind=kind, target_id=target_id, member=member)
    )
    if not allowed:
        raise CampaignError(f"Only the organisers of the campaign or of the {kind} can attach it.")
    db.session.add(LinkedWork(campaign_id=campaign.id, kind=kind, target_id=target_id))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise CampaignError(f"That {kind} is already attached.") from None


def _work_exists(kind: str, target_id: int) -> bool:
    return any(target_id in found for found in collect(linked_work, kind=kind, ids=[target_id]))


def linked_summaries(campaign: Campaign) -> dict[str, list[WorkSummary]]:
    """The attached petitions and meetups, with their counts and dates."""
    links = db.session.scalars(
        select(LinkedWork).where(LinkedWork.campaign_id == campaign.id).order_by(LinkedWork.id)
    ).all()
    result: dict[str, list[WorkSummary]] = {}
    for kind in WORK_KINDS:
        ids = [link.target_id for link in links if link.kind == kind]
        if not ids:
            continue
        found: dict[int, WorkSummary] = {}
        for answer in collect(linked_work, kind=kind, ids=ids):
            found.update(answer)
        result[kind] = [found[i] for i in ids if i in found]
    return result


# --- finding -----------------------------------------------------------------------------


def find_campaigns(
    *, q: str = "", city: str = "", topic: str = "", status: str = "", page: int = 1
) -> Page:
    """Published campaigns matching the filters, newest first."""
    query = select(Campaign).where(Campaign.published_at.is_not(None))
    if status in set(Status):
        query = query.where(Campaign.status == status)
    if city:
        query = query.where(Campaign.city_slug == city_slug(city))
    if topic:
        query = query.where(Campaign.topic == topic)
    if q.strip():
        words = q.strip()
        query = query.where(
            or_(
                Campaign.title.icontains(words, autoescape=True),
                Campaign.summary.icontains(words, autoescape=True),
                Campaign.change_wanted.icontains(words, autoescape=True),
            )
        )
    order = [Campaign.published_at.desc(), Campaign.id.desc()]
    return paginate(query, order, page, PER_PAGE)


def organised_by(member: Member) -> list[Campaign]:
    """Published campaigns the member organises."""
    return list(
        db.session.scalars(
            select(Campaign)
            .join(CampaignOrganiser)
            .where(CampaignOrganiser.member_id == member.id, Campaign.published_at.is_not(None))
            .order_by(Campaign.id.desc())
        )
    )


# --- members' data and deletion ---------------------------------------------------------------


@data_export.connect
def export_member_campaigns(sender, member: Member, **extra) -> dict[str, Any]:
    organising = db.session.scalars(
        select(CampaignOrganiser).where(CampaignOrganiser.member_id == member.id)
    ).all()
    following = db.session.scalars(select(Follower).where(Follower.member_id == member.id)).all()
    return {
        "campaigns_organised": [
            {
                "campaign_id": o.campaign_id,
                "owner": o.is_owner,
                "affiliation_company": o.affiliation_company,
                "affiliation_details": o.affiliation_details,
            }
            for o in organising
        ],
        "campaigns_followed": [f.campaign_id for f in following],
    }
