"""transparency ledger

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 18:58:41.736285
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_ledger_checkpoints")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("salt", sa.LargeBinary(length=16), nullable=True),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column("ref", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequenced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_entries_ref"), ["ref"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_subject_id"), ["subject_id"], unique=False
        )

    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_ledger_nodes")),
    )
    op.create_table(
        "ledger_queue",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("salt", sa.LargeBinary(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column("ref", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_queue")),
    )
    with op.batch_alter_table("access_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_access_records_unsequenced",
            ["id"],
            unique=False,
            sqlite_where=sa.text("ledger_index IS NULL"),
            postgresql_where=sa.text("ledger_index IS NULL"),
        )

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ledger_index", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            "ix_events_unsequenced",
            ["id"],
            unique=False,
            sqlite_where=sa.text("ledger_index IS NULL"),
            postgresql_where=sa.text("ledger_index IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_events_unsequenced",
            sqlite_where=sa.text("ledger_index IS NULL"),
            postgresql_where=sa.text("ledger_index IS NULL"),
        )
        batch_op.drop_column("ledger_index")

    with op.batch_alter_table("access_records", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_access_records_unsequenced",
            sqlite_where=sa.text("ledger_index IS NULL"),
            postgresql_where=sa.text("ledger_index IS NULL"),
        )

    op.drop_table("ledger_queue")
    op.drop_table("ledger_nodes")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_subject_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_entries_ref"))

    op.drop_table("ledger_entries")
    op.drop_table("ledger_checkpoints")
