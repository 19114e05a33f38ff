"""chapter export consent

Revision ID: 0007_export_consent
Revises: 0006_api_tokens
Create Date: 2026-11-22 04:57:35.550527

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007_export_consent'
down_revision = '0006_api_tokens'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('chapter_memberships', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shares_contact', sa.Boolean(), server_default=sa.false(), nullable=False))



def downgrade():
    with op.batch_alter_table('chapter_memberships', schema=None) as batch_op:
        batch_op.drop_column('shares_contact')

