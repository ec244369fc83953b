"""ledger entries without secondary indexes; entries found through what they record

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 23:20:00.000000

`ledger_entries` loses its `subject_id` and `ref` columns and their indexes, which took
a random index insert per appended entry. An entry is now found from the row it
records: `events.ledger_index` and `access_records.ledger_index` as before, the new
`consents.ledger_index`, and the new `ledger_refs` table for the queued kinds looked up
by name (erasure receipts, key rotations). The upgrade fills both from the old columns
before dropping them; the downgrade puts the columns back from the same sources.
`ledger_queue` gets `leaf_hash`, computed when an entry is queued (and here for the
entries waiting at the upgrade).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


LEAF_PREFIX = b"parcelvault-ledger/v1\n"


def _leaf_hash(kind: str, salt: bytes, body: bytes) -> bytes:
    """As `ledger.log.entry_leaf_hash` computes it (copied: a migration keeps working
    whatever later code does)."""
    data = LEAF_PREFIX + kind.encode() + b"\n" + hashlib.sha256(salt + body).digest()
    return hashlib.sha256(b"\x00" + data).digest()


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    with op.batch_alter_table("ledger_queue", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=True))
    waiting = bind.execute(sa.text("SELECT id, kind, salt, body FROM ledger_queue")).all()
    if waiting:
        bind.execute(
            sa.text("UPDATE ledger_queue SET leaf_hash = :leaf WHERE id = :id"),
            [
                {"leaf": _leaf_hash(kind, bytes(salt), bytes(body)), "id": queue_id}
                for queue_id, kind, salt, body in waiting
            ],
        )
    op.create_table(
        "ledger_refs",
        sa.Column("ref", sa.String(length=80), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ref", name="pk_ledger_refs"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO ledger_refs (ref, idx) SELECT ref, min(idx) FROM ledger_entries "
        "WHERE ref IS NOT NULL AND ref NOT LIKE 'event:%' AND ref NOT LIKE 'access:%' "
        "AND ref NOT LIKE 'consent:%' GROUP BY ref"
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ledger_index", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE consents SET ledger_index = (SELECT min(e.idx) FROM ledger_entries AS e "
        "WHERE e.ref = 'consent:' || CAST(consents.id AS VARCHAR(20)))"
    )
    with op.batch_alter_table(
        "ledger_entries", schema=None, recreate="always" if sqlite else "auto"
    ) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_ref"))
        batch_op.drop_index(batch_op.f("ix_ledger_entries_subject_id"))
        batch_op.drop_column("ref")
        batch_op.drop_column("subject_id")


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("ref", sa.String(length=80), nullable=True))
    # Temporary lookups by entry index, so that each update below is a join, not a scan.
    op.create_index("ix_tmp_events_ledger", "events", ["ledger_index"])
    op.create_index("ix_tmp_access_ledger", "access_records", ["ledger_index"])
    op.create_index("ix_tmp_consents_ledger", "consents", ["ledger_index"])
    op.execute(
        "UPDATE ledger_entries SET "
        "ref = (SELECT 'event:' || CAST(v.tenant_id AS VARCHAR(20)) || ':' || v.event_id "
        "FROM events AS v WHERE v.ledger_index = ledger_entries.idx), "
        "subject_id = (SELECT s.subject_id FROM events AS v JOIN shipments AS s "
        "ON s.id = v.shipment_id WHERE v.ledger_index = ledger_entries.idx) "
        "WHERE kind = 'event'"
    )
    op.execute(
        "UPDATE ledger_entries SET "
        "ref = (SELECT 'access:' || CAST(a.id AS VARCHAR(20)) FROM access_records AS a "
        "WHERE a.ledger_index = ledger_entries.idx), "
        "subject_id = (SELECT a.subject_id FROM access_records AS a "
        "WHERE a.ledger_index = ledger_entries.idx) "
        "WHERE kind = 'access'"
    )
    op.execute(
        "UPDATE ledger_entries SET "
        "ref = (SELECT 'consent:' || CAST(c.id AS VARCHAR(20)) FROM consents AS c "
        "WHERE c.ledger_index = ledger_entries.idx), "
        "subject_id = (SELECT c.subject_id FROM consents AS c "
        "WHERE c.ledger_index = ledger_entries.idx) "
        "WHERE kind = 'consent'"
    )
    op.execute(
        "UPDATE ledger_entries SET ref = (SELECT r.ref FROM ledger_refs AS r "
        "WHERE r.idx = ledger_entries.idx) WHERE ref IS NULL"
    )
    op.drop_index("ix_tmp_consents_ledger", "consents")
    op.drop_index("ix_tmp_access_ledger", "access_records")
    op.drop_index("ix_tmp_events_ledger", "events")
    op.create_index("ix_ledger_entries_ref", "ledger_entries", ["ref"], unique=False)
    op.create_index("ix_ledger_entries_subject_id", "ledger_entries", ["subject_id"], unique=False)
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_column("ledger_index")
    op.drop_table("ledger_refs")
    with op.batch_alter_table("ledger_queue", schema=None) as batch_op:
        batch_op.drop_column("leaf_hash")
