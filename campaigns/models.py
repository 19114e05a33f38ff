"""Campaigns: the long game around one rule in one place, and who is behind it.

Every campaign must say who funds it and how its organisers are tied to sharing-economy
companies before it is published. The "industry-backed" label is derived from those
declarations, so no one can switch it off.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Timestamped, utcnow
from core.extensions import db
from members.models import Answerable, InvitationState, Member


class CampaignError(Exception):
    """A change the campaign's current state does not allow."""


class Status(StrEnum):
    ACTIVE = "active"
    WON = "won"
    LOST = "lost"
    PAUSED = "paused"
    ARCHIVED = "archived"


class Funding(StrEnum):
    VOLUNTEER = "volunteer"  # volunteer-run, no funding
    FUNDED = "funded"  # a list of funders follows


class FunderKind(StrEnum):
    INDIVIDUAL = "individual"
    MEMBER_DUES = "member-dues"
    FOUNDATION = "foundation"
    COMPANY = "company"
    UNION = "union"
    OTHER = "other"


FUNDER_KIND_LABELS = {
    FunderKind.INDIVIDUAL: "Individual",
    FunderKind.MEMBER_DUES: "Member dues",
    FunderKind.FOUNDATION: "Foundation",
    FunderKind.COMPANY: "Company",
    FunderKind.UNION: "Union",
    FunderKind.OTHER: "Other",
}

AMOUNT_BANDS = {
    "under-1k": "Under €1,000",
    "1k-10k": "€1,000 to €10,000",
    "10k-50k": "€10,000 to €50,000",
    "over-50k": "Over €50,000",
}


class Stance(StrEnum):
    UNKNOWN = "unknown"
    SUPPORTS = "supports"
    UNDECIDED = "undecided"
    OPPOSES = "opposes"


class Campaign(Timestamped, db.Model):
    """A member-led campaign for one change in one place."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_status_city", "status", "city_slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(150))
    summary: Mapped[str] = mapped_column(String(500))
    change_wanted: Mapped[str] = mapped_column(Text)
    city: Mapped[str] = mapped_column(String(80))
    city_slug: Mapped[str] = mapped_column(String(80))
    topic: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(10), default=Status.ACTIVE)
    status_note: Mapped[str | None] = mapped_column(String(1000))
    funding: Mapped[str | None] = mapped_column(String(10))
    published_at: Mapped[datetime | None]

    organisers: Mapped[list[CampaignOrganiser]] = relationship(
        back_populates="campaign", cascade="all, delete-orphan", order_by="CampaignOrganiser.id"
    )
    funders: Mapped[list[Funder]] = relationship(cascade="all, delete-orphan", order_by="Funder.id")
    decision_makers: Mapped[list[DecisionMaker]] = relationship(
        back_populates="campaign", cascade="all, delete-orphan", order_by="DecisionMaker.id"
    )

    @property
    def is_published(self) -> bool:
        return self.published_at is not None

    @property
    def owner(self) -> CampaignOrganiser | None:
        return next((o for o in self.organisers if o.is_owner), None)

    @property
    def is_abandoned(self) -> bool:
        """Whether every organiser has left Groundswell, so that no one runs the campaign."""
        return all(o.member_id is None for o in self.organisers)

    def organiser_for(self, member: Member | None) -> CampaignOrganiser | None:
        if member is None or not getattr(member, "is_authenticated", False):
            return None
        return next((o for o in self.organisers if o.member_id == member.id), None)

    def is_organised_by(self, member: Member | None) -> bool:
        return self.organiser_for(member) is not None

    @property
    def funding_missing(self) -> str | None:
        """What the funding declaration still lacks, if anything."""
        if self.funding is None:
            return "who funds the campaign"
        if self.funding == Funding.FUNDED and not self.funders:
            return "at least one funder"
        return None

    @property
    def disclosure_missing(self) -> list[str]:
        """What still has to be declared before publishing."""
        missing = [self.funding_missing] if self.funding_missing else []
        missing.extend(
            f"the affiliations of {o.member.display_name if o.member else 'an organiser'}"
            for o in self.organisers
            if o.affiliation_declared_at is None
        )
        return missing

    @property
    def industry_backed(self) -> bool:
        """Company money, or an organiser paid by a company in this campaign's own topic."""
        company_money = self.funding == Funding.FUNDED and any(
            f.kind == FunderKind.COMPANY for f in self.funders
        )
        tied = any(
            o.affiliation_company and o.affiliation_topic == self.topic for o in self.organisers
        )
        return company_money or tied

    def declare_funding(self, funding: Funding) -> None:
        """Declare the campaign volunteer-run (no funders) or funded."""
        if self.is_published and funding == Funding.FUNDED and not self.funders:
            # A public campaign must never say "funded" without naming a funder.
            raise CampaignError(
                "Add the campaign's first funder below; adding one declares it funded."
            )
        self.funding = funding
        if funding == Funding.VOLUNTEER:
            self.funders.clear()

    def remove_funder(self, funder: Funder) -> None:
        """Take a funder off the list; a published campaign keeps at least one while funded."""
        if self.is_published and self.funding == Funding.FUNDED and len(self.funders) == 1:
            raise CampaignError(
                "A published campaign must say who funds it, so its last funder stays listed. "
                "Add the new funder first, or declare the campaign volunteer-run."
            )
        self.funders.remove(funder)

    def publish(self) -> None:
        """Make the campaign public; only with a complete disclosure."""
        if self.is_published:
            raise CampaignError("This campaign is already published.")
        if missing := self.disclosure_missing:
            raise CampaignError("Before publishing, please declare " + "; ".join(missing) + ".")
        self.published_at = utcnow()

    def change_status(self, status: Status, note: str) -> None:
        if status == self.status:
            raise CampaignError(f"The campaign is already {status}.")
        self.status, self.status_note = status, note

    def remove_co_organiser(self, organiser: CampaignOrganiser) -> None:
        """Take a co-organiser off the campaign; the owner always stays."""
        if organiser not in self.organisers:
            raise CampaignError("That person does not organise this campaign.")
        if organiser.is_owner:
            raise CampaignError("The owner cannot be removed.")
        self.organisers.remove(organiser)

    def hand_over(self, leaving: CampaignOrganiser) -> CampaignOrganiser | None:
        """The owner is leaving Groundswell: the campaign passes to the longest-standing
        co-organiser who has declared their ties, or failing that to the longest-standing
        one (who declares before running a public campaign). Returns the new owner, or
        None when no co-organiser is left; the campaign then has no owner."""
        if not leaving.is_owner:
            raise CampaignError("Only the owner hands the campaign over.")
        others = [o for o in self.organisers if o is not leaving and o.member_id is not None]
        # Organisers are kept in the order they joined, so the first is the longest-standing.
        successor = next((o for o in others if o.has_declared), None) or next(iter(others), None)
        leaving.is_owner = False
        if successor is not None:
            successor.is_owner = True
        return successor


