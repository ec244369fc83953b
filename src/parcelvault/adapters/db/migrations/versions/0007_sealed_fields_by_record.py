"""sealed fields found by record only; the last accepted TOTP step per staff member

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 21:20:34.289268
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Sealed values are found by record id only; the subject index and foreign key cost
    # every insert and every retention delete a random page (see tables.sealed_fields).
    # On SQLite the table is rebuilt WITHOUT ROWID (rows kept in the primary key's tree).
    with op.batch_alter_table(
        "sealed_fields",
        schema=None,
        recreate="always" if op.get_context().dialect.name == "sqlite" else "auto",
        table_kwargs={"sqlite_with_rowid": False},
    ) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_fields_subject_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_sealed_fields_subject_id_subjects"), type_="foreignkey"
        )

    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")

    with op.batch_alter_table("sealed_fields", schema=None) as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_sealed_fields_subject_id_subjects"), "subjects", ["subject_id"], ["id"]
        )
        batch_op.create_index(
            batch_op.f("ix_sealed_fields_subject_id"), ["subject_id"], unique=False
        )
