"""The campaign story: launching, organisers, disclosure, decision-makers, status, updates,
followers, linked work and finding campaigns.

Views and jobs call these functions; they take models or ids and return results.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from campaigns.models import (
    AMOUNT_BANDS,
    FUNDER_KIND_LABELS,
    INVITATION_LIFETIME,
    Campaign,
    CampaignError,
    CampaignInvitation,
    CampaignOrganiser,
    CampaignUpdate,
    DecisionMaker,
    DisclosureRecord,
    DisclosureTie,
    Follower,
    Funder,
    Funding,
    InvitationState,
    LinkedWork,
    Stance,
    Status,
    StatusChange,
    member_follow_key,
)
from core import mail, ratelimit
from core.db import Page, claim_unless_recent, first_copy, paginate, utcnow
from core.extensions import db
from core.hooks import WorkSummary, collect, linked_work, work_organised_by
from core.places import city_slug
from core.tokens import make_token, read_token_issued
from core.topics import topic_label
from core.urls import external_url
from members.models import Member, invitation_key, normalise_account_email
from members.services import hold_account
from members.signals import account_deleting, data_export
from notifications.services import Reader, Recipient, address_confirmed, notify, readers_found

FOLLOW_PURPOSE = "confirm-follow"
FOLLOW_MAX_AGE = 7 * 24 * 3600
# A pending follow gets its confirmation again at most this often.
RESEND_AFTER = timedelta(minutes=10)
PER_PAGE = 20
WORK_KINDS = ("petition", "meetup")
# How many co-organiser invitations one member may send, to any addresses and campaigns.
INVITE_LIMITS = ("10 per hour", "30 per day")


class FollowRefused(CampaignError):
    """Too many follow requests from one place or for one address; try again later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


