"""campaign follows: a guest's follow is keyed by inbox, as signatures are

Spellings of one inbox (``A.B+x@gmail.com`` and ``ab@gmail.com``) followed a campaign
once each. Each campaign keeps one follow per inbox: a confirmed one before a pending
one, then the oldest.

Revision ID: 0018_campaign_follow_inboxes
Revises: 0017_meetup_time_set
Create Date: 2026-12-08 00:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

from core.mail import inbox_key

# revision identifiers, used by Alembic.
revision = "0018_campaign_follow_inboxes"
down_revision = "0017_meetup_time_set"
branch_labels = None
depends_on = None

followers = sa.table(
    "campaign_followers",
    sa.column("id", sa.Integer),
    sa.column("campaign_id", sa.Integer),
    sa.column("member_id", sa.Integer),
    sa.column("email", sa.String),
    sa.column("email_key", sa.String),
    sa.column("confirmed_at", sa.DateTime),
)


def upgrade():
    connection = op.get_bind()
    guests = connection.execute(
        sa.select(followers.c.id, followers.c.campaign_id, followers.c.email)
        .where(followers.c.member_id.is_(None))
        .order_by(followers.c.confirmed_at.is_(None), followers.c.id)
    ).all()
    kept: dict[tuple[int, str], int] = {}
    for row in guests:
        kept.setdefault((row.campaign_id, inbox_key(row.email)), row.id)
    dropped = [row.id for row in guests if row.id not in kept.values()]
    if dropped:
        connection.execute(sa.delete(followers).where(followers.c.id.in_(dropped)))
    for (_, key), follower_id in kept.items():
        connection.execute(
            sa.update(followers).where(followers.c.id == follower_id).values(email_key=key)
        )


def downgrade():
    op.execute(
        "UPDATE campaign_followers SET email_key = LOWER(TRIM(email)) WHERE member_id IS NULL"
    )
