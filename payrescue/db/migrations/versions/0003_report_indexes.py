"""indexes for the recovery figures (dashboard, report, CSV)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = [
    ("recovery_cases", "ix_recovery_cases_opened_at", ["opened_at"]),
    ("recovery_cases", "ix_recovery_cases_recovered_at", ["recovered_at"]),
    ("recovery_cases", "ix_recovery_cases_lost_at", ["lost_at"]),
    ("update_links", "ix_update_links_created_at", ["created_at"]),
    ("conversations", "ix_conversations_resolved_at", ["resolved_at"]),
]


def upgrade() -> None:
    for table, name, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for table, name, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
