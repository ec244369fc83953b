"""Revisions 0006 and 0009 move an existing log to the current storage layout (leaves
only in `ledger_entries`; on SQLite a rowid entry table and a WITHOUT ROWID node table;
no secondary index on the entries, which are found through what they record) without
changing a single hash, on SQLite and PostgreSQL, and can be undone."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    insert,
    inspect,
    select,
)

from parcelvault.adapters.db import migrate
from parcelvault.adapters.db.engine import make_engine
from parcelvault.adapters.db.tables import (
    UtcDateTime,
    consents,
    ledger_entries,
    ledger_nodes,
    ledger_refs,
)
from parcelvault.ledger import log, merkle
from parcelvault.ledger.keys import create_signer, load_signer
from parcelvault.ledger.note import Signer
from parcelvault.services.ledger_audit import audit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SIZE = 13

_old = MetaData()
OLD_ENTRIES = Table(
    "ledger_entries",
    _old,
    Column("idx", BigInteger, primary_key=True),
    Column("kind", String(16)),
    Column("leaf_hash", LargeBinary(32)),
    Column("body", LargeBinary),
    Column("salt", LargeBinary(16)),
    Column("subject_id", String(64)),
    Column("ref", String(80)),
    Column("created_at", UtcDateTime()),
    Column("sequenced_at", UtcDateTime()),
    Column("erased_at", UtcDateTime()),
)
"""`ledger_entries` as revisions 0004-0007 made it."""
OLD_CONSENTS = Table(
    "consents",
    _old,
    Column("id", BigInteger, primary_key=True),
    Column("subject_id", String(64)),
    Column("purpose", String(32)),
    Column("granted", Boolean),
    Column("notice_version", String(32)),
    Column("source", String(16)),
    Column("at", UtcDateTime()),
)
"""`consents` as revisions 0005-0007 made it."""
OLD_QUEUE = Table(
    "ledger_queue",
    _old,
    Column("id", BigInteger, primary_key=True),
    Column("kind", String(16)),
    Column("body", LargeBinary),
    Column("salt", LargeBinary(16)),
    Column("ref", String(80)),
    Column("created_at", UtcDateTime()),
)
"""`ledger_queue` as revisions 0004-0007 made it."""


def _fill_the_old_layout(engine: Engine) -> list[bytes]:
    """A log of SIZE entries as revision 0005 stored it: every node, leaves included."""
    entries, leaves = [], []
    for index in range(SIZE):
        salt, body = os.urandom(16), f'{{"n":{index}}}'.encode()
        leaf = log.entry_leaf_hash("consent", salt, body)
        leaves.append(leaf)
        entries.append(
            {
                "idx": index,
                "kind": "consent",
                "leaf_hash": leaf,
                "body": body,
                "salt": salt,
                "subject_id": f"subject-{index % 3}",
                "ref": f"consent:{index}",
                "created_at": NOW,
                "sequenced_at": NOW,
                "erased_at": None,
            }
        )
    tree = merkle.InMemoryTree(leaves)
    nodes = [
        {"level": level, "idx": index, "hash": tree.get_node(level, index)}
        for level in range(SIZE.bit_length())
        for index in range(SIZE >> level)
    ]
    with engine.begin() as connection:
        connection.execute(insert(OLD_ENTRIES), entries)
        connection.execute(insert(ledger_nodes), nodes)
    return leaves


def _alembic(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    return config


def _downgrade(engine: Engine, revision: str) -> None:
    config = _alembic(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _node_levels(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(ledger_nodes.c.level, func.count()).group_by(ledger_nodes.c.level)
        ).all()
    return {int(level): int(count) for level, count in rows}


def _proves_every_entry(engine: Engine, leaves: list[bytes], root: bytes) -> None:
    with engine.connect() as connection:
        assert log.root(connection, SIZE) == root
        for index, leaf in enumerate(leaves):
            proof = log.inclusion_proof(connection, index, SIZE)
            merkle.verify_inclusion(leaf, index, SIZE, proof, root)


def _signed(engine: Engine, key_dir: Path) -> Signer:
    create_signer(key_dir, "migration.example/ledger")
    return load_signer(key_dir)


def test_upgrading_an_existing_log_drops_the_leaf_rows_and_keeps_every_proof(
    database_url: str, key_dir: Path
) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0005")
    leaves = _fill_the_old_layout(engine)
    signer = _signed(engine, key_dir)
    signed = log.checkpoint(engine, signer=signer, now=NOW)
    assert _node_levels(engine)[0] == SIZE

    migrate.upgrade(engine)

    assert 0 not in _node_levels(engine)
    assert _node_levels(engine) == {1: 6, 2: 3, 3: 1}
    _proves_every_entry(engine, leaves, signed.root)
    report = audit(engine, verifiers=[signer.verifier])
    assert report.ok, report.finding
    assert (report.size, report.root) == (SIZE, signed.root)
    engine.dispose()


def test_the_log_keeps_growing_after_the_upgrade(database_url: str, key_dir: Path) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0005")
    leaves = _fill_the_old_layout(engine)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        for n in range(7):
            log.enqueue(
                connection, kind="consent", body={"n": n}, subject_id=None, ref=None, now=NOW
            )
    assert log.sequence(engine, now=NOW) == 7
    signer = _signed(engine, key_dir)
    signed = log.checkpoint(engine, signer=signer, now=NOW)
    with engine.connect() as connection:
        stored = connection.execute(
            select(ledger_entries.c.leaf_hash).order_by(ledger_entries.c.idx)
        ).scalars()
        all_leaves = list(stored)
    assert all_leaves[:SIZE] == leaves
    assert (signed.size, signed.root) == (20, merkle.root_from_leaf_hashes(all_leaves))
    assert audit(engine, verifiers=[signer.verifier]).ok
    engine.dispose()


def test_downgrading_restores_the_leaf_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0005")
    leaves = _fill_the_old_layout(engine)
    migrate.upgrade(engine)
    _downgrade(engine, "0005")
    assert _node_levels(engine) == {0: SIZE, 1: 6, 2: 3, 3: 1}
    with engine.connect() as connection:
        stored = connection.execute(
            select(ledger_nodes.c.hash)
            .where(ledger_nodes.c.level == 0)
            .order_by(ledger_nodes.c.idx)
        ).scalars()
        assert list(stored) == leaves
    migrate.upgrade(engine)
    assert 0 not in _node_levels(engine)
    engine.dispose()


def test_on_sqlite_entries_are_keyed_by_rowid_and_nodes_have_no_rowid(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrate.upgrade(engine, "0005")
    _fill_the_old_layout(engine)
    migrate.upgrade(engine)
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT leaf_hash FROM ledger_entries WHERE idx = 5"
        ).all()
        nodes_sql = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'ledger_nodes'"
        ).scalar_one()
        indexes = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name IN ('ledger_entries', 'ledger_nodes') ORDER BY name"
        ).scalars()
        index_names = list(indexes)
        rowids = connection.exec_driver_sql(
            "SELECT count(*) FROM ledger_entries WHERE rowid = idx"
        ).scalar_one()
    assert "INTEGER PRIMARY KEY" in " ".join(str(row[-1]) for row in plan)
    assert "WITHOUT ROWID" in nodes_sql
    assert index_names == []
    assert rowids == SIZE
    engine.dispose()


def _fill_named_entries(engine: Engine) -> None:
    """At revision 0007: two consents of one subject with their entries, an erasure and
    a key rotation entry named by reference, and an event entry named as events were."""
    with engine.begin() as connection:
        connection.execute(
            insert(OLD_CONSENTS),
            [
                {
                    "id": consent_id,
                    "subject_id": "subject-a",
                    "purpose": "tracking",
                    "granted": True,
                    "notice_version": "v1",
                    "source": "centre",
                    "at": NOW,
                }
                for consent_id in (7, 8)
            ],
        )
        named = [
            ("consent", "subject-a", "consent:7"),
            ("event", "subject-a", "event:1:scan-1"),
            ("erasure", None, "erasure:abc"),
            ("consent", "subject-a", "consent:8"),
            ("key_rotation", None, "kek:2"),
        ]
        connection.execute(
            insert(OLD_ENTRIES),
            [
                {
                    "idx": index,
                    "kind": kind,
                    "leaf_hash": os.urandom(32),
                    "body": b"{}",
                    "salt": os.urandom(16),
                    "subject_id": subject,
                    "ref": ref,
                    "created_at": NOW,
                    "sequenced_at": NOW,
                    "erased_at": None,
                }
                for index, (kind, subject, ref) in enumerate(named)
            ],
        )


def test_upgrading_moves_references_to_the_consents_and_the_reference_table(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0007")
    _fill_named_entries(engine)

    migrate.upgrade(engine)

    with engine.connect() as connection:
        placed = dict(connection.execute(select(consents.c.id, consents.c.ledger_index)).all())
        refs = dict(connection.execute(select(ledger_refs.c.ref, ledger_refs.c.idx)).all())
        index_of = log.index_of_ref(connection, "erasure:abc")
        columns = {column["name"] for column in inspect(connection).get_columns("ledger_entries")}
        indexes = inspect(connection).get_indexes("ledger_entries")
    assert placed == {7: 0, 8: 3}
    assert refs == {"erasure:abc": 2, "kek:2": 4}
    assert index_of == 2
    assert columns == set(ledger_entries.c.keys())
    assert "subject_id" not in columns
    assert indexes == []
    engine.dispose()


def test_downgrading_puts_back_the_references_and_subjects_it_can_recover(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0007")
    _fill_named_entries(engine)
    migrate.upgrade(engine)
    _downgrade(engine, "0007")
    with engine.connect() as connection:
        rows = connection.execute(
            select(OLD_ENTRIES.c.idx, OLD_ENTRIES.c.subject_id, OLD_ENTRIES.c.ref).order_by(
                OLD_ENTRIES.c.idx
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        (0, "subject-a", "consent:7"),
        (1, None, None),  # no event row records entry 1
        (2, None, "erasure:abc"),
        (3, "subject-a", "consent:8"),
        (4, None, "kek:2"),
    ]
    migrate.upgrade(engine)
    engine.dispose()


def test_entries_waiting_at_the_upgrade_get_their_leaf_and_are_placed(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0007")
    waiting = [("consent", os.urandom(16), f'{{"n":{n}}}'.encode()) for n in range(3)]
    with engine.begin() as connection:
        connection.execute(
            insert(OLD_QUEUE),
            [
                {"kind": kind, "body": body, "salt": salt, "ref": None, "created_at": NOW}
                for kind, salt, body in waiting
            ],
        )
    migrate.upgrade(engine)
    assert log.sequence(engine, now=NOW) == 3
    with engine.connect() as connection:
        leaves = connection.execute(
            select(ledger_entries.c.leaf_hash).order_by(ledger_entries.c.idx)
        ).scalars()
        assert list(leaves) == [log.entry_leaf_hash(*entry) for entry in waiting]
    engine.dispose()
