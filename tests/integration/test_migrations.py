from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select

from parcelvault.adapters.db import migrate
from parcelvault.adapters.db.engine import make_engine
from parcelvault.adapters.db.tables import erasures, ledger_counters, metadata


def test_migrations_build_exactly_the_declared_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert differences == []


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    migrate.upgrade(engine)
    assert set(inspect(engine).get_table_names()) == tables
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    engine.dispose()


def test_the_revision_the_code_needs_is_the_head_of_the_migration_scripts() -> None:
    assert migrate.head_revision(make_engine("sqlite://")) == migrate.SCHEMA_HEAD


def test_a_database_never_migrated_has_no_revision(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine, "0005")
    assert migrate.current_revision(engine) == "0005"
    engine.dispose()


def test_the_cleaned_up_erasure_counter_starts_from_the_erasures_already_cleaned_up(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0009")
    at = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(erasures),
            [
                {
                    "id": f"receipt-{n}",
                    "key_id": f"key-{n}",
                    "at": at,
                    "requested_by": "subject",
                    "shipments": 1,
                    "cleaned_at": at if n < 2 else None,
                }
                for n in range(3)
            ],
        )
    migrate.upgrade(engine)
    with engine.connect() as connection:
        counters = connection.execute(select(ledger_counters)).all()
    assert [tuple(row) for row in counters] == [("erasures_cleaned", 2)]
    engine.dispose()
