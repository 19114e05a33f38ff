"""petitions close at the end of their closing day

Closing dates were saved as 23:59:00 UTC, a minute short of the day the form names.

Revision ID: 0022_petitions_close_at_day_end
Revises: 0021_close_joined_invitations
Create Date: 2026-12-08 01:05:00.000000

"""

from datetime import UTC, datetime, time

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0022_petitions_close_at_day_end"
down_revision = "0021_close_joined_invitations"
branch_labels = None
depends_on = None

petitions = sa.table(
    "petitions", sa.column("id", sa.Integer), sa.column("closes_at", sa.DateTime(timezone=True))
)


def _in_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def upgrade():
    connection = op.get_bind()
    rows = connection.execute(sa.select(petitions.c.id, petitions.c.closes_at)).all()
    for petition_id, closes_at in rows:
        closes_at = _in_utc(closes_at)
        if closes_at.time() != time(23, 59):
            continue
        day_end = datetime.combine(closes_at.date(), time.max, tzinfo=UTC)
        if connection.dialect.name == "sqlite":
            day_end = day_end.replace(tzinfo=None)  # kept as UTC without an offset there
        connection.execute(
            sa.update(petitions).where(petitions.c.id == petition_id).values(closes_at=day_end)
        )


def downgrade():
    pass  # a minute later than before does no harm
