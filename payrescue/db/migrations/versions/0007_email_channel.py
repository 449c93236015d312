"""e-mail as a second channel: outbox rows name their channel, members an e-mail problem

Revision ID: 0007
Revises: 0006
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import payrescue.db.types

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_problem', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('invited_at', payrescue.db.types.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_message_id', sa.String(length=250), nullable=True))

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=10), server_default='telegram', nullable=False))
        batch_op.add_column(sa.Column('email_message_id', sa.String(length=250), nullable=True))
        batch_op.create_index(batch_op.f('ix_outbox_email_message_id'), ['email_message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_email_message_id'))
        batch_op.drop_column('email_message_id')
        batch_op.drop_column('channel')

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('email_message_id')

    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('invited_at')
        batch_op.drop_column('email_problem')
