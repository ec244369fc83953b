from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from parcelvault.adapters.db.tables import (
    access_records,
    events,
    ledger_entries,
    ledger_queue,
    ledger_refs,
)
from parcelvault.ledger import log, merkle
from parcelvault.ledger.keys import create_signer, load_signer
from parcelvault.ledger.note import open_note, parse_checkpoint
from parcelvault.services.vault import Vault
from tests.conftest import bearer, shipment_payload


def _scan(number: str, event_id: str, minutes_ago: int) -> dict[str, object]:
    return {
        "event_id": event_id,
        "time": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "status": "in_transit",
        "location": {"country": "GB", "city": "Leeds"},
    }


def _load(client: TestClient, key: str, shipments: int, events_each: int) -> list[str]:
    numbers = []
    for _ in range(shipments):
        created = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(key))
        number = created.json()["tracking_number"]
        numbers.append(number)
        for e in range(events_each):
            posted = client.post(
                f"/api/v1/shipments/{number}/events",
                json=_scan(number, f"{number}-{e}", 60 - e),
                headers=bearer(key),
            )
            assert posted.status_code == 201
    return numbers


def _leaf_hashes(vault: Vault) -> list[bytes]:
    with vault.engine.connect() as connection:
        rows = connection.execute(select(ledger_entries).order_by(ledger_entries.c.idx)).all()
    assert [row.idx for row in rows] == list(range(len(rows)))
    return [row.leaf_hash for row in rows]


def test_events_and_access_records_become_leaves_that_prove_against_a_signed_checkpoint(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, key_dir: Path
) -> None:
    create_signer(key_dir, "test.example/ledger")
    signer = load_signer(key_dir)
    numbers = _load(any_client, any_shop_key, shipments=3, events_each=4)
    any_client.get(f"/api/v1/shipments/{numbers[0]}", headers=bearer(any_shop_key))
    with any_vault.engine.begin() as connection:
        log.enqueue(
            connection,
            kind="policy_change",
            body={"policy": "sha256:abc"},
            subject_id=None,
            ref=None,
            now=any_vault.clock(),
        )
    now = any_vault.clock()

    appended = log.sequence(any_vault.engine, now=now)
    assert log.sequence(any_vault.engine, now=now) == 0
    signed = log.checkpoint(any_vault.engine, signer=signer, now=now)

    with any_vault.engine.connect() as connection:
        accesses = connection.execute(select(access_records)).all()
    assert appended == 3 * 4 + len(accesses) + 1
    assert all(row.ledger_index is not None for row in accesses)
    text, names = open_note(signed.note, [signer.verifier])
    assert names == ["test.example/ledger"]
    body = parse_checkpoint(text)
    leaves = _leaf_hashes(any_vault)
    assert (body.size, body.root) == (len(leaves), merkle.root_from_leaf_hashes(leaves))
    with any_vault.engine.connect() as connection:
        for index, leaf in enumerate(leaves):
            proof = log.inclusion_proof(connection, index, body.size)
            merkle.verify_inclusion(leaf, index, body.size, proof, body.root)