class InvitationRefused(CampaignError):
    """Too many invitations from one member; try again later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


# --- launching and organising --------------------------------------------------------------


def create_campaign(owner: Member, *, decision_maker: dict[str, str], **fields: Any) -> Campaign:
    """Save a new, unpublished campaign with its founder as owner and first decision-maker;
    the same form sent again within REPOST_WINDOW gives the campaign it made the first time."""
    hold_account(owner)
    owned = select(CampaignOrganiser.campaign_id).where(
        CampaignOrganiser.member_id == owner.id, CampaignOrganiser.is_owner.is_(True)
    )
    same = (getattr(Campaign, name) == value for name, value in fields.items())
    copy = first_copy(Campaign, Campaign.id.in_(owned), Campaign.published_at.is_(None), *same)
    if copy is not None:
        db.session.commit()  # let the hold go
        return copy
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


def invite_organiser(campaign: Campaign, inviter: Member, email: str) -> None:
    """Invite whoever has a confirmed account with ``email`` to co-organise the campaign.

    The invitation is recorded for any address, and its owner is told by email and in the
    notification centre only if they are a confirmed member who does not organise the
    campaign yet. What the inviter sees is the same in every case, so inviting never
    reveals who has an account. Inviting an address again while its invitation waits (or
    after it was declined, until it lapses) changes nothing and sends nothing.
    Over ``INVITE_LIMITS`` it raises InvitationRefused, whatever the address.
    """
    _check_invite_limits(inviter)
    key = normalise_account_email(email)
    _forget_lapsed_invitations(campaign)
    invitation = db.session.scalar(
        select(CampaignInvitation).where(
            CampaignInvitation.campaign_id == campaign.id, CampaignInvitation.email_key == key
        )
    )
    if invitation is None:
        invitation = CampaignInvitation(
            campaign_id=campaign.id, email=email.strip(), email_key=key, invited_by_id=inviter.id
        )
        db.session.add(invitation)
        try:
            db.session.commit()
        except IntegrityError:  # the same invitation, sent twice at once: the other one stands
            db.session.rollback()
            return
    elif not _reopen(invitation, inviter, email):
        db.session.commit()
        return
    invitee = db.session.scalar(select(Member).where(Member.email == key))
    if invitee is None or not invitee.is_confirmed or campaign.is_organised_by(invitee):
        return
    notify(
        "campaign_invitation",
        # No inviter's name: the title outlives an account; the email names them when sent.
        title=f"You are invited to co-organise {campaign.title}",
        link=external_url("campaigns.invitation", invitation_id=invitation.id),
        # An invitation reopened later is news of its own: this one is then stale.
        payload={"invitation_id": invitation.id, "sent_at": invitation.created_at.isoformat()},
        recipients=[Recipient(invitee.email, invitee.id, invitee.display_name)],
        key=f"campaign-invitation:{invitation.id}:{invitation.created_at.isoformat()}",
        expires_at=invitation.expires_at,
    )


def invitation_answer(email: str) -> str:
    """What the inviter is told, whoever the address belongs to."""
    return (
        f"If {email.strip()} belongs to a confirmed member, we have invited them; "
        "they become a co-organiser when they accept."
    )


def _check_invite_limits(inviter: Member) -> None:
    """Count every invitation sent, to any address, so the limit tells nothing either."""
    retry_after = ratelimit.hit_all(
        [(limit, f"campaign-invite:{inviter.id}") for limit in INVITE_LIMITS],
        allow_when_down=True,
    )
    if retry_after is not None:
        raise InvitationRefused(
            "You have sent many invitations in a short time. Please try again later.",
            retry_after=retry_after,
        )


def _reopen(invitation: CampaignInvitation, inviter: Member, email: str) -> bool:
    """Make an accepted invitation of someone who no longer organises the campaign
    (removed, or who detached) wait for an answer again; True if this call did.

    One statement claims it, so an invitation sent twice at once is reopened once.
    """
    if invitation.state != InvitationState.ACCEPTED:
        return False
    invitee = db.session.scalar(select(Member).where(Member.email == invitation.email_key))
    if invitee is not None and invitation.campaign.is_organised_by(invitee):
        return False
    claimed = db.session.execute(
        update(CampaignInvitation)
        .where(
            CampaignInvitation.id == invitation.id,
            CampaignInvitation.state == InvitationState.ACCEPTED,
        )
        .values(
            state=InvitationState.PENDING,
            email=email.strip(),
            invited_by_id=inviter.id,
            created_at=utcnow(),
            answered_at=None,
        )
    ).rowcount
    db.session.commit()
    db.session.refresh(invitation)
    return claimed == 1


def _forget_lapsed_invitations(campaign: Campaign | None = None) -> int:
    """Delete invitations past their lifetime (of one campaign, or all); they hold
    addresses typed by someone else. Returns how many went."""
    query = delete(CampaignInvitation).where(
        CampaignInvitation.created_at <= utcnow() - INVITATION_LIFETIME
    )
    if campaign is not None:
        query = query.where(CampaignInvitation.campaign_id == campaign.id)
    return db.session.execute(query).rowcount


def forget_lapsed_invitations() -> int:
    """Delete every invitation past its lifetime; returns how many."""
    count = _forget_lapsed_invitations()
    db.session.commit()
    return count


def pending_invitations(campaign: Campaign) -> list[CampaignInvitation]:
    """The campaign's invitations still waiting for an answer, oldest first, for its owner."""
    return list(
        db.session.scalars(
            select(CampaignInvitation)
            .where(
                CampaignInvitation.campaign_id == campaign.id,
                CampaignInvitation.state == InvitationState.PENDING,
                CampaignInvitation.created_at > utcnow() - INVITATION_LIFETIME,
            )
            .order_by(CampaignInvitation.id)
        )
    )


def withdraw_invitation(campaign: Campaign, invitation_id: int) -> CampaignInvitation:
    """Take back an invitation still waiting for an answer; it is deleted."""
    invitation = db.session.scalar(
        select(CampaignInvitation).where(
            CampaignInvitation.id == invitation_id,
            CampaignInvitation.campaign_id == campaign.id,
            CampaignInvitation.state == InvitationState.PENDING,
        )
    )
    if invitation is None:
        raise CampaignError("That invitation is no longer waiting for an answer.")
    db.session.delete(invitation)
    db.session.commit()
    return invitation


def invitation_of(member: Member | None, invitation_id: int) -> CampaignInvitation | None:
    """The invitation with this id if it is made to the member's confirmed address."""
    key = invitation_key(member)
    if key is None:
        return None
    return db.session.scalar(
        select(CampaignInvitation).where(
            CampaignInvitation.id == invitation_id, CampaignInvitation.email_key == key
        )
    )


def _open_invitations(key: str) -> Select:
    return select(CampaignInvitation).where(
        CampaignInvitation.email_key == key,
        CampaignInvitation.state == InvitationState.PENDING,
        CampaignInvitation.created_at > utcnow() - INVITATION_LIFETIME,
    )


