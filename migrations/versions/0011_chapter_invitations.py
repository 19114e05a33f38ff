"""chapter invitations: people an imported chapter's file lists, until they answer

Revision ID: 0011_chapter_invitations
Revises: 0010_campaign_follow_keys
Create Date: 2026-12-12 09:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0011_chapter_invitations"
down_revision = "0010_campaign_follow_keys"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "chapter_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chapter_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("email_key", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["chapter_id"],
            ["chapters.id"],
            name=op.f("fk_chapter_invitations_chapter_id_chapters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chapter_invitations")),
        sa.UniqueConstraint(
            "chapter_id", "email_key", name=op.f("uq_chapter_invitations_chapter_id_email_key")
        ),
    )
    with op.batch_alter_table("chapter_invitations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_chapter_invitations_email_key"), ["email_key"], unique=False
        )


def downgrade():
    with op.batch_alter_table("chapter_invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chapter_invitations_email_key"))
    op.drop_table("chapter_invitations")