def test_the_sequencer_appends_waiting_events_access_records_and_queued_entries(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    engine, now = any_vault.engine, datetime.now(UTC)
    assert log.plan(engine) is None
    assert log.sequence(engine, now=now) == 0
    (number,) = _load(any_client, any_shop_key, shipments=1, events_each=1)
    assert log.sequence(engine, now=now) >= 1  # the event, and the look the creation was
    assert log.plan(engine) is None
    with engine.connect() as connection:
        placed = connection.execute(select(events.c.ledger_index)).scalar_one()
    assert placed is not None

    merchant = any_client.get(f"/api/v1/shipments/{number}", headers=bearer(any_shop_key))
    assert merchant.status_code == 200
    assert log.sequence(engine, now=now) == 1  # the merchant's access record

    log.record_policy(engine, digest="0" * 64, now=now)
    assert log.sequence(engine, now=now) == 1  # a queued policy_change entry
    assert log.plan(engine) is None


def test_a_sequencer_with_nothing_to_append_does_not_wait_for_the_write_lock(
    client: TestClient, shop_key: str, vault: Vault
) -> None:
    _load(client, shop_key, shipments=1, events_each=1)
    log.sequence(vault.engine, now=vault.clock())
    holder = vault.engine.raw_connection()
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
        assert log.sequence(vault.engine, now=vault.clock()) == 0
    finally:
        holder.rollback()
        holder.close()


def _places(vault: Vault) -> list[int | None]:
    with vault.engine.connect() as connection:
        return list(
            connection.execute(select(events.c.ledger_index).order_by(events.c.id)).scalars()
        )


def test_an_append_planned_before_another_append_is_planned_again_under_the_lock(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, key_dir: Path
) -> None:
    create_signer(key_dir)
    signer = load_signer(key_dir)
    engine = any_vault.engine
    _load(any_client, any_shop_key, shipments=1, events_each=3)
    stale = log.plan(engine)
    assert stale is not None
    first = len(stale.leaves)  # the three events and the look the creation was
    assert log.sequence(engine, now=any_vault.clock()) == first
    _load(any_client, any_shop_key, shipments=1, events_each=2)

    assert log.append(engine, stale, now=any_vault.clock()) == 3

    places = _places(any_vault)
    assert None not in places
    assert len(set(places)) == 5
    leaves = _leaf_hashes(any_vault)
    assert len(leaves) == first + 3
    signed = log.checkpoint(engine, signer=signer, now=any_vault.clock())
    assert signed.size == len(leaves)
    assert signed.root == merkle.root_from_leaf_hashes(leaves)


def test_an_append_planned_while_nothing_else_happened_stores_the_plan(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    engine = any_vault.engine
    _load(any_client, any_shop_key, shipments=2, events_each=2)
    ahead = log.plan(engine)
    assert ahead is not None
    assert ahead.start == 0
    assert len(ahead.leaves) == 6  # four events, and the two looks the creations were

    assert log.append(engine, ahead, now=any_vault.clock()) == 6

    assert _leaf_hashes(any_vault) == ahead.leaves
    assert log.plan(engine) is None


def test_a_grown_log_is_consistent_with_every_earlier_checkpoint(
    any_client: TestClient, any_shop_key: str, any_vault: Vault, key_dir: Path
) -> None:
    create_signer(key_dir)
    signer = load_signer(key_dir)
    _load(any_client, any_shop_key, shipments=2, events_each=3)
    log.sequence(any_vault.engine, now=any_vault.clock())
    first = log.checkpoint(any_vault.engine, signer=signer, now=any_vault.clock())
    _load(any_client, any_shop_key, shipments=3, events_each=5)
    log.sequence(any_vault.engine, now=any_vault.clock(), limit=7)
    log.sequence(any_vault.engine, now=any_vault.clock())
    second = log.checkpoint(any_vault.engine, signer=signer, now=any_vault.clock())
    assert second.size > first.size
    with any_vault.engine.connect() as connection:
        proof = log.consistency_proof(connection, first.size, second.size)
    merkle.verify_consistency(first.size, second.size, proof, first.root, second.root)
    assert merkle.root_from_leaf_hashes(_leaf_hashes(any_vault)) == second.root


def test_erasing_an_entrys_body_and_salt_leaves_every_proof_valid(
    client: TestClient, shop_key: str, vault: Vault, key_dir: Path
) -> None:
    create_signer(key_dir)
    signer = load_signer(key_dir)
    _load(client, shop_key, shipments=1, events_each=5)
    log.sequence(vault.engine, now=vault.clock())
    signed = log.checkpoint(vault.engine, signer=signer, now=vault.clock())
    with vault.engine.begin() as connection:
        connection.execute(
            update(ledger_entries)
            .where(ledger_entries.c.idx == 2)
            .values(body=None, salt=None, erased_at=vault.clock())
        )
    leaves = _leaf_hashes(vault)
    with vault.engine.connect() as connection:
        proof = log.inclusion_proof(connection, 2, signed.size)
    merkle.verify_inclusion(leaves[2], 2, signed.size, proof, signed.root)


def test_a_checkpoint_is_only_signed_when_the_tree_has_grown(
    client: TestClient, shop_key: str, vault: Vault, key_dir: Path
) -> None:
    create_signer(key_dir)
    signer = load_signer(key_dir)
    _load(client, shop_key, shipments=1, events_each=2)
    log.sequence(vault.engine, now=vault.clock())
    first = log.checkpoint(vault.engine, signer=signer, now=vault.clock())
    again = log.checkpoint(vault.engine, signer=signer, now=vault.clock())
    assert again == first


def test_entries_queued_after_the_queue_emptied_are_never_lost(vault: Vault, key_dir: Path) -> None:
    def queue(n: int) -> None:
        with vault.engine.begin() as connection:
            for i in range(n):
                log.enqueue(
                    connection,
                    kind="consent",
                    body={"n": i},
                    subject_id=None,
                    ref=None,
                    now=vault.clock(),
                )

    queue(1)
    assert log.sequence(vault.engine, now=vault.clock()) == 1
    queue(1)
    assert log.sequence(vault.engine, now=vault.clock()) == 1
    queue(2)
    assert log.sequence(vault.engine, now=vault.clock()) == 2
    assert len(_leaf_hashes(vault)) == 4


def test_every_source_row_is_marked_with_the_index_of_its_own_entry_across_id_gaps(
    any_client: TestClient, any_shop_key: str, any_vault: Vault
) -> None:
    numbers = _load(any_client, any_shop_key, shipments=2, events_each=5)
    for number in numbers:
        any_client.get(f"/api/v1/shipments/{number}", headers=bearer(any_shop_key))
    with any_vault.engine.begin() as connection:
        for n in range(6):
            log.enqueue(
                connection,
                kind="key_rotation",
                body={"n": n},
                subject_id=None,
                ref=f"kek:{n}",
                now=any_vault.clock(),
            )
        # gaps in every source, so that each is placed in several runs of ids
        event_ids = connection.execute(select(events.c.id).order_by(events.c.id)).scalars()
        ids = list(event_ids)
        connection.execute(delete(events).where(events.c.id.in_([ids[2], ids[6]])))
        queue_ids = list(connection.execute(select(ledger_queue.c.id)).scalars())
        connection.execute(delete(ledger_queue).where(ledger_queue.c.id == sorted(queue_ids)[3]))
    while log.sequence(any_vault.engine, now=any_vault.clock(), limit=4):
        pass
    with any_vault.engine.connect() as connection:
        bodies = {
            row.idx: (row.kind, orjson.loads(row.body))
            for row in connection.execute(
                select(ledger_entries.c.idx, ledger_entries.c.kind, ledger_entries.c.body)
            )
        }
        placed_events = connection.execute(
            select(events.c.ledger_index, events.c.tenant_id, events.c.event_id)
        ).all()
        placed_access = connection.execute(
            select(access_records.c.ledger_index, access_records.c.id)
        ).all()
        refs = dict(connection.execute(select(ledger_refs.c.ref, ledger_refs.c.idx)).all())
        queued = connection.execute(select(ledger_queue.c.id)).all()
    assert queued == []
    assert len(placed_events) == 8
    assert placed_access
    for index, tenant, event_id in placed_events:
        kind, body = bodies[index]
        assert (kind, body["tenant"], body["event_id"]) == ("event", tenant, event_id)
    for index, record in placed_access:
        kind, body = bodies[index]
        assert (kind, body["access_record"]) == ("access", record)
    assert sorted(bodies) == list(range(8 + len(placed_access) + 5))
    assert sorted(refs) == [f"kek:{n}" for n in (0, 1, 2, 4, 5)]
    for ref, index in refs.items():
        assert bodies[index] == ("key_rotation", {"n": int(ref.removeprefix("kek:"))})


def test_queued_entries_are_copied_with_their_leaf_even_when_queued_without_one(
    any_vault: Vault,
) -> None:
    with any_vault.engine.begin() as connection:
        for n in range(7):
            log.enqueue(
                connection,
                kind="policy_change" if n % 2 else "key_rotation",
                body={"n": n},
                subject_id=None,
                ref=None,
                now=any_vault.clock(),
            )
        # as a process from before queued leaf hashes would have written them
        ids = connection.execute(select(ledger_queue.c.id).order_by(ledger_queue.c.id)).scalars()
        connection.execute(
            update(ledger_queue).where(ledger_queue.c.id.in_(list(ids)[2:5])).values(leaf_hash=None)
        )
        queued = connection.execute(
            select(ledger_queue.c.kind, ledger_queue.c.body, ledger_queue.c.salt).order_by(
                ledger_queue.c.id
            )
        ).all()
    assert log.sequence(any_vault.engine, now=any_vault.clock(), limit=4) == 4
    assert log.sequence(any_vault.engine, now=any_vault.clock()) == 3
    with any_vault.engine.connect() as connection:
        stored = connection.execute(
            select(
                ledger_entries.c.kind,
                ledger_entries.c.body,
                ledger_entries.c.salt,
                ledger_entries.c.leaf_hash,
            ).order_by(ledger_entries.c.idx)
        ).all()
    assert [(row.kind, row.body, row.salt) for row in stored] == [tuple(row) for row in queued]
    assert [row.leaf_hash for row in stored] == [
        log.entry_leaf_hash(row.kind, row.salt, row.body) for row in queued
    ]


def test_a_policy_is_recorded_once_and_again_only_when_it_changes(vault: Vault) -> None:
    digest = vault.policy.digest
    assert len(digest) == 64
    assert log.record_policy(vault.engine, digest=digest, now=vault.clock())
    assert not log.record_policy(vault.engine, digest=digest, now=vault.clock())
    log.sequence(vault.engine, now=vault.clock())
    assert not log.record_policy(vault.engine, digest=digest, now=vault.clock())
    assert log.record_policy(vault.engine, digest="0" * 64, now=vault.clock())
    log.sequence(vault.engine, now=vault.clock())
    with vault.engine.connect() as connection:
        kinds = connection.execute(select(ledger_entries.c.kind)).scalars().all()
    assert kinds == ["policy_change", "policy_change"]


def test_fetching_proof_nodes_looks_them_up_by_key_not_by_scanning(vault: Vault) -> None:
    statements: list[str] = []
    # An empty log has no such nodes; only the query it sends matters here.
    with vault.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.set_trace_callback(statements.append)
        with pytest.raises(log.LedgerError):
            log.fetch_nodes(connection, merkle.inclusion_proof_nodes(5, 1000))
        raw.set_trace_callback(None)
        query = next(sql for sql in statements if "ledger_nodes" in sql)
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}").all()
    details = " ".join(str(row[-1]) for row in plan)
    assert "SCAN ledger_nodes" not in details
    assert "SEARCH ledger_nodes" in details
