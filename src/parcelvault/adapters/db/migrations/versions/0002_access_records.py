"""access records

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 18:05:03.017876
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shipment_id", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("fields", sa.String(length=400), nullable=False),
        sa.Column("purpose", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("reference", sa.LargeBinary(), nullable=True),
        sa.Column("ledger_index", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.id"], name=op.f("fk_access_records_shipment_id_shipments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_records")),
    )
    with op.batch_alter_table("access_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_access_records_shipment_id_at"), ["shipment_id", "at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_access_records_subject_id_at"), ["subject_id", "at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("access_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_records_subject_id_at"))
        batch_op.drop_index(batch_op.f("ix_access_records_shipment_id_at"))

    op.drop_table("access_records")
