"""chapters

Revision ID: 0005_chapters
Revises: 0004_campaigns
Create Date: 2026-11-22 04:47:12.963006

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005_chapters'
down_revision = '0004_campaigns'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('chapters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=120), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('city', sa.String(length=80), nullable=False),
    sa.Column('city_slug', sa.String(length=80), nullable=False),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('members_can_schedule', sa.Boolean(), nullable=False),
    sa.Column('quorum_percent', sa.Integer(), nullable=False),
    sa.Column('quorum_minimum', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chapters')),
    sa.UniqueConstraint('slug', name=op.f('uq_chapters_slug'))
    )
    with op.batch_alter_table('chapters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chapters_city_slug'), ['city_slug'], unique=False)

    op.create_table('calendar_keys',
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('secret', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_calendar_keys_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_calendar_keys')),
    sa.UniqueConstraint('secret', name=op.f('uq_calendar_keys_secret'))
    )
    op.create_table('chapter_memberships',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('chapter_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=10), nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chapter_id'], ['chapters.id'], name=op.f('fk_chapter_memberships_chapter_id_chapters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_chapter_memberships_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chapter_memberships')),
    sa.UniqueConstraint('chapter_id', 'member_id', name=op.f('uq_chapter_memberships_chapter_id_member_id'))
    )
    with op.batch_alter_table('chapter_memberships', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chapter_memberships_member_id'), ['member_id'], unique=False)

    op.create_table('meetups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('chapter_id', sa.Integer(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=150), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('venue', sa.String(length=150), nullable=True),
    sa.Column('address', sa.String(length=300), nullable=True),
    sa.Column('online_link', sa.String(length=500), nullable=True),
    sa.Column('capacity', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rsvp_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chapter_id'], ['chapters.id'], name=op.f('fk_meetups_chapter_id_chapters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by_id'], ['members.id'], name=op.f('fk_meetups_created_by_id_members'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_meetups'))
    )
    with op.batch_alter_table('meetups', schema=None) as batch_op:
        batch_op.create_index('ix_meetups_chapter_starts', ['chapter_id', 'starts_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_meetups_starts_at'), ['starts_at'], unique=False)

    op.create_table('proposals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('chapter_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=150), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('closes_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('outcome', sa.String(length=10), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('members_at_close', sa.Integer(), nullable=True),
    sa.Column('votes_needed', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['members.id'], name=op.f('fk_proposals_author_id_members'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['chapter_id'], ['chapters.id'], name=op.f('fk_proposals_chapter_id_chapters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_proposals'))
    )
    with op.batch_alter_table('proposals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_proposals_chapter_id'), ['chapter_id'], unique=False)
        batch_op.create_index('ix_proposals_state_closes', ['state', 'closes_at'], unique=False)

    op.create_table('meetup_rsvps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('meetup_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('responded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('waitlisted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attended', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['meetup_id'], ['meetups.id'], name=op.f('fk_meetup_rsvps_meetup_id_meetups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_meetup_rsvps_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_meetup_rsvps')),
    sa.UniqueConstraint('meetup_id', 'member_id', name=op.f('uq_meetup_rsvps_meetup_id_member_id'))
    )
    with op.batch_alter_table('meetup_rsvps', schema=None) as batch_op:
        batch_op.create_index('ix_meetup_rsvps_meetup_status', ['meetup_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_meetup_rsvps_member_id'), ['member_id'], unique=False)

    op.create_table('proposal_votes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('proposal_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=True),
    sa.Column('choice', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_proposal_votes_member_id_members'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id'], name=op.f('fk_proposal_votes_proposal_id_proposals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_proposal_votes')),
    sa.UniqueConstraint('proposal_id', 'member_id', name=op.f('uq_proposal_votes_proposal_id_member_id'))
    )
    with op.batch_alter_table('proposal_votes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_proposal_votes_member_id'), ['member_id'], unique=False)



def downgrade():
    with op.batch_alter_table('proposal_votes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_proposal_votes_member_id'))

    op.drop_table('proposal_votes')
    with op.batch_alter_table('meetup_rsvps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_meetup_rsvps_member_id'))
        batch_op.drop_index('ix_meetup_rsvps_meetup_status')

    op.drop_table('meetup_rsvps')
    with op.batch_alter_table('proposals', schema=None) as batch_op:
        batch_op.drop_index('ix_proposals_state_closes')
        batch_op.drop_index(batch_op.f('ix_proposals_chapter_id'))

    op.drop_table('proposals')
    with op.batch_alter_table('meetups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_meetups_starts_at'))
        batch_op.drop_index('ix_meetups_chapter_starts')

    op.drop_table('meetups')
    with op.batch_alter_table('chapter_memberships', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chapter_memberships_member_id'))

    op.drop_table('chapter_memberships')
    op.drop_table('calendar_keys')
    with op.batch_alter_table('chapters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chapters_city_slug'))

    op.drop_table('chapters')
