"""member timeline: every message row names its member, channel, case and data; an agent
can pause a case's reminders; full-text
search over message text (PostgreSQL: a GIN index over German and English vectors; SQLite:
an FTS5 table kept by triggers)

Revision ID: 0009
Revises: 0008
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import payrescue.db.types
from payrescue.db.search import create_search_index, drop_search_index

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('member_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('case_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('channel', sa.String(length=10), nullable=False,
                                      server_default='telegram'))
        batch_op.add_column(sa.Column('data', sa.JSON(), nullable=True))
    # existing lines belong to their conversation's member; nothing else is invented
    op.execute("UPDATE messages SET member_id = (SELECT conversations.member_id FROM "
               "conversations WHERE conversations.id = messages.conversation_id)")
    op.execute("UPDATE messages SET channel = 'console' WHERE sender = 'note'")
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.alter_column('member_id', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('channel', existing_type=sa.String(length=10),
                              server_default=None)
        batch_op.alter_column('conversation_id', existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_index('ix_messages_member_id_id', ['member_id', 'id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_messages_case_id_recovery_cases'),
                                    'recovery_cases', ['case_id'], ['id'], ondelete='SET NULL')
        batch_op.create_foreign_key(batch_op.f('fk_messages_member_id_members'), 'members',
                                    ['member_id'], ['id'], ondelete='CASCADE')
    create_search_index(op.get_bind())  # after the table copy SQLite's batch mode makes
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seen_message_id', sa.Integer(), nullable=True))
    with op.batch_alter_table('recovery_cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminders_paused_until',
                                      payrescue.db.types.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('recovery_cases', schema=None) as batch_op:
        batch_op.drop_column('reminders_paused_until')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_column('seen_message_id')
    drop_search_index(op.get_bind())
    op.execute("DELETE FROM messages WHERE conversation_id IS NULL")
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_messages_member_id_members'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_messages_case_id_recovery_cases'),
                                 type_='foreignkey')
        batch_op.drop_index('ix_messages_member_id_id')
        batch_op.alter_column('conversation_id', existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column('data')
        batch_op.drop_column('channel')
        batch_op.drop_column('case_id')
        batch_op.drop_column('member_id')
