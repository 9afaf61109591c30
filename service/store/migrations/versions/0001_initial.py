"""initial schema: referrals, transitions, consults, write-back outbox, audit

Revision ID: 0001
Revises: (none)

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('resource', sa.String(length=256), nullable=True),
    sa.Column('method', sa.String(length=8), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('detail', sa.String(length=512), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_referral_id'), ['referral_id'], unique=False)

    op.create_table('referrals',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('ehr_base_url', sa.String(length=512), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('patient_questions', sa.JSON(), nullable=False),
    sa.Column('exclude', sa.JSON(), nullable=False),
    sa.Column('excluded', sa.JSON(), nullable=False),
    sa.Column('warnings', sa.JSON(), nullable=False),
    sa.Column('readiness', sa.JSON(), nullable=False),
    sa.Column('since', sa.String(length=10), nullable=True),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('packet_identifier', sa.String(length=128), nullable=False),
    sa.Column('packet_json', sa.Text(), nullable=False),
    sa.Column('service_request_json', sa.Text(), nullable=False),
    sa.Column('task_json', sa.Text(), nullable=False),
    sa.Column('ehr_service_request', sa.String(length=256), nullable=True),
    sa.Column('ehr_task', sa.String(length=256), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.String(length=160), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_referrals_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_referrals_status'), ['status'], unique=False)

    op.create_table('consults',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('content_type', sa.String(length=128), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('document_json', sa.Text(), nullable=False),
    sa.Column('document_reference_json', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('referral_id')
    )
    op.create_table('transitions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('from_status', sa.String(length=32), nullable=True),
    sa.Column('to_status', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('transitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_transitions_referral_id'), ['referral_id'], unique=False)

    op.create_table('writeback_jobs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('referral_id', sa.String(length=64), nullable=False),
    sa.Column('consult_id', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('profile', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('budget_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['consult_id'], ['consults.id'], ),
    sa.ForeignKeyConstraint(['referral_id'], ['referrals.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('writeback_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_writeback_jobs_consult_id'), ['consult_id'], unique=False)
        batch_op.create_index('ix_writeback_jobs_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_writeback_jobs_referral_id'), ['referral_id'], unique=False)

    op.create_table('writeback_steps',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('location', sa.String(length=256), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['writeback_jobs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'step')
    )
    with op.batch_alter_table('writeback_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_writeback_steps_job_id'), ['job_id'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('writeback_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_writeback_steps_job_id'))

    op.drop_table('writeback_steps')
    with op.batch_alter_table('writeback_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_writeback_jobs_referral_id'))
        batch_op.drop_index('ix_writeback_jobs_due')
        batch_op.drop_index(batch_op.f('ix_writeback_jobs_consult_id'))

    op.drop_table('writeback_jobs')
    with op.batch_alter_table('transitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_transitions_referral_id'))

    op.drop_table('transitions')
    op.drop_table('consults')
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referrals_status'))
        batch_op.drop_index(batch_op.f('ix_referrals_patient_id'))

    op.drop_table('referrals')
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_referral_id'))

    op.drop_table('audit')
