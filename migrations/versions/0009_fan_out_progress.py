"""fan-out progress

Revision ID: 0009_fan_out_progress
Revises: 0008_delivery_claims
Create Date: 2026-12-03 08:50:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009_fan_out_progress'
down_revision = '0008_delivery_claims'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fan_out_after', sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column('fan_out_paged_at', sa.DateTime(timezone=True), nullable=True)
        )


def downgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('fan_out_paged_at')
        batch_op.drop_column('fan_out_after')
