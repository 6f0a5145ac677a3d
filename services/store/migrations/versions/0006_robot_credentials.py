"""robot credentials, assignment history and heartbeat idempotency keys

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('robots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('previous_version', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('credential_hash', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('credential_issued_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_robots_credential_hash'), ['credential_hash'], unique=True)
    with op.batch_alter_table('heartbeats', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heartbeat_id', sa.String(length=36), nullable=True))
        batch_op.create_index('ix_heartbeats_robot_id_heartbeat_id', ['robot_id', 'heartbeat_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('heartbeats', schema=None) as batch_op:
        batch_op.drop_index('ix_heartbeats_robot_id_heartbeat_id')
        batch_op.drop_column('heartbeat_id')
    with op.batch_alter_table('robots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_robots_credential_hash'))
        batch_op.drop_column('credential_issued_at')
        batch_op.drop_column('credential_hash')
        batch_op.drop_column('assigned_at')
        batch_op.drop_column('previous_version')
