"""a counter of cleaned-up erasures for the ledger sequencer

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 08:20:00.000000

The sequencer checks, under its lock, that no erasure was cleaned up since it gathered
a batch. It counted `erasures.cleaned_at` for that, reading the whole table twice per
round with work to do. `ledger_counters` holds the number instead, in one row
(`erasures_cleaned`) that each clean-up increments in its own transaction; the upgrade
starts it at the count so far.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_counters",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_ledger_counters"),
    )
    op.get_bind().execute(
        sa.text(
            "INSERT INTO ledger_counters (name, value)"
            " SELECT 'erasures_cleaned', count(cleaned_at) FROM erasures"
        )
    )


def downgrade() -> None:
    op.drop_table("ledger_counters")