def invitation_to(campaign: Campaign, member: Member | None) -> CampaignInvitation | None:
    """The member's open invitation to ``campaign``, unless they organise it already."""
    key = invitation_key(member)
    if key is None or campaign.is_organised_by(member):
        return None
    return db.session.scalar(
        _open_invitations(key).where(CampaignInvitation.campaign_id == campaign.id)
    )


def invitations_for(member: Member | None, *, limit: int = 20) -> list[CampaignInvitation]:
    """Open invitations to campaigns the member does not organise yet, newest first."""
    key = invitation_key(member)
    if key is None:
        return []
    organising = select(CampaignOrganiser.campaign_id).where(
        CampaignOrganiser.member_id == member.id
    )
    return list(
        db.session.scalars(
            _open_invitations(key)
            .where(CampaignInvitation.campaign_id.not_in(organising))
            .order_by(CampaignInvitation.created_at.desc(), CampaignInvitation.id.desc())
            .limit(limit)
        )
    )


def _answer_invitation(invitation: CampaignInvitation, answer: Callable[[], None]) -> None:
    """Record an answer under the invitation's row lock, so it is answered only once."""
    db.session.refresh(invitation, with_for_update=True)
    try:
        answer()
    except CampaignError:
        db.session.rollback()
        raise


def accept_invitation(invitation: CampaignInvitation, member: Member) -> CampaignOrganiser:
    """Become a co-organiser. Like any organiser added, they are shown as "not yet
    declared" in the disclosure until they declare their ties, and until then take no part
    in running a published campaign."""
    _answer_invitation(invitation, invitation.accept)
    campaign = invitation.campaign
    _lock_disclosure(campaign)
    if (organiser := campaign.organiser_for(member)) is not None:
        db.session.commit()
        return organiser
    organiser = CampaignOrganiser(member_id=member.id, is_owner=False)
    campaign.organisers.append(organiser)
    try:
        _record_disclosure(campaign)  # a new organiser has not declared yet
    except IntegrityError:
        db.session.rollback()
        raise CampaignError(
            "You became an organiser of this campaign at the same moment; please look again."
        ) from None
    return organiser


def decline_invitation(invitation: CampaignInvitation) -> None:
    """Turn the invitation down. It is not shown again, and inviting the same address
    again sends nothing until the invitation would have lapsed."""
    _answer_invitation(invitation, invitation.decline)
    db.session.commit()


def remove_organiser(campaign: Campaign, organiser_id: int) -> None:
    """Remove a co-organiser; the owner stays."""
    _lock_disclosure(campaign)
    organiser = next((o for o in campaign.organisers if o.id == organiser_id), None)
    if organiser is None:
        raise CampaignError("That person does not organise this campaign.")
    campaign.remove_co_organiser(organiser)
    _record_disclosure(campaign)


def step_down(campaign: Campaign, member: Member) -> None:
    """A co-organiser stops organising the campaign. Their lines stay in the disclosure
    history; to come back they need the owner's invitation again. The owner cannot step
    down, since the campaign must keep someone able to invite and remove organisers."""
    _lock_disclosure(campaign)
    organiser = campaign.organiser_for(member)
    if organiser is None:
        raise CampaignError("You no longer organise this campaign.")
    if organiser.is_owner:
        raise CampaignError("As the campaign's owner you cannot step down.")
    campaign.remove_co_organiser(organiser)
    _tell_owner_of_step_down(campaign, member)
    _record_disclosure(campaign)


def _tell_owner_of_step_down(campaign: Campaign, member: Member) -> None:
    owner = campaign.owner.member if campaign.owner else None
    if owner is None:
        return
    notify(
        "campaign_step_down",
        title=f"{member.display_name} stepped down from {campaign.title}",
        link=external_url("campaigns.manage", campaign_id=campaign.id),
        payload={"campaign_id": campaign.id, "organiser_name": member.display_name},
        recipients=[Recipient(owner.email, owner.id, owner.display_name)],
        commit=False,  # told once the step down is saved, with the disclosure
    )


def publish(campaign: Campaign) -> None:
    """Make the campaign public; refused until its disclosure is complete.

    The check reads the disclosure under its lock, so a funder removed from the draft
    meanwhile cannot leave a public campaign funded by no one."""
    _lock_disclosure(campaign)
    campaign.publish()
    db.session.commit()


