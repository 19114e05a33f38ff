"""meetup time set: when a meetup's current start time was chosen

A meetup moved to a time closer than one of its reminders' leads is told of the change,
and gets only the reminders still ahead of the new time, as a new meetup does. Meetups
that never moved leave it empty: their time was set when they were created.

Revision ID: 0017_meetup_time_set
Revises: 0016_campaign_owner_hand_over
Create Date: 2026-12-07 21:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0017_meetup_time_set"
down_revision = "0016_campaign_owner_hand_over"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("meetups") as batch_op:
        batch_op.add_column(sa.Column("time_set_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("meetups") as batch_op:
        batch_op.drop_column("time_set_at")
