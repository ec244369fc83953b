from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from parcelvault.adapters.db import migrate
from parcelvault.adapters.db.engine import make_engine
from parcelvault.adapters.db.tables import metadata


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
