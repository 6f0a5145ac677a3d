"""episode tombstones, datasets no longer reproducible, tombstoned ingest count

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'episode_tombstones',
        sa.Column('episode_id', sa.String(length=64), nullable=False),
        sa.Column('content_hash', sa.String(length=64), nullable=False),
        sa.Column('source_uri', sa.Text(), nullable=False),
        sa.Column('source_format', sa.String(length=32), nullable=False),
        sa.Column('robot_id', sa.String(length=64), nullable=True),
        sa.Column('datasets', sa.JSON(), nullable=False),
        sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('episode_id'),
        sa.UniqueConstraint('content_hash'),
    )
    with op.batch_alter_table('episode_tombstones', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_episode_tombstones_robot_id'), ['robot_id'], unique=False
        )
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('unreproducible_at', sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column('unreproducible_reason', sa.Text(), nullable=True))
    with op.batch_alter_table('ingest_runs', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('tombstoned', sa.Integer(), nullable=False, server_default='0')
        )


def downgrade() -> None:
    with op.batch_alter_table('ingest_runs', schema=None) as batch_op:
        batch_op.drop_column('tombstoned')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('unreproducible_reason')
        batch_op.drop_column('unreproducible_at')
    with op.batch_alter_table('episode_tombstones', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_episode_tombstones_robot_id'))
    op.drop_table('episode_tombstones')
