"""auth, CDS Hooks and API-token tables under Alembic

Revision ID: 0002
Revises: 0001

Until this revision the SMART tables (auth_pending_launches, auth_sessions) and the CDS Hooks tables (cds_card,
cds_feedback, cds_jwt_seen) were made by `create_all` at startup. A database that already has them keeps them
(each table is created only when missing); api_tokens is new (inbound server-to-server API access, issue 4).

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = ("auth_pending_launches", "auth_sessions", "cds_card", "cds_feedback", "cds_jwt_seen", "api_tokens")


def upgrade() -> None:
    """Upgrade schema."""
    existing = set(sa.inspect(op.get_bind()).get_table_names())

    if "auth_pending_launches" not in existing:
        op.create_table('auth_pending_launches',
        sa.Column('state_hash', sa.String(length=64), nullable=False),
        sa.Column('browser_hash', sa.String(length=64), nullable=False),
        sa.Column('iss', sa.Text(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('redirect_uri', sa.Text(), nullable=False),
        sa.Column('token_endpoint', sa.Text(), nullable=False),
        sa.Column('verifier', sa.Text(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('state_hash')
        )
    if "auth_sessions" not in existing:
        op.create_table('auth_sessions',
        sa.Column('id_hash', sa.String(length=64), nullable=False),
        sa.Column('iss', sa.Text(), nullable=False),
        sa.Column('client_id', sa.Text(), nullable=False),
        sa.Column('token_endpoint', sa.Text(), nullable=False),
        sa.Column('patient', sa.Text(), nullable=True),
        sa.Column('encounter', sa.Text(), nullable=True),
        sa.Column('fhir_user', sa.Text(), nullable=True),
        sa.Column('need_patient_banner', sa.Boolean(), nullable=False),
        sa.Column('fhir_context', sa.Text(), nullable=True),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('access_token', sa.Text(), nullable=False),
        sa.Column('refresh_token', sa.Text(), nullable=True),
        sa.Column('access_expires_at', sa.Float(), nullable=False),
        sa.Column('generation', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('ended', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id_hash')
        )
    if "cds_card" not in existing:
        op.create_table('cds_card',
        sa.Column('uuid', sa.String(length=64), nullable=False),
        sa.Column('service_id', sa.String(length=64), nullable=False),
        sa.Column('hook', sa.String(length=64), nullable=False),
        sa.Column('hook_instance', sa.String(length=1024), nullable=False),
        sa.Column('indicator', sa.String(length=16), nullable=False),
        sa.Column('client', sa.String(length=1024), nullable=True),
        sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('uuid')
        )
    if "cds_feedback" not in existing:
        op.create_table('cds_feedback',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('service_id', sa.String(length=64), nullable=False),
        sa.Column('card', sa.String(length=256), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('accepted_suggestions', sa.JSON(), nullable=True),
        sa.Column('override_reason', sa.JSON(), nullable=True),
        sa.Column('outcome_timestamp', sa.DateTime(timezone=True), nullable=False),
        sa.Column('client', sa.String(length=1024), nullable=True),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id')
        )
        with op.batch_alter_table('cds_feedback', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_cds_feedback_card'), ['card'], unique=False)
    if "cds_jwt_seen" not in existing:
        op.create_table('cds_jwt_seen',
        sa.Column('iss', sa.String(length=1024), nullable=False),
        sa.Column('jti', sa.String(length=512), nullable=False),
        sa.Column('expires_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('iss', 'jti')
        )
        with op.batch_alter_table('cds_jwt_seen', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_cds_jwt_seen_expires_at'), ['expires_at'], unique=False)
    op.create_table('api_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=256), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_expires_at'))
    op.drop_table('api_tokens')
    with op.batch_alter_table('cds_jwt_seen', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cds_jwt_seen_expires_at'))
    op.drop_table('cds_jwt_seen')
    with op.batch_alter_table('cds_feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cds_feedback_card'))
    op.drop_table('cds_feedback')
    op.drop_table('cds_card')
    op.drop_table('auth_sessions')
    op.drop_table('auth_pending_launches')