# --- disclosure ---------------------------------------------------------------------------


def set_funding(campaign: Campaign, funding: Funding) -> None:
    """Declare the campaign volunteer-run, or funded (funders listed separately)."""
    _lock_disclosure(campaign)
    campaign.declare_funding(funding)
    _record_disclosure(campaign)


def add_funder(campaign: Campaign, *, name: str, kind: str, amount_band: str) -> None:
    """List a funder; the campaign is then declared funded."""
    _lock_disclosure(campaign)
    campaign.funding = Funding.FUNDED
    campaign.funders.append(Funder(name=name, kind=kind, amount_band=amount_band))
    _record_disclosure(campaign)


def remove_funder(campaign: Campaign, funder_id: int) -> None:
    """Take a funder off the list; a funded public campaign keeps at least one."""
    _lock_disclosure(campaign)
    funder = next((f for f in campaign.funders if f.id == funder_id), None)
    if funder is None:
        raise CampaignError("That funder is not listed.")
    campaign.remove_funder(funder)
    _record_disclosure(campaign)


def declare_affiliation(
    organiser: CampaignOrganiser, *, company: str | None, topic: str | None, details: str | None
) -> None:
    """An organiser states any paid relationship with a sharing-economy company, or none."""
    _lock_disclosure(organiser.campaign)
    organiser.declare_affiliation(company, topic, details)
    _record_disclosure(organiser.campaign)


def disclosure_snapshot(campaign: Campaign) -> DisclosureRecord:
    """The disclosure as it stands, as an unsaved record: the funding sentence, and one
    line per organiser that keeps who they are apart from the name shown."""
    return DisclosureRecord(
        campaign_id=campaign.id,
        funding_text=_funding_text(campaign),
        industry_backed=campaign.industry_backed,
        ties=[
            DisclosureTie(
                position=position,
                member_id=o.member_id,
                name=o.member.display_name if o.member else None,
                statement=_tie_statement(o),
            )
            for position, o in enumerate(campaign.organisers)
        ],
    )


def _funding_text(campaign: Campaign) -> str:
    if campaign.funding is None:
        return "Funding not yet declared."
    if campaign.funding == Funding.VOLUNTEER:
        return "Volunteer-run, no funding."
    funders = "; ".join(
        f"{f.name} ({FUNDER_KIND_LABELS[f.kind]}, {AMOUNT_BANDS[f.amount_band]})"
        for f in campaign.funders
    )
    return f"Funded by: {funders or 'no funders listed yet'}."


def _tie_statement(organiser: CampaignOrganiser) -> str:
    """What the organiser has declared, in words, after their name."""
    if organiser.affiliation_declared_at is None:
        return "not yet declared."
    if organiser.affiliation_company:
        topic = topic_label(organiser.affiliation_topic or "other")
        return (
            f"paid relationship with {organiser.affiliation_company} ({topic}): "
            f"{organiser.affiliation_details or 'no details given'}."
        )
    return "no paid relationship with a sharing-economy company."


def _lock_disclosure(campaign: Campaign) -> None:
    """Hold the campaign's row and reread its funders and organisers, so that two changes
    at once each see the other's: two funders removed together cannot leave none."""
    db.session.refresh(campaign, with_for_update=True)
    db.session.expire(campaign, ["funders", "organisers"])


def _record_disclosure(campaign: Campaign) -> None:
    """Commit a change to the disclosure together with a dated snapshot of the result.

    The campaign counts as changed too, for those who sync it by its update time."""
    campaign.updated_at = utcnow()
    db.session.flush()  # the snapshot describes the campaign as changed
    db.session.add(disclosure_snapshot(campaign))
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
    """Publish news on the timeline and email it to followers.

    The same title and body sent again within REPOST_WINDOW (a double click, a resent
    form) return the update already posted, so followers get it once.
    """
    if not campaign.is_published:
        raise CampaignError("Publish the campaign before posting updates.")
    _lock_campaign(campaign)
    if (posted := _recent_update(campaign, title, body)) is not None:
        db.session.commit()
        return posted
    news = CampaignUpdate(campaign_id=campaign.id, title=title, body=body)
    db.session.add(news)
    db.session.flush()  # the update and its notification are saved together by notify()
    notify(
        "campaign_update",
        title=f"{campaign.title}: {title}",
        link=external_url("campaigns.show", campaign_id=campaign.id),
        payload={"update_id": news.id},
        audience="campaign-followers",
        key=f"campaign-update:{news.id}",
    )
    return news


