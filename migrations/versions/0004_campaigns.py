"""campaigns

Revision ID: 0004_campaigns
Revises: 0003_notifications
Create Date: 2026-11-22 02:42:24.089052

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004_campaigns'
down_revision = '0003_notifications'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=150), nullable=False),
    sa.Column('summary', sa.String(length=500), nullable=False),
    sa.Column('change_wanted', sa.Text(), nullable=False),
    sa.Column('city', sa.String(length=80), nullable=False),
    sa.Column('city_slug', sa.String(length=80), nullable=False),
    sa.Column('topic', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('status_note', sa.String(length=1000), nullable=True),
    sa.Column('funding', sa.String(length=10), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns'))
    )
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.create_index('ix_campaigns_status_city', ['status', 'city_slug'], unique=False)

    op.create_table('campaign_decision_makers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=150), nullable=False),
    sa.Column('role', sa.String(length=150), nullable=False),
    sa.Column('body', sa.String(length=150), nullable=False),
    sa.Column('stance', sa.String(length=10), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_decision_makers_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_decision_makers'))
    )
    with op.batch_alter_table('campaign_decision_makers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_decision_makers_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('campaign_disclosure_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('industry_backed', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_disclosure_history_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_disclosure_history'))
    )
    with op.batch_alter_table('campaign_disclosure_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_disclosure_history_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('campaign_followers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('email_key', sa.String(length=254), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_followers_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_campaign_followers_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_followers')),
    sa.UniqueConstraint('campaign_id', 'email_key', name=op.f('uq_campaign_followers_campaign_id_email_key'))
    )
    with op.batch_alter_table('campaign_followers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_followers_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_campaign_followers_member_id'), ['member_id'], unique=False)

    op.create_table('campaign_funders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=150), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('amount_band', sa.String(length=20), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_funders_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_funders'))
    )
    with op.batch_alter_table('campaign_funders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_funders_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('campaign_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_links_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_links')),
    sa.UniqueConstraint('campaign_id', 'kind', 'target_id', name=op.f('uq_campaign_links_campaign_id_kind_target_id'))
    )
    with op.batch_alter_table('campaign_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_links_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('campaign_organisers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=True),
    sa.Column('is_owner', sa.Boolean(), nullable=False),
    sa.Column('affiliation_declared_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('affiliation_company', sa.String(length=100), nullable=True),
    sa.Column('affiliation_topic', sa.String(length=40), nullable=True),
    sa.Column('affiliation_details', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_organisers_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_campaign_organisers_member_id_members'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_organisers')),
    sa.UniqueConstraint('campaign_id', 'member_id', name=op.f('uq_campaign_organisers_campaign_id_member_id'))
    )
    with op.batch_alter_table('campaign_organisers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_organisers_member_id'), ['member_id'], unique=False)

    op.create_table('campaign_status_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('note', sa.String(length=1000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_status_changes_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_status_changes'))
    )
    with op.batch_alter_table('campaign_status_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_status_changes_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('campaign_updates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=150), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_updates_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_updates'))
    )
    with op.batch_alter_table('campaign_updates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_updates_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('campaign_stance_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('decision_maker_id', sa.Integer(), nullable=False),
    sa.Column('stance', sa.String(length=10), nullable=False),
    sa.Column('note', sa.String(length=1000), nullable=False),
    sa.Column('source_url', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decision_maker_id'], ['campaign_decision_makers.id'], name=op.f('fk_campaign_stance_changes_decision_maker_id_campaign_decision_makers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_stance_changes'))
    )
    with op.batch_alter_table('campaign_stance_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_stance_changes_decision_maker_id'), ['decision_maker_id'], unique=False)



def downgrade():
    with op.batch_alter_table('campaign_stance_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_stance_changes_decision_maker_id'))

    op.drop_table('campaign_stance_changes')
    with op.batch_alter_table('campaign_updates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_updates_campaign_id'))

    op.drop_table('campaign_updates')
    with op.batch_alter_table('campaign_status_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_status_changes_campaign_id'))

    op.drop_table('campaign_status_changes')
    with op.batch_alter_table('campaign_organisers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_organisers_member_id'))

    op.drop_table('campaign_organisers')
    with op.batch_alter_table('campaign_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_links_campaign_id'))

    op.drop_table('campaign_links')
    with op.batch_alter_table('campaign_funders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_funders_campaign_id'))

    op.drop_table('campaign_funders')
    with op.batch_alter_table('campaign_followers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_followers_member_id'))
        batch_op.drop_index(batch_op.f('ix_campaign_followers_campaign_id'))

    op.drop_table('campaign_followers')
    with op.batch_alter_table('campaign_disclosure_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_disclosure_history_campaign_id'))

    op.drop_table('campaign_disclosure_history')
    with op.batch_alter_table('campaign_decision_makers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_decision_makers_campaign_id'))

    op.drop_table('campaign_decision_makers')
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_index('ix_campaigns_status_city')

    op.drop_table('campaigns')
