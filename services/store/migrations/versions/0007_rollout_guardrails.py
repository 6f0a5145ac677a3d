"""rollout guardrails: safety events and emergency stops in heartbeats

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('heartbeats', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('safety_events', sa.Integer(), server_default='0', nullable=False)
        )
        batch_op.add_column(
            sa.Column('emergency_stop', sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('heartbeats', schema=None) as batch_op:
        batch_op.drop_column('emergency_stop')
        batch_op.drop_column('safety_events')
