"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 17:40:57.795407
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subjects")),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("prefix", sa.String(length=12), nullable=False),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "sealed_fields",
        sa.Column("record_id", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_sealed_fields_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("record_id", "field", name=op.f("pk_sealed_fields")),
    )
    with op.batch_alter_table("sealed_fields", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sealed_fields_subject_id"), ["subject_id"], unique=False
        )

    op.create_table(
        "shipments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("tracking_number", sa.String(length=40), nullable=False),
        sa.Column("issued", sa.Boolean(), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("postcode_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("service", sa.String(length=64), nullable=True),
        sa.Column("origin_country", sa.String(length=2), nullable=False),
        sa.Column("origin_region", sa.String(length=100), nullable=True),
        sa.Column("origin_city", sa.String(length=100), nullable=False),
        sa.Column("dest_country", sa.String(length=2), nullable=False),
        sa.Column("dest_region", sa.String(length=100), nullable=True),
        sa.Column("dest_city", sa.String(length=100), nullable=False),
        sa.Column("promised_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_arrival", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_shipments_subject_id_subjects")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_shipments_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipments")),
        sa.UniqueConstraint(
            "tenant_id", "tracking_number", name=op.f("uq_shipments_tenant_id_tracking_number")
        ),
    )
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shipments_tracking_number"), ["tracking_number"], unique=False
        )

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("shipment_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("utc_offset_min", sa.SmallInteger(), nullable=False),
        sa.Column("arrival", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("loc_country", sa.String(length=2), nullable=True),
        sa.Column("loc_region", sa.String(length=100), nullable=True),
        sa.Column("loc_city", sa.String(length=100), nullable=True),
        sa.Column("loc_facility", sa.String(length=64), nullable=True),
        sa.Column("has_proof", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.id"], name=op.f("fk_events_shipment_id_shipments")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_events_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("tenant_id", "event_id", name=op.f("uq_events_tenant_id_event_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_shipment_id_occurred_at"),
            ["shipment_id", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "verification_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("shipment_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.id"],
            name=op.f("fk_verification_failures_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verification_failures")),
    )
    with op.batch_alter_table("verification_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_verification_failures_shipment_id_at"),
            ["shipment_id", "at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("verification_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verification_failures_shipment_id_at"))

    op.drop_table("verification_failures")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_shipment_id_occurred_at"))

    op.drop_table("events")
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipments_tracking_number"))

    op.drop_table("shipments")
    with op.batch_alter_table("sealed_fields", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_fields_subject_id"))

    op.drop_table("sealed_fields")
    op.drop_table("api_keys")
    op.drop_table("tenants")
    op.drop_table("subjects")