def _lock_campaign(campaign: Campaign) -> None:
    """Hold the campaign's row until commit, so two posts of one update queue up
    (PostgreSQL; SQLite writes one at a time anyway)."""
    db.session.execute(select(Campaign.id).where(Campaign.id == campaign.id).with_for_update())


def _recent_update(campaign: Campaign, title: str, body: str) -> CampaignUpdate | None:
    return first_copy(
        CampaignUpdate,
        CampaignUpdate.campaign_id == campaign.id,
        CampaignUpdate.title == title,
        CampaignUpdate.body == body,
    )


def updates_for(campaign: Campaign) -> list[CampaignUpdate]:
    return list(
        db.session.scalars(
            select(CampaignUpdate)
            .where(CampaignUpdate.campaign_id == campaign.id)
            .order_by(CampaignUpdate.id.desc())
        )
    )


def follower_audience(update_id: int) -> Select:
    """Confirmed followers of the update's campaign, for fan-out; a member's mail goes to
    the account's current address."""
    campaign_id = select(CampaignUpdate.campaign_id).where(CampaignUpdate.id == update_id)
    return (
        select(
            Follower.id.label("key"),
            func.coalesce(Member.email, Follower.email).label("email"),
            Follower.member_id,
            func.coalesce(Member.display_name, Follower.name).label("name"),
        )
        .outerjoin(Member, Member.id == Follower.member_id)
        .where(
            Follower.campaign_id == campaign_id.scalar_subquery(),
            Follower.confirmed_at.is_not(None),
        )
    )


def still_following(campaign_id: int, readers: list[Reader]) -> set[Reader]:
    """Of these readers, those who still have a confirmed follow of the campaign: their
    own as a member, or a guest follow of the address. Mail recorded at fan-out is sent
    later, or held for a digest, so an unfollow in between still stops it. One query for
    a whole batch."""

    def confirmed_followers(keys: set[str], member_ids: set[int]) -> Select:
        return select(Follower.email_key, Follower.member_id).where(
            Follower.campaign_id == campaign_id,
            Follower.confirmed_at.is_not(None),
            or_(Follower.email_key.in_(keys), Follower.member_id.in_(member_ids)),
        )

    return readers_found(readers, mail.inbox_key, confirmed_followers)


def follower_count(campaign: Campaign) -> int:
    return (
        db.session.scalar(
            select(func.count()).where(
                Follower.campaign_id == campaign.id, Follower.confirmed_at.is_not(None)
            )
        )
        or 0
    )


def _own_follows(campaign: Campaign, member: Member) -> list[Follower]:
    """The member's follows of this campaign: by their id, and, once they have proved they
    own their address, a guest follow made with it."""
    keys = [member_follow_key(member.id)]
    if member.is_confirmed:
        keys.append(mail.inbox_key(member.email))
    return list(
        db.session.scalars(
            select(Follower)
            .where(Follower.campaign_id == campaign.id, Follower.email_key.in_(keys))
            .order_by(Follower.id)
        )
    )


def is_following(campaign: Campaign, member: Member | None) -> bool:
    if member is None or not member.is_authenticated:
        return False
    return any(f.confirmed_at is not None for f in _own_follows(campaign, member))


def _follower(campaign: Campaign, email: str) -> Follower | None:
    return db.session.scalar(
        select(Follower).where(
            Follower.campaign_id == campaign.id, Follower.email_key == mail.inbox_key(email)
        )
    )


def follow_as_member(campaign: Campaign, member: Member) -> bool:
    """One click: a member with a confirmed address follows at once. False if they
    already did.

    Refused to an unconfirmed account, which follows like a guest instead.
    """
    if not member.is_confirmed:
        raise CampaignError("Please confirm your email address first; then one click follows.")
    own = _own_follows(campaign, member)
    mine = next((f for f in own if f.member_id == member.id and f.confirmed_at), None)
    if mine is not None:
        return False
    if own:
        # A follow from the member's own address, made as a guest: it becomes theirs.
        claimed, was_confirmed = own[0], own[0].confirmed_at is not None
        claimed.member_id, claimed.email_key = member.id, member_follow_key(member.id)
        claimed.confirmed_at = claimed.confirmed_at or utcnow()
        db.session.commit()
        return not was_confirmed
    db.session.add(
        Follower(
            campaign_id=campaign.id,
            member_id=member.id,
            name=member.display_name,
            email=member.email,
            email_key=member_follow_key(member.id),
            confirmed_at=utcnow(),
        )
    )
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


