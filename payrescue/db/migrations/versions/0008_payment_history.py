"""payment events keep their subscription, customer and normalised facts (payment truth)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subscription_ref", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("customer_ref", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("facts", sa.JSON(), nullable=True))
        batch_op.create_index("ix_payment_events_provider_subscription_ref",
                              ["provider", "subscription_ref"], unique=False)
        batch_op.create_index("ix_payment_events_provider_customer_ref",
                              ["provider", "customer_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payment_events", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_events_provider_customer_ref")
        batch_op.drop_index("ix_payment_events_provider_subscription_ref")
        batch_op.drop_column("facts")
        batch_op.drop_column("customer_ref")
        batch_op.drop_column("subscription_ref")
