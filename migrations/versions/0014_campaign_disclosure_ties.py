"""campaign disclosure ties: each organiser's line in a disclosure snapshot knows its member

So a deleted member's name leaves exactly their own lines. Records written before this
keep their whole text, as legacy_summary, and get no ties: which member each name in
them belonged to was never stored, so it cannot be recovered safely.

Revision ID: 0014_campaign_disclosure_ties
Revises: 0013_campaign_invitations
Create Date: 2026-12-07 15:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0014_campaign_disclosure_ties"
down_revision = "0013_campaign_invitations"
branch_labels = None
depends_on = None

FORMER_MEMBER = "A former member"


def upgrade():
    with op.batch_alter_table("campaign_disclosure_history", schema=None) as batch_op:
        batch_op.alter_column(
            "summary", new_column_name="legacy_summary", existing_type=sa.Text(), nullable=True
        )
        batch_op.add_column(sa.Column("funding_text", sa.Text(), nullable=True))
        batch_op.create_check_constraint(
            "funding_text_or_legacy_summary",
            "(funding_text IS NULL) <> (legacy_summary IS NULL)",
        )
    op.create_table(
        "campaign_disclosure_ties",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=80), nullable=True),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["campaign_disclosure_history.id"],
            name=op.f("fk_campaign_disclosure_ties_record_id_campaign_disclosure_history"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_campaign_disclosure_ties_member_id_members"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_disclosure_ties")),
        sa.UniqueConstraint(
            "record_id", "position", name=op.f("uq_campaign_disclosure_ties_record_id_position")
        ),
    )
    with op.batch_alter_table("campaign_disclosure_ties", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaign_disclosure_ties_member_id"), ["member_id"], unique=False
        )


def downgrade():
    # Every record goes back to one text, written as the page shows it; a deleted
    # member's lines stay nameless.
    history = sa.table(
        "campaign_disclosure_history",
        sa.column("id", sa.Integer()),
        sa.column("funding_text", sa.Text()),
        sa.column("legacy_summary", sa.Text()),
    )
    ties = sa.table(
        "campaign_disclosure_ties",
        sa.column("record_id", sa.Integer()),
        sa.column("position", sa.Integer()),
        sa.column("name", sa.String()),
        sa.column("statement", sa.Text()),
    )
    bind = op.get_bind()
    lines: dict[int, list[str]] = {}
    for record_id, name, statement in bind.execute(
        sa.select(ties.c.record_id, ties.c.name, ties.c.statement).order_by(
            ties.c.record_id, ties.c.position
        )
    ):
        lines.setdefault(record_id, []).append(f"{name or FORMER_MEMBER}: {statement}")
    for record_id, funding_text in bind.execute(
        sa.select(history.c.id, history.c.funding_text).where(history.c.funding_text.is_not(None))
    ):
        bind.execute(
            history.update()
            .where(history.c.id == record_id)
            .values(
                legacy_summary=" ".join([funding_text, *lines.get(record_id, [])]),
                funding_text=None,
            )
        )

    with op.batch_alter_table("campaign_disclosure_ties", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_disclosure_ties_member_id"))
    op.drop_table("campaign_disclosure_ties")
    with op.batch_alter_table("campaign_disclosure_history", schema=None) as batch_op:
        batch_op.drop_constraint("funding_text_or_legacy_summary", type_="check")
        batch_op.drop_column("funding_text")
        batch_op.alter_column(
            "legacy_summary", new_column_name="summary", existing_type=sa.Text(), nullable=False
        )
