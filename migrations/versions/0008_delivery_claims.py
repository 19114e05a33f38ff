"""delivery claims

Revision ID: 0008_delivery_claims
Revises: 0007_export_consent
Create Date: 2026-11-22 07:52:03.228023

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008_delivery_claims'
down_revision = '0007_export_consent'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('notification_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))



def downgrade():
    with op.batch_alter_table('notification_deliveries', schema=None) as batch_op:
        batch_op.drop_column('claimed_at')

