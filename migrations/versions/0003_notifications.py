"""notifications

Revision ID: 0003_notifications
Revises: 0002_petitions
Create Date: 2026-11-22 02:26:26.202413

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003_notifications'
down_revision = '0002_petitions'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('notification_failing_addresses',
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('email', name=op.f('pk_notification_failing_addresses'))
    )
    op.create_table('notification_preferences',
    sa.Column('subscriber', sa.String(length=270), nullable=False),
    sa.Column('category', sa.String(length=20), nullable=False),
    sa.Column('frequency', sa.String(length=12), nullable=False),
    sa.PrimaryKeyConstraint('subscriber', 'category', name=op.f('pk_notification_preferences'))
    )
    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=60), nullable=False),
    sa.Column('category', sa.String(length=20), nullable=True),
    sa.Column('transactional', sa.Boolean(), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=True),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('link', sa.String(length=500), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('audience', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('fanned_out_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('key', name=op.f('uq_notifications_key'))
    )
    op.create_table('notification_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('notification_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(length=300), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_notification_deliveries_member_id_members'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'], name=op.f('fk_notification_deliveries_notification_id_notifications'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_deliveries')),
    sa.UniqueConstraint('notification_id', 'email', name=op.f('uq_notification_deliveries_notification_id_email'))
    )
    with op.batch_alter_table('notification_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_deliveries_member_id'), ['member_id'], unique=False)
        batch_op.create_index('ix_notification_deliveries_state_email', ['state', 'email'], unique=False)

    op.create_table('notification_notices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('notification_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_notification_notices_member_id_members'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'], name=op.f('fk_notification_notices_notification_id_notifications'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_notices')),
    sa.UniqueConstraint('notification_id', 'member_id', name=op.f('uq_notification_notices_notification_id_member_id'))
    )
    with op.batch_alter_table('notification_notices', schema=None) as batch_op:
        batch_op.create_index('ix_notification_notices_member_read', ['member_id', 'read_at'], unique=False)



def downgrade():
    with op.batch_alter_table('notification_notices', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_notices_member_read')

    op.drop_table('notification_notices')
    with op.batch_alter_table('notification_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_deliveries_state_email')
        batch_op.drop_index(batch_op.f('ix_notification_deliveries_member_id'))

    op.drop_table('notification_deliveries')
    op.drop_table('notifications')
    op.drop_table('notification_preferences')
    op.drop_table('notification_failing_addresses')
