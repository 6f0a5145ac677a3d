"""shadow runs and the field gate's thresholds

A shadow run is a candidate run beside the champion on the fleet's observations, its actions
logged and never executed; the field gate judges candidates of tasks without a simulator twin
on thresholds a fleet manager set beforehand, kept as numbered versions.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 18:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'shadow_runs',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('candidate_id', sa.String(length=64), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=False),
        sa.Column('champion_version', sa.String(length=32), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('started_by', sa.String(length=64), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['candidate_id'], ['candidates.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('shadow_runs', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_shadow_runs_candidate_id'), ['candidate_id'], unique=False
        )
        batch_op.create_index(batch_op.f('ix_shadow_runs_version'), ['version'], unique=False)
    op.create_table(
        'field_gate_thresholds',
        sa.Column('version', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('thresholds', sa.JSON(), nullable=False),
        sa.Column('set_by', sa.String(length=64), nullable=False),
        sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('version'),
    )
    with op.batch_alter_table('field_gate_thresholds', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_field_gate_thresholds_set_at'), ['set_at'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('field_gate_thresholds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_field_gate_thresholds_set_at'))
    op.drop_table('field_gate_thresholds')
    with op.batch_alter_table('shadow_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shadow_runs_version'))
        batch_op.drop_index(batch_op.f('ix_shadow_runs_candidate_id'))
    op.drop_table('shadow_runs')
