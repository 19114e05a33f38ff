"""petitions

Revision ID: 0002_petitions
Revises: 0001_members
Create Date: 2026-11-22 02:04:54.170783

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002_petitions'
down_revision = '0001_members'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('petitions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organiser_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=150), nullable=False),
    sa.Column('ask', sa.Text(), nullable=False),
    sa.Column('decision_maker_name', sa.String(length=150), nullable=False),
    sa.Column('decision_maker_role', sa.String(length=150), nullable=False),
    sa.Column('city', sa.String(length=80), nullable=False),
    sa.Column('city_slug', sa.String(length=80), nullable=False),
    sa.Column('topic', sa.String(length=40), nullable=False),
    sa.Column('goal', sa.Integer(), nullable=False),
    sa.Column('closes_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome_note', sa.Text(), nullable=True),
    sa.Column('hidden_reason', sa.String(length=500), nullable=True),
    sa.Column('signature_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organiser_id'], ['members.id'], name=op.f('fk_petitions_organiser_id_members'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_petitions'))
    )
    with op.batch_alter_table('petitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_petitions_organiser_id'), ['organiser_id'], unique=False)
        batch_op.create_index('ix_petitions_state_city', ['state', 'city_slug'], unique=False)

    op.create_table('petition_city_counts',
    sa.Column('petition_id', sa.Integer(), nullable=False),
    sa.Column('city_slug', sa.String(length=80), nullable=False),
    sa.Column('city', sa.String(length=80), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_petition_city_counts_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('petition_id', 'city_slug', name=op.f('pk_petition_city_counts'))
    )
    op.create_table('petition_hourly_counts',
    sa.Column('petition_id', sa.Integer(), nullable=False),
    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_petition_hourly_counts_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('petition_id', 'hour', name=op.f('pk_petition_hourly_counts'))
    )
    op.create_table('petition_milestones',
    sa.Column('petition_id', sa.Integer(), nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('reached_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_petition_milestones_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('petition_id', 'threshold', name=op.f('pk_petition_milestones'))
    )
    op.create_table('petition_updates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('petition_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=150), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_petition_updates_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_petition_updates'))
    )
    with op.batch_alter_table('petition_updates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_petition_updates_petition_id'), ['petition_id'], unique=False)

    op.create_table('signatures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('petition_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('email_key', sa.String(length=254), nullable=False),
    sa.Column('city', sa.String(length=80), nullable=False),
    sa.Column('city_slug', sa.String(length=80), nullable=False),
    sa.Column('comment', sa.String(length=500), nullable=True),
    sa.Column('show_name', sa.Boolean(), nullable=False),
    sa.Column('wants_updates', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('counted', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('confirmation_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_signatures_member_id_members'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['petition_id'], ['petitions.id'], name=op.f('fk_signatures_petition_id_petitions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signatures')),
    sa.UniqueConstraint('petition_id', 'email_key', name=op.f('uq_signatures_petition_id_email_key'))
    )
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signatures_member_id'), ['member_id'], unique=False)
        batch_op.create_index('ix_signatures_petition_confirmed_at', ['petition_id', 'confirmed_at'], unique=False)
        batch_op.create_index('ix_signatures_petition_counted', ['petition_id', 'counted', 'state'], unique=False)
        batch_op.create_index('ix_signatures_state_created_at', ['state', 'created_at'], unique=False)

    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_moderator', sa.Boolean(), server_default=sa.false(), nullable=False))



def downgrade():
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('is_moderator')

    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.drop_index('ix_signatures_state_created_at')
        batch_op.drop_index('ix_signatures_petition_counted')
        batch_op.drop_index('ix_signatures_petition_confirmed_at')
        batch_op.drop_index(batch_op.f('ix_signatures_member_id'))

    op.drop_table('signatures')
    with op.batch_alter_table('petition_updates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_petition_updates_petition_id'))

    op.drop_table('petition_updates')
    op.drop_table('petition_milestones')
    op.drop_table('petition_hourly_counts')
    op.drop_table('petition_city_counts')
    with op.batch_alter_table('petitions', schema=None) as batch_op:
        batch_op.drop_index('ix_petitions_state_city')
        batch_op.drop_index(batch_op.f('ix_petitions_organiser_id'))

    op.drop_table('petitions')
