"""ledger storage: leaves only in ledger_entries, leaner tables on SQLite

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 20:20:00.000000

The tree's level-0 nodes were stored twice, as `ledger_entries.leaf_hash` and as rows
`(0, idx)` of `ledger_nodes`; the sequencer, the proofs and the audit now read leaves
from `ledger_entries`, so those rows are deleted. On SQLite both tables are rebuilt:
`ledger_entries.idx` becomes the rowid (INTEGER PRIMARY KEY, no separate key index) and
`ledger_nodes` a WITHOUT ROWID table (its rows live in the primary key's B-tree). On
PostgreSQL only the level-0 rows go. Downgrading restores both.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ENTRY_COLUMNS = (
    "idx, kind, leaf_hash, body, salt, subject_id, ref, created_at, sequenced_at, erased_at"
)


def _entries_table(name: str, index_type: sa.types.TypeEngine[int]) -> None:
    op.create_table(
        name,
        sa.Column("idx", index_type, autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("salt", sa.LargeBinary(length=16), nullable=True),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column("ref", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequenced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("idx", name="pk_ledger_entries"),
    )


def _nodes_table(name: str, *, with_rowid: bool) -> None:
    op.create_table(
        name,
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_ledger_nodes"),
        sqlite_with_rowid=with_rowid,
    )


def _rebuild_sqlite(*, index_type: sa.types.TypeEngine[int], nodes_with_rowid: bool) -> None:
    """Copy both tables into new ones of the wanted shape, in index order, then swap."""
    _entries_table("ledger_entries_rebuilt", index_type)
    op.execute(
        f"INSERT INTO ledger_entries_rebuilt ({ENTRY_COLUMNS}) "  # noqa: S608
        f"SELECT {ENTRY_COLUMNS} FROM ledger_entries ORDER BY idx"
    )
    op.drop_table("ledger_entries")  # and its indexes, whose names are reused below
    op.rename_table("ledger_entries_rebuilt", "ledger_entries")
    op.create_index("ix_ledger_entries_ref", "ledger_entries", ["ref"], unique=False)
    op.create_index("ix_ledger_entries_subject_id", "ledger_entries", ["subject_id"], unique=False)

    _nodes_table("ledger_nodes_rebuilt", with_rowid=nodes_with_rowid)
    op.execute(
        "INSERT INTO ledger_nodes_rebuilt (level, idx, hash) "
        "SELECT level, idx, hash FROM ledger_nodes WHERE level > 0 ORDER BY level, idx"
    )
    op.drop_table("ledger_nodes")
    op.rename_table("ledger_nodes_rebuilt", "ledger_nodes")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(index_type=sa.Integer(), nodes_with_rowid=False)
    else:
        op.execute("DELETE FROM ledger_nodes WHERE level = 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(index_type=sa.BigInteger(), nodes_with_rowid=True)
    op.execute(
        "INSERT INTO ledger_nodes (level, idx, hash) SELECT 0, idx, leaf_hash FROM ledger_entries"
    )