def _check_follow_limits(email: str, address: str) -> None:
    """Refuse a burst of follows from one place, or for one inbox however it is spelt.

    The limits are those of petition signing: both send a confirmation to whatever address
    a visitor types in.
    """
    config = current_app.config
    retry_after = ratelimit.hit_all(
        [
            (config["SIGN_LIMIT_PER_ADDRESS"], f"follow:address:{address}"),
            (config["SIGN_LIMIT_PER_EMAIL"], f"follow:email:{mail.inbox_key(email)}"),
        ],
        allow_when_down=True,
    )
    if retry_after is not None:
        raise FollowRefused(
            "We have had many requests to follow from you in a short time. "
            "Please try again a little later.",
            retry_after=retry_after,
        )


def follow_as_guest(campaign: Campaign, *, name: str, email: str, address: str) -> bool:
    """A guest follows once they confirm their address; False if already following or
    if a confirmation went out less than RESEND_AFTER ago.

    ``address`` is where the request came from, for the rate limits (FollowRefused).
    """
    _check_follow_limits(email, address)
    if _followed_by_member_with_address(campaign, email):
        return False
    existing = _follower(campaign, email)
    if existing is not None and existing.confirmed_at is not None:
        return False
    if existing is None:
        existing = Follower(
            campaign_id=campaign.id,
            name=name,
            email=email.strip(),
            email_key=mail.inbox_key(email),
            confirmation_sent_at=utcnow(),
        )
        db.session.add(existing)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return False
    elif not _claim_resend(existing):
        return False
    notify(
        "confirm_follow",
        title=f"Confirm you follow {campaign.title}",
        payload={"follower_id": existing.id},
        recipients=[Recipient(existing.email, None, existing.name)],
    )
    return True


def _followed_by_member_with_address(campaign: Campaign, email: str) -> bool:
    """Whether a member who proved they own this address already follows the campaign."""
    return (
        db.session.scalar(
            select(Follower.id)
            .join(Member, Member.id == Follower.member_id)
            .where(
                Follower.campaign_id == campaign.id,
                Follower.confirmed_at.is_not(None),
                Member.email == normalise_account_email(email),
                Member.email_confirmed_at.is_not(None),
            )
            .limit(1)
        )
        is not None
    )


def _claim_resend(follower: Follower) -> bool:
    """Mark a pending follow's confirmation as sent now, unless one went out recently."""
    return claim_unless_recent(
        Follower.confirmation_sent_at,
        follower.id,
        RESEND_AFTER,
        Follower.confirmed_at.is_(None),
    )


def follow_token(follower: Follower) -> str:
    return make_token(FOLLOW_PURPOSE, follower.id)


def follower_for_token(token: str) -> Follower | None:
    """The follow a confirmation link names, unless the link is older than the row: ids
    can come back (SQLite reuses the last one after a deletion), and a link signed for a
    follow since removed must not confirm the one that took its id."""
    read = read_token_issued(FOLLOW_PURPOSE, token, max_age=FOLLOW_MAX_AGE)
    if read is None or not isinstance(read[0], int):
        return None
    follower_id, signed_at = read
    follower = db.session.get(Follower, follower_id)
    if follower is None or signed_at < follower.created_at.replace(microsecond=0):
        return None
    return follower


def confirm_follow(follower: Follower) -> None:
    if follower.confirmed_at is None:
        follower.confirmed_at = utcnow()
        db.session.commit()
        address_confirmed(follower.email)


def unfollow(campaign: Campaign, member: Member) -> None:
    """Stop the member's follow; also one made with their address, if they own it."""
    ids = [f.id for f in _own_follows(campaign, member)]
    if ids:
        db.session.execute(delete(Follower).where(Follower.id.in_(ids)))
        db.session.commit()


# --- linked petitions and meetups ----------------------------------------------------------------


