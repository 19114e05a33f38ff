"""close joined invitations: an invitation to a chapter its person joined is answered

Joining by the ordinary button left an invitation from an imported file open, to be
offered again, with the file's role, once the person left. Joining now closes it; this
closes those already left open.

Revision ID: 0021_close_joined_invitations
Revises: 0020_meetup_revision
Create Date: 2026-12-08 00:50:00.000000

"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0021_close_joined_invitations"
down_revision = "0020_meetup_revision"
branch_labels = None
depends_on = None

invitations = sa.table(
    "chapter_invitations",
    sa.column("chapter_id", sa.Integer),
    sa.column("email_key", sa.String),
    sa.column("state", sa.String),
    sa.column("answered_at", sa.DateTime(timezone=True)),
)
memberships = sa.table(
    "chapter_memberships", sa.column("chapter_id", sa.Integer), sa.column("member_id", sa.Integer)
)
members = sa.table(
    "members",
    sa.column("id", sa.Integer),
    sa.column("email", sa.String),
    sa.column("email_confirmed_at", sa.DateTime(timezone=True)),
)


def upgrade():
    connection = op.get_bind()
    now = datetime.now(UTC)
    if connection.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # kept as UTC without an offset there
    joined = (
        sa.select(memberships.c.member_id)
        .join(members, members.c.id == memberships.c.member_id)
        .where(
            memberships.c.chapter_id == invitations.c.chapter_id,
            members.c.email == invitations.c.email_key,
            members.c.email_confirmed_at.is_not(None),
        )
        .exists()
    )
    connection.execute(
        sa.update(invitations)
        .where(invitations.c.state == "pending", joined)
        .values(state="accepted", answered_at=now)
    )


def downgrade():
    pass  # an answered invitation stays answered
