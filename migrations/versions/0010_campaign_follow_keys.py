"""campaign follows: members keyed by id, confirmation re-send time

Revision ID: 0010_campaign_follow_keys
Revises: 0009_fan_out_progress
Create Date: 2026-12-10 09:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010_campaign_follow_keys"
down_revision = "0009_fan_out_progress"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("campaign_followers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("confirmation_sent_at", sa.DateTime(timezone=True), nullable=True)
        )
    # A member follows once per campaign, whatever their address was at the time: keep
    # the first of any second follow made after an address change.
    op.execute(
        "DELETE FROM campaign_followers WHERE member_id IS NOT NULL AND id NOT IN ("
        " SELECT MIN(id) FROM campaign_followers WHERE member_id IS NOT NULL"
        " GROUP BY campaign_id, member_id)"
    )
    op.execute(
        "UPDATE campaign_followers SET email_key = 'member:' || CAST(member_id AS VARCHAR)"
        " WHERE member_id IS NOT NULL"
    )


def downgrade():
    op.execute(
        "UPDATE campaign_followers SET email_key = LOWER(email) WHERE email_key LIKE 'member:%'"
    )
    with op.batch_alter_table("campaign_followers", schema=None) as batch_op:
        batch_op.drop_column("confirmation_sent_at")
