"""SQLite's write-ahead log when the jobs process checkpoints it for the API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from parcelvault.adapters.db.engine import DEFERRED_WAL_CHECKPOINT_PAGES, make_engine
from parcelvault.services.background import BackgroundJobs, WalCheckpointer
from parcelvault.services.vault import Vault, build
from tests.conftest import make_vault


def autocheckpoint_of(url: str, **options: bool) -> int:
    engine = make_engine(url, **options)
    try:
        with engine.connect() as connection:
            pages: int = connection.execute(text("PRAGMA wal_autocheckpoint")).scalar_one()
            return pages
    finally:
        engine.dispose()


def test_engines_of_api_processes_leave_checkpoints_to_the_jobs_process(sqlite_url: str) -> None:
    assert autocheckpoint_of(sqlite_url) == 1000
    assert autocheckpoint_of(sqlite_url, checkpoints_elsewhere=True) == (
        DEFERRED_WAL_CHECKPOINT_PAGES
    )


def rows_in_the_database_file(path: Path) -> int:
    """Rows of the scratch table as the main database file alone holds them
    (`immutable` makes SQLite ignore the write-ahead log)."""
    reader = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        found = reader.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'scratch'"
        ).fetchone()[0]
        if not found:
            return 0
        count: int = reader.execute("SELECT count(*) FROM scratch").fetchone()[0]
        return count
    finally:
        reader.close()


def test_the_checkpointer_copies_what_an_api_process_wrote_into_the_database_file(
    vault: Vault,
) -> None:
    path = Path(vault.engine.url.database or "")
    api = build(vault.settings, checkpoints_elsewhere=True)
    try:
        with api.engine.begin() as connection:
            connection.execute(text("CREATE TABLE scratch (n INTEGER)"))
            connection.execute(
                text("INSERT INTO scratch VALUES (:n)"), [{"n": n} for n in range(5000)]
            )
        assert rows_in_the_database_file(path) == 0  # still only in the write-ahead log
        WalCheckpointer(vault).tick()
        assert rows_in_the_database_file(path) == 5000
    finally:
        api.engine.dispose()


def test_background_jobs_on_sqlite_include_the_checkpointer(vault: Vault) -> None:
    jobs = BackgroundJobs(vault)
    assert [job.name for job in jobs.jobs] == ["ledger-sequencer", "retention", "wal-checkpoint"]


def test_background_jobs_leave_out_retention_when_its_interval_is_zero(
    sqlite_url: str, key_dir: Path
) -> None:
    quiet = make_vault(sqlite_url, key_dir, retention_interval_seconds=0)
    try:
        assert [job.name for job in BackgroundJobs(quiet).jobs] == [
            "ledger-sequencer",
            "wal-checkpoint",
        ]
    finally:
        quiet.engine.dispose()


@pytest.mark.postgres
def test_background_jobs_on_postgresql_have_no_sqlite_checkpointer(
    postgres_url: str, key_dir: Path
) -> None:
    on_postgres = make_vault(postgres_url, key_dir)
    try:
        assert [job.name for job in BackgroundJobs(on_postgres).jobs] == [
            "ledger-sequencer",
            "retention",
        ]
    finally:
        on_postgres.engine.dispose()