class CampaignOrganiser(db.Model):
    """A member who runs a campaign, with their declared ties to sharing-economy companies."""

    __tablename__ = "campaign_organisers"
    __table_args__ = (UniqueConstraint("campaign_id", "member_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), index=True
    )
    is_owner: Mapped[bool] = mapped_column(default=False)
    affiliation_declared_at: Mapped[datetime | None]
    # None with a declaration date means "no paid relationship".
    affiliation_company: Mapped[str | None] = mapped_column(String(100))
    affiliation_topic: Mapped[str | None] = mapped_column(String(40))
    affiliation_details: Mapped[str | None] = mapped_column(String(300))

    campaign: Mapped[Campaign] = relationship(back_populates="organisers")
    member: Mapped[Member | None] = relationship(lazy="joined")

    @property
    def has_declared(self) -> bool:
        return self.affiliation_declared_at is not None

    def require_declared(self) -> None:
        """On a public campaign, an organiser acts only once their ties are declared."""
        if self.campaign.is_published and not self.has_declared:
            raise CampaignError(
                "Please declare your ties to sharing-economy companies first "
                "(under “Your ties to sharing-economy companies”); "
                "then you can run the campaign."
            )

    def declare_affiliation(
        self, company: str | None, topic: str | None, details: str | None
    ) -> None:
        self.affiliation_company = company or None
        self.affiliation_topic = topic if company else None
        self.affiliation_details = details if company else None
        self.affiliation_declared_at = utcnow()


# How a deleted member's part in a campaign's disclosure reads.
FORMER_MEMBER = "A former member"

# An invitation not answered by then lapses: it is no longer shown, nor can it be accepted.
INVITATION_LIFETIME = timedelta(days=30)


class CampaignInvitation(Answerable, db.Model):
    """An offer to co-organise a campaign, made by its owner to an email address.

    The owner's word names an address, not a person's consent, so nobody organises a
    campaign, nor is shown as organising it, until they accept. The invitation belongs to
    whoever has a confirmed account with that address (as ``email_key``); it is recorded
    for any address typed, so that what the owner sees never tells whether one has an
    account.
    """

    __tablename__ = "campaign_invitations"
    __table_args__ = (UniqueConstraint("campaign_id", "email_key"),)
    lifetime = INVITATION_LIFETIME
    refusal = CampaignError
    lapsed = "This invitation has lapsed. Ask the campaign's owner to invite you again."

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254))  # as the owner typed it
    email_key: Mapped[str] = mapped_column(String(254), index=True)  # as accounts match it
    invited_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(10), default=InvitationState.PENDING)
    answered_at: Mapped[datetime | None]

    campaign: Mapped[Campaign] = relationship()
    invited_by: Mapped[Member | None] = relationship()