def attach_work(campaign: Campaign, kind: str, target_id: int, member: Member) -> None:
    """Attach a petition or meetup; by the campaign's organisers or the work's own."""
    if kind not in WORK_KINDS:
        raise CampaignError("Only petitions and meetups can be attached.")
    if not _work_exists(kind, target_id):
        raise CampaignError(f"There is no public {kind} with that number.")
    if not any(collect(work_organised_by, kind=kind, target_id=target_id, member=member)):
        organiser = campaign.organiser_for(member)
        if organiser is None:
            raise CampaignError(
                f"Only the organisers of the campaign or of the {kind} can attach it."
            )
        organiser.require_declared()
    db.session.add(LinkedWork(campaign_id=campaign.id, kind=kind, target_id=target_id))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise CampaignError(f"That {kind} is already attached.") from None


def detach_work(campaign: Campaign, link_id: int) -> LinkedWork:
    """Take an attached petition or meetup off the campaign (the work itself stays)."""
    link = db.session.scalar(
        select(LinkedWork).where(LinkedWork.id == link_id, LinkedWork.campaign_id == campaign.id)
    )
    if link is None:
        raise CampaignError("That is not attached to this campaign.")
    db.session.delete(link)
    db.session.commit()
    return link


def attached_work(campaign: Campaign) -> list[tuple[LinkedWork, WorkSummary | None]]:
    """Every link of the campaign with its petition or meetup, for its organisers.

    The summary is None for work that is no longer public, so it can still be detached.
    """
    links = db.session.scalars(
        select(LinkedWork).where(LinkedWork.campaign_id == campaign.id).order_by(LinkedWork.id)
    ).all()
    found: dict[tuple[str, int], WorkSummary] = {}
    for kind in WORK_KINDS:
        ids = [link.target_id for link in links if link.kind == kind]
        for answer in collect(linked_work, kind=kind, ids=ids) if ids else []:
            found.update({(kind, target_id): summary for target_id, summary in answer.items()})
    return [(link, found.get((link.kind, link.target_id))) for link in links]


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


def _member_follows(member: Member) -> Select:
    """Every follow that is the member's: by their id, and, once they have proved they own
    their address, the guest follows made with it (as ``_own_follows``, for all campaigns)."""
    keys = [member_follow_key(member.id)]
    if member.is_confirmed:
        keys.append(mail.inbox_key(member.email))
    return select(Follower).where(
        or_(Follower.member_id == member.id, Follower.email_key.in_(keys))
    )


@data_export.connect
def export_member_campaigns(sender, member: Member, **extra) -> dict[str, Any]:
    """The campaigns the member organises and follows, their lines in disclosure
    histories, and the invitations to co-organise made to their confirmed address, for
    their data download."""
    organising = db.session.scalars(
        select(CampaignOrganiser).where(CampaignOrganiser.member_id == member.id)
    ).all()
    following = db.session.scalars(_member_follows(member).order_by(Follower.id)).all()
    key = invitation_key(member)
    invitations = (
        db.session.scalars(
            select(CampaignInvitation)
            .where(CampaignInvitation.email_key == key)
            .order_by(CampaignInvitation.id)
        ).all()
        if key
        else []
    )
    lines = db.session.execute(
        select(DisclosureRecord, DisclosureTie)
        .join(DisclosureTie, DisclosureTie.record_id == DisclosureRecord.id)
        .where(DisclosureTie.member_id == member.id)
        .order_by(DisclosureRecord.id)
    ).all()
    return {
        "campaign_disclosure_history": [
            {
                "campaign_id": record.campaign_id,
                "recorded_at": record.created_at.isoformat(),
                "name": tie.name,
                "statement": tie.statement,
            }
            for record, tie in lines
        ],
        "campaign_invitations": [
            {
                "campaign_id": i.campaign_id,
                "email": i.email,
                "invited_by": i.invited_by.display_name if i.invited_by else None,
                "state": i.state,
                "created_at": i.created_at.isoformat(),
                "answered_at": i.answered_at.isoformat() if i.answered_at else None,
            }
            for i in invitations
        ],
        "campaigns_organised": [
            {
                "campaign_id": o.campaign_id,
                "owner": o.is_owner,
                "affiliation_company": o.affiliation_company,
                "affiliation_topic": o.affiliation_topic,
                "affiliation_details": o.affiliation_details,
                "affiliation_declared_at": o.affiliation_declared_at
                and o.affiliation_declared_at.isoformat(),
            }
            for o in organising
        ],
        "campaigns_followed": [
            {
                "campaign_id": f.campaign_id,
                "name": f.name,
                "email": f.email,
                "followed_at": f.created_at.isoformat(),
                "confirmed": f.confirmed_at is not None,
            }
            for f in following
        ],
    }


