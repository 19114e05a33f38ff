"""proposal quorum rules: each vote keeps the chapter's quorum settings from its opening

Proposals already made take their chapter's settings as they stand now.

Revision ID: 0019_proposal_quorum_rules
Revises: 0018_campaign_follow_inboxes
Create Date: 2026-12-08 00:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0019_proposal_quorum_rules"
down_revision = "0018_campaign_follow_inboxes"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("proposals") as batch_op:
        batch_op.add_column(sa.Column("quorum_percent", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("quorum_minimum", sa.Integer(), nullable=True))
    for column in ("quorum_percent", "quorum_minimum"):
        op.execute(
            f"UPDATE proposals SET {column} ="
            f" (SELECT chapters.{column} FROM chapters WHERE chapters.id = proposals.chapter_id)"
        )
    with op.batch_alter_table("proposals") as batch_op:
        batch_op.alter_column("quorum_percent", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("quorum_minimum", existing_type=sa.Integer(), nullable=False)


def downgrade():
    with op.batch_alter_table("proposals") as batch_op:
        batch_op.drop_column("quorum_minimum")
        batch_op.drop_column("quorum_percent")
