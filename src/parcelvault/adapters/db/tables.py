"""Table definitions (SQLAlchemy Core). Personal values live only in `sealed_fields`,
as AES-GCM ciphertexts; every other column holds data that is not personal."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every database (SQLite keeps
    no offset, so values are normalized to UTC before they are stored)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


tenants = Table(
    "tenants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("key_hash", LargeBinary(32), nullable=False, unique=True),
    Column("prefix", String(12), nullable=False),
    Column("scopes", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
)

subjects = Table(
    "subjects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("erased_at", UtcDateTime(), nullable=True),
    Column("key_id", String(32), nullable=True),
)
"""A data subject. Its data key lives in the key store (`crypto.keystore`), apart from
this database, under the random `key_id`; `wrapped_key` is only read to move keys of
databases created before the key store existed."""

shipments = Table(
    "shipments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("tracking_number", String(40), nullable=False),
    Column("issued", Boolean, nullable=False),
    Column("subject_id", String(64), ForeignKey("subjects.id"), nullable=False),
    Column("postcode_digest", LargeBinary(32), nullable=False),
    Column("reference", String(100), nullable=True),
    Column("service", String(64), nullable=True),
    Column("origin_country", String(2), nullable=False),
    Column("origin_region", String(100), nullable=True),
    Column("origin_city", String(100), nullable=False),
    Column("dest_country", String(2), nullable=False),
    Column("dest_region", String(100), nullable=True),
    Column("dest_city", String(100), nullable=False),
    Column("carrier_tenant_id", Integer, ForeignKey("tenants.id"), nullable=True),
    Column("promised_date", Date, nullable=True),
    Column("status", String(24), nullable=False),
    Column("status_at", UtcDateTime(), nullable=True),
    Column("status_arrival", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("retention_next_at", UtcDateTime(), nullable=True),
    Column("shredded", String(400), nullable=True),
    UniqueConstraint("tenant_id", "tracking_number"),
    Index(None, "tracking_number"),
    Index(None, "retention_next_at"),
    Index(None, "subject_id"),
)

events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("shipment_id", String(32), ForeignKey("shipments.id"), nullable=False),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("event_id", String(100), nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("utc_offset_min", SmallInteger, nullable=False),
    Column("arrival", BigInteger, nullable=False),
    Column("status", String(24), nullable=False),
    Column("reason", String(24), nullable=True),
    Column("description", String(500), nullable=True),
    Column("loc_country", String(2), nullable=True),
    Column("loc_region", String(100), nullable=True),
    Column("loc_city", String(100), nullable=True),
    Column("loc_facility", String(64), nullable=True),
    Column("has_proof", Boolean, nullable=False),
    Column("ledger_index", BigInteger, nullable=True),
    UniqueConstraint("tenant_id", "event_id"),
    Index(None, "shipment_id", "occurred_at"),
    Index(
        "ix_events_unsequenced",
        "id",
        sqlite_where=text("ledger_index IS NULL"),
        postgresql_where=text("ledger_index IS NULL"),
    ),
)

sealed_fields = Table(
    "sealed_fields",
    metadata,
    Column("shipment_id", String(32), primary_key=True),
    Column("record_id", String(32), primary_key=True),
    Column("field", String(40), primary_key=True),
    Column("subject_id", String(64), nullable=False),
    Column("value", LargeBinary, nullable=False),
    sqlite_with_rowid=False,
)
"""Every personal value, sealed (see `crypto.sealing`), stored by the shipment it
belongs to, then by record (the shipment id itself, or an event's
`ingest.event_row_id` for its proof of delivery) and field. The record id is the one
the ciphertext's associated data names; `shipment_id` only places the row, so all of a
shipment's values, its proofs' included, are one contiguous key range, and shipment
ids are time-ordered: reading a shipment, erasing a subject's shipments, and retention
deleting old shipments' values touch a few neighbouring pages instead of one random
page per proof. Rows are found by shipment only: an index or a foreign key on
`subject_id` would cost every insert and every retention delete a random index page;
erasure finds a subject's values through its shipments. On SQLite the table is WITHOUT
ROWID: rows live in the primary key's own B-tree, so an insert or a delete touches one
tree instead of two."""

verification_failures = Table(
    "verification_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("shipment_id", String(32), ForeignKey("shipments.id"), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index(None, "shipment_id", "at"),
)

access_records = Table(
    "access_records",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UtcDateTime(), nullable=False),
    Column("shipment_id", String(32), ForeignKey("shipments.id"), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(64), nullable=True),
    Column("fields", String(400), nullable=False),
    Column("purpose", String(24), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("reference", LargeBinary, nullable=True),
    Column("ledger_index", BigInteger, nullable=True),
    Index(None, "subject_id", "at"),
    Index(None, "shipment_id", "at"),
    Index(
        "ix_access_records_unsequenced",
        "id",
        sqlite_where=text("ledger_index IS NULL"),
        postgresql_where=text("ledger_index IS NULL"),
    ),
)
"""Append-only. `reference` (a ticket number typed by staff) is sealed under the
subject's key like any personal value; `ledger_index` is the record's leaf in the
transparency log once it is anchored there."""

staff = Table(
    "staff",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("totp_secret", LargeBinary, nullable=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("disabled_at", UtcDateTime(), nullable=True),
    Column("totp_last_step", BigInteger, nullable=True),
)
"""Staff accounts. `password_hash` is argon2id; `totp_secret` is sealed with the
key-encryption key (never stored in plaintext); `totp_last_step` is the time step of
the last code accepted, so no code is accepted twice."""

staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column("staff_id", Integer, ForeignKey("staff.id"), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("ended_at", UtcDateTime(), nullable=True),
)
"""`id` is the SHA-256 of the session token held in the staff member's cookie."""

