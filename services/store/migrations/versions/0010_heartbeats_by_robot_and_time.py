"""heartbeats indexed by robot and time

A heartbeat's plausibility check reads the robot's previous heartbeat time on every request;
without this index that read scans all of the robot's heartbeats, which grow every 2 s.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 15:55:00
"""

from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_heartbeats_robot_id_at', 'heartbeats', ['robot_id', 'at'])


def downgrade() -> None:
    op.drop_index('ix_heartbeats_robot_id_at', table_name='heartbeats')
