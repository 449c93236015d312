"""server-side console sessions, disabled agents, rejected provider events

Revision ID: 0006
Revises: 0005
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import payrescue.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("rejected_events",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("provider", sa.String(length=20), nullable=False),
    sa.Column("event_ref", sa.String(length=200), nullable=True),
    sa.Column("reason", sa.String(length=300), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("received_at", payrescue.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column("seen_at", payrescue.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_events"))
    )
    with op.batch_alter_table("rejected_events", schema=None) as batch_op:
        batch_op.create_index("ix_rejected_events_received_at", ["received_at"], unique=False)

    op.create_table("console_sessions",
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("agent_id", sa.Integer(), nullable=False),
    sa.Column("created_at", payrescue.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", payrescue.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column("expires_at", payrescue.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_console_sessions_agent_id_agents"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions"))
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_agent_id"), ["agent_id"], unique=False)

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_at", payrescue.db.types.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("disabled_at")

    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sessions_agent_id"))

    op.drop_table("console_sessions")
    with op.batch_alter_table("rejected_events", schema=None) as batch_op:
        batch_op.drop_index("ix_rejected_events_received_at")

    op.drop_table("rejected_events")
