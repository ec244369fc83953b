"""subject rights

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 19:57:53.542497
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "consents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("notice_version", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("shipment_id", sa.String(length=32), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consents_subject_id_purpose_id"),
            ["subject_id", "purpose", "id"],
            unique=False,
        )

    op.create_table(
        "erasures",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(length=16), nullable=False),
        sa.Column("shipments", sa.Integer(), nullable=False),
        sa.Column("cleaned_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
        sa.UniqueConstraint("key_id", name=op.f("uq_erasures_key_id")),
    )
    op.create_table(
        "otp_challenges",
        sa.Column("id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_otp_challenges")),
    )
    with op.batch_alter_table("otp_challenges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_otp_challenges_subject_id_created_at"),
            ["subject_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "subject_sessions",
        sa.Column("id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject_sessions")),
    )
    op.create_table(
        "address_corrections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("shipment_id", sa.String(length=32), nullable=False),
        sa.Column("fields", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.id"],
            name=op.f("fk_address_corrections_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_address_corrections")),
    )
    with op.batch_alter_table("address_corrections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_address_corrections_shipment_id"), ["shipment_id"], unique=False
        )

    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("shipment_id", sa.String(length=32), nullable=False),
        sa.Column("case_ref", sa.String(length=100), nullable=False),
        sa.Column("placed_by", sa.String(length=64), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.id"], name=op.f("fk_legal_holds_shipment_id_shipments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_legal_holds_shipment_id"), ["shipment_id"], unique=False
        )

    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retention_next_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("shredded", sa.String(length=400), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_shipments_retention_next_at"), ["retention_next_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_shipments_subject_id"), ["subject_id"], unique=False)

    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=32), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.drop_column("key_id")

    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipments_subject_id"))
        batch_op.drop_index(batch_op.f("ix_shipments_retention_next_at"))
        batch_op.drop_column("shredded")
        batch_op.drop_column("retention_next_at")

    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_legal_holds_shipment_id"))

    op.drop_table("legal_holds")
    with op.batch_alter_table("address_corrections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_address_corrections_shipment_id"))

    op.drop_table("address_corrections")
    op.drop_table("subject_sessions")
    with op.batch_alter_table("otp_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_otp_challenges_subject_id_created_at"))

    op.drop_table("otp_challenges")
    op.drop_table("erasures")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_subject_id_purpose_id"))

    op.drop_table("consents")