class Funder(db.Model):
    __tablename__ = "campaign_funders"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(150))
    kind: Mapped[str] = mapped_column(String(20))
    amount_band: Mapped[str] = mapped_column(String(20))


class DisclosureRecord(db.Model):
    """A dated snapshot of the disclosure, kept whenever it changes.

    The funding sentence is kept on the record and each organiser's line as a
    ``DisclosureTie`` that knows its member, so a deleted member's name leaves exactly
    their own lines. Records kept before lines were stored apart have their whole text in
    ``legacy_summary`` instead, and no ties.
    """

    __tablename__ = "campaign_disclosure_history"
    __table_args__ = (
        # Either the funding sentence (with its lines as ties) or the whole old text.
        CheckConstraint(
            "(funding_text IS NULL) <> (legacy_summary IS NULL)",
            name="funding_text_or_legacy_summary",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    funding_text: Mapped[str | None] = mapped_column(Text)
    legacy_summary: Mapped[str | None] = mapped_column(Text)
    industry_backed: Mapped[bool] = mapped_column(default=False)

    ties: Mapped[list[DisclosureTie]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DisclosureTie.position",
        lazy="selectin",  # a history is shown whole, so its lines come in one query
    )

    @property
    def summary(self) -> str:
        """The disclosure in words, as it stood then."""
        if self.legacy_summary is not None:
            return self.legacy_summary
        return " ".join([self.funding_text or "", *(tie.line for tie in self.ties)])

    def forget_legacy_name(self, name: str) -> None:
        """In a record kept as whole text, make the lines opened by ``name`` read as a
        former member's.

        A line opens after the previous sentence's full stop, so a longer name that merely
        ends with ``name`` ("Maria Ana" for "Ana") is left as it is.
        """
        if self.legacy_summary is not None:
            opened = re.compile(rf"(?<=\. ){re.escape(name)}: ")
            self.legacy_summary = opened.sub(f"{FORMER_MEMBER}: ", self.legacy_summary)


class DisclosureTie(db.Model):
    """One organiser's line in a disclosure snapshot: the name they were shown under then,
    and what they had declared. When their account is deleted the line stays, nameless."""

    __tablename__ = "campaign_disclosure_ties"
    __table_args__ = (UniqueConstraint("record_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    record_id: Mapped[int] = mapped_column(
        ForeignKey("campaign_disclosure_history.id", ondelete="CASCADE")
    )
    position: Mapped[int]
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), index=True
    )
    # None once the member is gone (or was already gone): the line is a former member's.
    name: Mapped[str | None] = mapped_column(String(80))
    statement: Mapped[str] = mapped_column(Text)

    @property
    def line(self) -> str:
        return f"{self.name or FORMER_MEMBER}: {self.statement}"


class DecisionMaker(db.Model):
    """Someone who can make the change, and where they stand."""

    __tablename__ = "campaign_decision_makers"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(150))
    role: Mapped[str] = mapped_column(String(150))
    body: Mapped[str] = mapped_column(String(150))
    stance: Mapped[str] = mapped_column(String(10), default=Stance.UNKNOWN)

    campaign: Mapped[Campaign] = relationship(back_populates="decision_makers")
    history: Mapped[list[StanceChange]] = relationship(
        cascade="all, delete-orphan", order_by="StanceChange.id.desc()"
    )

    def record_stance(self, stance: Stance, note: str, source_url: str | None) -> StanceChange:
        change = StanceChange(stance=stance, note=note, source_url=source_url or None)
        self.history.append(change)
        self.stance = stance
        return change


class StanceChange(db.Model):
    __tablename__ = "campaign_stance_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_maker_id: Mapped[int] = mapped_column(
        ForeignKey("campaign_decision_makers.id", ondelete="CASCADE"), index=True
    )
    stance: Mapped[str] = mapped_column(String(10))
    note: Mapped[str] = mapped_column(String(1000))
    source_url: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StatusChange(db.Model):
    __tablename__ = "campaign_status_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(10))
    note: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignUpdate(db.Model):
    __tablename__ = "campaign_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(150))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def member_follow_key(member_id: int) -> str:
    """The key of a member's follow: it stays theirs when they change their address."""
    return f"member:{member_id}"


class Follower(db.Model):
    """A supporter: a member, or a guest whose email is confirmed.

    A guest's follow is keyed by their inbox (``core.mail.inbox_key``: one key however
    the address is spelt, as signatures are); a member's by their id (see
    ``member_follow_key``), and their mail goes to the account's current address.
    """

    __tablename__ = "campaign_followers"
    __table_args__ = (UniqueConstraint("campaign_id", "email_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254))
    email_key: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    confirmation_sent_at: Mapped[datetime | None]


class LinkedWork(db.Model):
    """A petition or meetup attached to a campaign."""

    __tablename__ = "campaign_links"
    __table_args__ = (UniqueConstraint("campaign_id", "kind", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    target_id: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
