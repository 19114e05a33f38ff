"""campaign owner hand-over: campaigns whose owner deleted their account get an owner again

Until now a deleted owner's row kept the owner's flag, so no one could ever invite or
remove co-organisers again. Each such campaign passes, as it now does at deletion, to the
longest-standing co-organiser who has declared their ties, or else to the longest-standing
one. A published campaign with no co-organiser left is archived (unless it had ended) and
its pending invitations dropped. A draft with no one left is kept: a migration deletes
nobody's work.

Data only: downgrading changes nothing back, since the old state was the defect.

Revision ID: 0016_campaign_owner_hand_over
Revises: 0014_campaign_disclosure_ties
Create Date: 2026-12-07 18:00:00.000000

"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0016_campaign_owner_hand_over"
down_revision = "0014_campaign_disclosure_ties"
branch_labels = None
depends_on = None

ABANDONED_NOTE = "Its last organiser left Groundswell."

organisers = sa.table(
    "campaign_organisers",
    sa.column("id", sa.Integer),
    sa.column("campaign_id", sa.Integer),
    sa.column("member_id", sa.Integer),
    sa.column("is_owner", sa.Boolean),
    sa.column("affiliation_declared_at", sa.DateTime(timezone=True)),
)
campaigns = sa.table(
    "campaigns",
    sa.column("id", sa.Integer),
    sa.column("published_at", sa.DateTime(timezone=True)),
    sa.column("status", sa.String),
    sa.column("status_note", sa.String),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
status_changes = sa.table(
    "campaign_status_changes",
    sa.column("campaign_id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("note", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
invitations = sa.table(
    "campaign_invitations",
    sa.column("campaign_id", sa.Integer),
    sa.column("state", sa.String),
)


def upgrade():
    conn = op.get_bind()
    stranded = conn.execute(
        sa.select(organisers.c.campaign_id)
        .where(organisers.c.is_owner.is_(sa.true()), organisers.c.member_id.is_(None))
        .order_by(organisers.c.campaign_id)
    ).scalars()
    for campaign_id in list(stranded):
        hand_over(conn, campaign_id)


def hand_over(conn, campaign_id: int) -> None:
    """Give the campaign to its successor, or archive it when no one is left."""
    of_campaign = organisers.c.campaign_id == campaign_id
    successor = conn.execute(
        sa.select(organisers.c.id)
        .where(of_campaign, organisers.c.member_id.is_not(None))
        .order_by(
            sa.case((organisers.c.affiliation_declared_at.is_(None), 1), else_=0),
            organisers.c.id,
        )
        .limit(1)
    ).scalar()
    conn.execute(
        sa.update(organisers)
        .where(of_campaign, organisers.c.member_id.is_(None))
        .values(is_owner=False)
    )
    if successor is not None:
        conn.execute(
            sa.update(organisers).where(organisers.c.id == successor).values(is_owner=True)
        )
        return
    campaign = conn.execute(
        sa.select(campaigns.c.published_at, campaigns.c.status).where(campaigns.c.id == campaign_id)
    ).one()
    if campaign.published_at is None:
        return
    conn.execute(
        sa.delete(invitations).where(
            invitations.c.campaign_id == campaign_id, invitations.c.state == "pending"
        )
    )
    if campaign.status in ("active", "paused"):
        now = datetime.now(UTC)
        conn.execute(
            sa.update(campaigns)
            .where(campaigns.c.id == campaign_id)
            .values(status="archived", status_note=ABANDONED_NOTE, updated_at=now)
        )
        conn.execute(
            sa.insert(status_changes).values(
                campaign_id=campaign_id, status="archived", note=ABANDONED_NOTE, created_at=now
            )
        )


def downgrade():
    pass
