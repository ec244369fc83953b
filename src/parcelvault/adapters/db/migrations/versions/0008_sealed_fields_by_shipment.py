"""sealed fields stored by shipment: (shipment_id, record_id, field)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 22:45:00.000000
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD = "sealed_fields_0007"
OWNERS = "sealed_fields_owners_0008"
PAGE = 20_000


def upgrade() -> None:
    # Every sealed value gets the id of the shipment it belongs to, leading the primary
    # key, so a shipment's values (its proofs' included) are one key range. The record
    # id, which the ciphertexts' associated data names, is kept as it is. A shipment's
    # own values are stored under its id; a proof's under the hash of its event's
    # tenant and idempotency key, which is computed here for every event with a proof.
    # A value that no shipment claims (there should be none) keeps its record id as its
    # shipment id rather than being dropped.
    _set_aside_old_table()
    _create(["shipment_id", "record_id", "field"], with_shipment=True)
    owners = sa.table(OWNERS, sa.column("record_id"), sa.column("shipment_id"))
    op.create_table(
        OWNERS,
        sa.Column("record_id", sa.String(32), primary_key=True),
        sa.Column("shipment_id", sa.String(32), nullable=False),
    )
    bind = op.get_bind()
    for page in _proof_owners(bind):
        bind.execute(sa.insert(owners), page)
    op.execute(
        f"INSERT INTO sealed_fields (shipment_id, record_id, field, subject_id, value) "  # noqa: S608
        f"SELECT COALESCE(s.id, o.shipment_id, f.record_id), f.record_id, f.field, "
        f"f.subject_id, f.value FROM {OLD} f "
        f"LEFT JOIN shipments s ON s.id = f.record_id "
        f"LEFT JOIN {OWNERS} o ON o.record_id = f.record_id "
        f"ORDER BY 1, 2, 3"
    )
    op.drop_table(OWNERS)
    op.drop_table(OLD)


def downgrade() -> None:
    _set_aside_old_table()
    _create(["record_id", "field"], with_shipment=False)
    op.execute(
        f"INSERT INTO sealed_fields (record_id, field, subject_id, value) "  # noqa: S608
        f"SELECT record_id, field, subject_id, value FROM {OLD} ORDER BY 1, 2"
    )
    op.drop_table(OLD)


def _set_aside_old_table() -> None:
    op.rename_table("sealed_fields", OLD)
    if op.get_context().dialect.name == "postgresql":
        # PostgreSQL keeps the primary key's name (an index name, unique per schema).
        op.execute(f"ALTER TABLE {OLD} RENAME CONSTRAINT pk_sealed_fields TO pk_{OLD}")


def _create(key: Sequence[str], *, with_shipment: bool) -> None:
    columns = [sa.Column("shipment_id", sa.String(32), nullable=False)] if with_shipment else []
    op.create_table(
        "sealed_fields",
        *columns,
        sa.Column("record_id", sa.String(32), nullable=False),
        sa.Column("field", sa.String(40), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=op.f("pk_sealed_fields")),
        sqlite_with_rowid=False,
    )


def _proof_owners(bind: sa.Connection) -> Iterator[list[dict[str, str]]]:
    """(record id of the proof, shipment id) of every event with a proof, a page at a
    time (each page is read after the previous one was written)."""
    events = sa.table(
        "events",
        sa.column("id", sa.BigInteger),
        sa.column("shipment_id", sa.String),
        sa.column("tenant_id", sa.Integer),
        sa.column("event_id", sa.String),
        sa.column("has_proof", sa.Boolean),
    )
    after = 0
    while True:
        rows = bind.execute(
            sa.select(events.c.id, events.c.shipment_id, events.c.tenant_id, events.c.event_id)
            .where(events.c.has_proof.is_(True), events.c.id > after)
            .order_by(events.c.id)
            .limit(PAGE)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        yield [
            {"record_id": _event_row_id(r.tenant_id, r.event_id), "shipment_id": r.shipment_id}
            for r in rows
        ]


def _event_row_id(tenant_id: int, event_id: str) -> str:
    """`ingest.event_row_id` as of this revision (copied: a migration must not change
    when the code it was written against does)."""
    return hashlib.sha256(f"{tenant_id}\x1f{event_id}".encode()).hexdigest()[:32]