@account_deleting.connect
def remove_member_follows(sender, member: Member, **extra) -> None:
    """Stop every follow of the deleted member, the guest ones made with their confirmed
    address too: a follow row holds a name and an address, and is a standing request
    for mail."""
    ids = db.session.scalars(_member_follows(member).with_only_columns(Follower.id)).all()
    if ids:
        db.session.execute(delete(Follower).where(Follower.id.in_(ids)))


@account_deleting.connect
def forget_member_in_campaigns(sender, member: Member, **extra) -> None:
    """Keep every disclosure history whole, paid ties included, but without the deleted
    member's name: what they declared now reads as a former member's. Then drop the
    invitations to co-organise made to their confirmed address (they hold the address)."""
    _anonymise_disclosures(member)
    if key := invitation_key(member):
        db.session.execute(delete(CampaignInvitation).where(CampaignInvitation.email_key == key))


# The status note of a published campaign archived because no one is left to run it.
ABANDONED_NOTE = "Its last organiser left Groundswell."


@account_deleting.connect
def hand_over_owned_campaigns(sender, member: Member, **extra) -> None:
    """Leave no campaign stuck without an owner when its owner deletes their account.

    Each passes to its longest-standing co-organiser (see ``Campaign.hand_over``). With no
    co-organiser left, a draft goes with the account, since no one else could ever see or
    publish it; a published campaign stays public as a record, archived unless it had
    already ended, so its page and the listings say that no one runs it, and its pending
    invitations go, as no one is left to stand behind them.

    Only flushed: the deletion commits everything at once.
    """
    owned = db.session.scalars(
        select(Campaign)
        .join(CampaignOrganiser)
        .where(CampaignOrganiser.member_id == member.id, CampaignOrganiser.is_owner)
        .order_by(Campaign.id)  # locked in one order
    ).all()
    for campaign in owned:
        _lock_disclosure(campaign)
        leaving = campaign.organiser_for(member)
        if leaving is None or not leaving.is_owner:
            continue
        if campaign.hand_over(leaving) is None:
            _abandon(campaign)
    db.session.flush()


def _abandon(campaign: Campaign) -> None:
    """Deal with a campaign its last organiser is leaving (see hand_over_owned_campaigns)."""
    if not campaign.is_published:
        db.session.delete(campaign)
        return
    db.session.execute(
        delete(CampaignInvitation).where(
            CampaignInvitation.campaign_id == campaign.id,
            CampaignInvitation.state == InvitationState.PENDING,
        )
    )
    if campaign.status in (Status.ACTIVE, Status.PAUSED):
        campaign.change_status(Status.ARCHIVED, ABANDONED_NOTE)
        db.session.add(
            StatusChange(campaign_id=campaign.id, status=Status.ARCHIVED, note=ABANDONED_NOTE)
        )


def _anonymise_disclosures(member: Member) -> None:
    """Take the member's name off each line of theirs in every disclosure history, under
    whatever name it was recorded and whether or not they still organise the campaign."""
    _anonymise_legacy_disclosures(member)
    db.session.execute(
        update(DisclosureTie)
        .where(DisclosureTie.member_id == member.id)
        .values(name=None, member_id=None)
    )


def _anonymise_legacy_disclosures(member: Member) -> None:
    """Records kept as whole text name their organisers only in words, so there the
    member's current name is taken out where it opens a line, in the campaigns they are
    known to have organised: now, through an accepted invitation, or in a later record."""
    organised = select(CampaignOrganiser.campaign_id).where(
        CampaignOrganiser.member_id == member.id
    )
    accepted = select(CampaignInvitation.campaign_id).where(
        CampaignInvitation.email_key == (invitation_key(member) or ""),
        CampaignInvitation.state == InvitationState.ACCEPTED,
    )
    recorded = (
        select(DisclosureRecord.campaign_id)
        .join(DisclosureTie, DisclosureTie.record_id == DisclosureRecord.id)
        .where(DisclosureTie.member_id == member.id)
    )
    records = db.session.scalars(
        select(DisclosureRecord).where(
            DisclosureRecord.legacy_summary.is_not(None),
            or_(
                DisclosureRecord.campaign_id.in_(organised),
                DisclosureRecord.campaign_id.in_(accepted),
                DisclosureRecord.campaign_id.in_(recorded),
            ),
        )
    )
    for record in records:
        record.forget_legacy_name(member.display_name)
