"""campaign invitations: co-organisers join a campaign only by accepting an invitation

Revision ID: 0013_campaign_invitations
Revises: 0012_notification_expiry
Create Date: 2026-12-16 09:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0013_campaign_invitations"
down_revision = "0012_notification_expiry"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "campaign_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("email_key", sa.String(length=254), nullable=False),
        sa.Column("invited_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_invitations_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_id"],
            ["members.id"],
            name=op.f("fk_campaign_invitations_invited_by_id_members"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_invitations")),
        sa.UniqueConstraint(
            "campaign_id", "email_key", name=op.f("uq_campaign_invitations_campaign_id_email_key")
        ),
    )
    with op.batch_alter_table("campaign_invitations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaign_invitations_email_key"), ["email_key"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_campaign_invitations_invited_by_id"), ["invited_by_id"], unique=False
        )


def downgrade():
    with op.batch_alter_table("campaign_invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_invitations_invited_by_id"))
        batch_op.drop_index(batch_op.f("ix_campaign_invitations_email_key"))
    op.drop_table("campaign_invitations")
