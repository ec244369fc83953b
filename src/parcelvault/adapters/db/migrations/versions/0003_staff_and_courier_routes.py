"""staff and courier routes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 18:16:34.079144
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("totp_secret", sa.LargeBinary(), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff")),
        sa.UniqueConstraint("username", name=op.f("uq_staff_username")),
    )
    op.create_table(
        "routes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("route_date", sa.Date(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_routes_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routes")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_routes_token_hash")),
    )
    op.create_table(
        "staff_sessions",
        sa.Column("id", sa.LargeBinary(length=32), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_staff_sessions_staff_id_staff")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
    )
    op.create_table(
        "reveals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("shipment_id", sa.String(length=32), nullable=False),
        sa.Column("fields", sa.String(length=400), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("access_record_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.id"], name=op.f("fk_reveals_shipment_id_shipments")
        ),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=op.f("fk_reveals_staff_id_staff")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reveals")),
    )
    with op.batch_alter_table("reveals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reveals_staff_id_shipment_id_expires_at"),
            ["staff_id", "shipment_id", "expires_at"],
            unique=False,
        )

    op.create_table(
        "route_stops",
        sa.Column("route_id", sa.String(length=32), nullable=False),
        sa.Column("shipment_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["route_id"], ["routes.id"], name=op.f("fk_route_stops_route_id_routes")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.id"], name=op.f("fk_route_stops_shipment_id_shipments")
        ),
        sa.PrimaryKeyConstraint("route_id", "shipment_id", name=op.f("pk_route_stops")),
    )
    with op.batch_alter_table("route_stops", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_route_stops_shipment_id"), ["shipment_id"], unique=False
        )

    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("carrier_tenant_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_shipments_carrier_tenant_id_tenants"),
            "tenants",
            ["carrier_tenant_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("shipments", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_shipments_carrier_tenant_id_tenants"), type_="foreignkey"
        )
        batch_op.drop_column("carrier_tenant_id")

    with op.batch_alter_table("route_stops", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_route_stops_shipment_id"))

    op.drop_table("route_stops")
    with op.batch_alter_table("reveals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reveals_staff_id_shipment_id_expires_at"))

    op.drop_table("reveals")
    op.drop_table("staff_sessions")
    op.drop_table("routes")
    op.drop_table("staff")
