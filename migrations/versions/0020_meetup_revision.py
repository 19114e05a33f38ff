"""meetup revision: counts the changes calendars show, for iCalendar's SEQUENCE

It counted every answer before, as it came from the time of the last change to the row.

Revision ID: 0020_meetup_revision
Revises: 0019_proposal_quorum_rules
Create Date: 2026-12-08 00:45:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0020_meetup_revision"
down_revision = "0019_proposal_quorum_rules"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("meetups") as batch_op:
        batch_op.add_column(
            sa.Column("revision", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade():
    with op.batch_alter_table("meetups") as batch_op:
        batch_op.drop_column("revision")
