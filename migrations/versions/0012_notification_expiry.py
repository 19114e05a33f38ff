"""notification expiry: until when a notification is worth sending

Revision ID: 0012_notification_expiry
Revises: 0011_chapter_invitations
Create Date: 2026-12-14 09:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0012_notification_expiry"
down_revision = "0011_chapter_invitations"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.drop_column("expires_at")
