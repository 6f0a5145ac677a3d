"""episodes' frames digest, source episode id and the stored episode they duplicate

An upload whose frames (or the log's own episode id) match a stored episode is indexed as a
duplicate of it (status "duplicate", ``duplicate_of``) and stored once; a tombstone keeps the
deleted episode's frames digest, so a copy with other bytes does not bring it back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 17:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('episodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('frames_digest', sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column('source_episode_uuid', sa.String(length=128), nullable=True)
        )
        batch_op.add_column(sa.Column('duplicate_of', sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f('ix_episodes_frames_digest'), ['frames_digest'], unique=False
        )
        batch_op.create_index(
            batch_op.f('ix_episodes_source_episode_uuid'), ['source_episode_uuid'], unique=False
        )
    with op.batch_alter_table('ingest_runs', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('duplicates', sa.Integer(), nullable=False, server_default='0')
        )
    with op.batch_alter_table('episode_tombstones', schema=None) as batch_op:
        batch_op.add_column(sa.Column('frames_digest', sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f('ix_episode_tombstones_frames_digest'), ['frames_digest'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('episode_tombstones', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_episode_tombstones_frames_digest'))
        batch_op.drop_column('frames_digest')
    with op.batch_alter_table('ingest_runs', schema=None) as batch_op:
        batch_op.drop_column('duplicates')
    with op.batch_alter_table('episodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_episodes_source_episode_uuid'))
        batch_op.drop_index(batch_op.f('ix_episodes_frames_digest'))
        batch_op.drop_column('duplicate_of')
        batch_op.drop_column('source_episode_uuid')
        batch_op.drop_column('frames_digest')