reveals = Table(
    "reveals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("staff_id", Integer, ForeignKey("staff.id"), nullable=False),
    Column("shipment_id", String(32), ForeignKey("shipments.id"), nullable=False),
    Column("fields", String(400), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("access_record_id", BigInteger, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Index(None, "staff_id", "shipment_id", "expires_at"),
)
"""A support reveal: the listed fields in full for that staff member until
`expires_at`. The stated reason and reference live in the access record."""

routes = Table(
    "routes",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("route_date", Date, nullable=False),
    Column("starts_at", UtcDateTime(), nullable=False),
    Column("ends_at", UtcDateTime(), nullable=False),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
)
"""A courier's route for one day; the courier's device holds a token whose SHA-256
is `token_hash`."""

route_stops = Table(
    "route_stops",
    metadata,
    Column("route_id", String(32), ForeignKey("routes.id"), primary_key=True),
    Column("shipment_id", String(32), ForeignKey("shipments.id"), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("completed_at", UtcDateTime(), nullable=True),
    Index(None, "shipment_id"),
)

ledger_queue = Table(
    "ledger_queue",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("kind", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("salt", LargeBinary(16), nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=True),
    Column("subject_id", String(64), nullable=True),
    Column("ref", String(80), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
)
"""Entries of kinds without a table of their own (consent, erasure, key rotation,
policy change), written by any process in the same transaction as what they record,
waiting for the sequencer to give them a place in the log; deleted once placed.
`leaf_hash` is computed when the entry is queued (the sequencer computes it for a row
without one), so that the sequencer copies the row into `ledger_entries` inside the
database instead of reading its body.
Access records and scan events are not copied here: the sequencer reads the rows of
their own tables whose `ledger_index` is still NULL."""


ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column(
        "idx",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("kind", String(16), nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("body", LargeBinary, nullable=True),
    Column("salt", LargeBinary(16), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sequenced_at", UtcDateTime(), nullable=False),
    Column("erased_at", UtcDateTime(), nullable=True),
)
"""The log's leaves. `body` and `salt` are deleted when the entry's subject is erased;
`leaf_hash` stays, so the tree still verifies but the leaf no longer links to anyone.
`leaf_hash` is also the tree's level-0 node: leaves are not repeated in `ledger_nodes`.
On SQLite `idx` is the table's rowid (INTEGER PRIMARY KEY), so appending an entry
appends to one B-tree and reading a leaf by index is a rowid lookup.

The table has no secondary index: an index on a subject or a reference takes a random
insert per entry, which cost the sequencer two thirds of its time. An entry is found
from what it records instead: `events.ledger_index`, `access_records.ledger_index` and
`consents.ledger_index` (set when the entry is placed), and `ledger_refs` for the rare
kinds looked up by name (erasure receipts, key rotations)."""

ledger_refs = Table(
    "ledger_refs",
    metadata,
    Column("ref", String(80), primary_key=True),
    Column("idx", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
"""The entry index of each queued entry that was enqueued with a reference other than a
consent's (`erasure:<receipt>`, `kek:<id>`, `signer:<key id>`), written by the sequencer
when it places the entry."""

ledger_counters = Table(
    "ledger_counters",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
"""Counts the ledger sequencer compares before and after gathering a batch without its
lock; one row, `erasures_cleaned` (see `ledger.log.count_erasure_cleaned_up`)."""

ledger_nodes = Table(
    "ledger_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)
"""Every complete subtree of the log above the leaves (level >= 1), (level, index) as
in `ledger.merkle`; the leaves are `ledger_entries.leaf_hash`. On SQLite the table is
WITHOUT ROWID: the rows live in the primary key's B-tree, with no second copy."""

ledger_checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", String(2000), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)
"""Signed checkpoints (C2SP signed notes), one per tree size that was published."""


consents = Table(
    "consents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(64), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("notice_version", String(32), nullable=False),
    Column("source", String(16), nullable=False),
    Column("shipment_id", String(32), nullable=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("ledger_index", BigInteger, nullable=True),
    Index(None, "subject_id", "purpose", "id"),
)
"""Append-only consent history: one row per change. A subject's consent to a purpose is
its latest row for that purpose; no row means no consent."""

legal_holds = Table(
    "legal_holds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("shipment_id", String(32), ForeignKey("shipments.id"), nullable=False),
    Column("case_ref", String(100), nullable=False),
    Column("placed_by", String(64), nullable=False),
    Column("placed_at", UtcDateTime(), nullable=False),
    Column("released_at", UtcDateTime(), nullable=True),
    Column("released_by", String(64), nullable=True),
    Index(None, "shipment_id"),
)
"""A hold keeps a shipment's data from erasure and retention until it is released.
`case_ref` names the matter (a case or claim number), never a person."""

otp_challenges = Table(
    "otp_challenges",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column("subject_id", String(64), nullable=False),
    Column("code_hash", LargeBinary(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("used_at", UtcDateTime(), nullable=True),
    Index(None, "subject_id", "created_at"),
)
"""One-time codes sent to a subject's contact. `id` is the SHA-256 of the challenge
token the browser holds; `code_hash` an HMAC of the code, never the code."""

subject_sessions = Table(
    "subject_sessions",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column("subject_id", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("ended_at", UtcDateTime(), nullable=True),
)
"""A person who proved control of a contact with a one-time code; `id` is the SHA-256
of the cookie's token."""

erasures = Table(
    "erasures",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("key_id", String(32), nullable=False, unique=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("requested_by", String(16), nullable=False),
    Column("shipments", Integer, nullable=False),
    Column("cleaned_at", UtcDateTime(), nullable=True),
)
"""Erasure receipts. `key_id` is the destroyed data key's random id (it names no one);
the key store keeps the same id, so restoring either side from an old backup is undone
by `keys reconcile`."""

address_corrections = Table(
    "address_corrections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("shipment_id", String(32), ForeignKey("shipments.id"), nullable=False),
    Column("fields", String(200), nullable=False),
    Column("source", String(16), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index(None, "shipment_id"),
)
"""Which address fields a recipient corrected and when (the values are sealed fields)."""
