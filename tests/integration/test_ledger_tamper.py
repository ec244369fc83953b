"""Tamper evidence: `parcelvault ledger verify` (and the audit behind it) catches every kind
of change to the stored log and names the first bad index or checkpoint, on SQLite and
PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, delete, insert, select, update
from typer.testing import CliRunner

from parcelvault.adapters.db.tables import ledger_checkpoints, ledger_entries, ledger_nodes
from parcelvault.entrypoints.cli import app
from parcelvault.ledger import log, merkle
from parcelvault.ledger.keys import create_signer, load_signer
from parcelvault.ledger.note import Signer
from parcelvault.services.ledger_audit import Finding, audit
from parcelvault.services.vault import Vault
from tests.conftest import bearer
from tests.integration.test_ledger_log import _load

ORIGIN = "tamper.example/ledger"


@dataclass(frozen=True)
class Built:
    vault: Vault
    signer: Signer
    first: int  # size of the first checkpoint
    size: int  # size of the log and of the second checkpoint


@pytest.fixture
def built(
    any_client: TestClient,
    any_shop_key: str,
    any_vault: Vault,
    key_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Built:
    """A log of 20 entries (access records and scan events) with checkpoints at 11 and 20,
    and the CLI's environment pointing at it."""
    create_signer(key_dir, ORIGIN)
    signer = load_signer(key_dir)
    numbers = _load(any_client, any_shop_key, shipments=2, events_each=4)
    any_client.get(f"/api/v1/shipments/{numbers[0]}", headers=bearer(any_shop_key))
    log.sequence(any_vault.engine, now=any_vault.clock())
    first = log.checkpoint(any_vault.engine, signer=signer, now=any_vault.clock())
    numbers = _load(any_client, any_shop_key, shipments=2, events_each=3)
    any_client.get(f"/api/v1/shipments/{numbers[1]}", headers=bearer(any_shop_key))
    log.sequence(any_vault.engine, now=any_vault.clock())
    second = log.checkpoint(any_vault.engine, signer=signer, now=any_vault.clock())
    assert (first.size, second.size) == (11, 20)
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", any_vault.settings.database_url)
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(key_dir))
    monkeypatch.chdir(tmp_path)
    return Built(any_vault, signer, first.size, second.size)


def _verify_cli() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["ledger", "verify"])
    return result.exit_code, result.output


def _finding(built: Built, batch: int = 5_000) -> Finding | None:
    return audit(built.vault.engine, verifiers=[built.signer.verifier], batch=batch).finding


def _set_entry(connection: Connection, index: int, **values: object) -> None:
    connection.execute(update(ledger_entries).where(ledger_entries.c.idx == index).values(values))


def _entry(connection: Connection, index: int) -> dict[str, object]:
    row = connection.execute(select(ledger_entries).where(ledger_entries.c.idx == index)).one()
    return dict(row._mapping)


def _log_size(vault: Vault) -> int:
    with vault.engine.connect() as connection:
        return log.size(connection)


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 0x01]) + value[1:]


# --------------------------------------------------------------------------- the tampering


def alter_leaf_hash(c: Connection) -> None:
    _set_entry(c, 5, leaf_hash=_flip(_entry(c, 5)["leaf_hash"]))  # type: ignore[arg-type]


def alter_body(c: Connection) -> None:
    body: bytes = _entry(c, 6)["body"]  # type: ignore[assignment]
    _set_entry(c, 6, body=body.replace(b'"in_transit"', b'"delivered"'))


def alter_kind(c: Connection) -> None:
    _set_entry(c, 4, kind="consent")


def delete_an_entry(c: Connection) -> None:
    c.execute(delete(ledger_entries).where(ledger_entries.c.idx == 7))


def delete_the_last_entry(c: Connection) -> None:
    c.execute(delete(ledger_entries).where(ledger_entries.c.idx == 19))


def delete_the_last_entry_and_its_nodes(c: Connection) -> None:
    c.execute(delete(ledger_entries).where(ledger_entries.c.idx == 19))
    for level, index in merkle.nodes_created_by_append(19):  # (0, 19), (1, 9), (2, 4)
        where = (ledger_nodes.c.level == level) & (ledger_nodes.c.idx == index)
        c.execute(delete(ledger_nodes).where(where))


def insert_extra_entries(c: Connection) -> None:
    """Two made-up entries past the end: the second completes node (1, 10), which the
    log does not have. (One alone, after the last checkpoint, completes no node: like
    any entry not yet covered by a checkpoint, it is protected only once one covers it.)"""
    for index in (20, 21):
        extra = _entry(c, 3)
        salt, body = os.urandom(16), b'{"made":"up"}'
        leaf = log.entry_leaf_hash("event", salt, body)
        extra.update(idx=index, salt=salt, body=body, leaf_hash=leaf)
        c.execute(insert(ledger_entries).values(extra))


def swap_two_entries(c: Connection) -> None:
    _set_entry(c, 3, idx=-1)
    _set_entry(c, 9, idx=3)
    _set_entry(c, -1, idx=9)


def alter_a_lowest_node(c: Connection) -> None:
    _alter_node(c, 1, 6)  # covers entries 12..13


def alter_an_inner_node(c: Connection) -> None:
    _alter_node(c, 2, 1)  # covers entries 4..7


def _alter_node(c: Connection, level: int, index: int) -> None:
    where = (ledger_nodes.c.level == level) & (ledger_nodes.c.idx == index)
    value = c.execute(select(ledger_nodes.c.hash).where(where)).scalar_one()
    c.execute(update(ledger_nodes).where(where).values(hash=_flip(value)))


def alter_a_checkpoint_root(c: Connection) -> None:
    where = ledger_checkpoints.c.size == 11
    value = c.execute(select(ledger_checkpoints.c.root).where(where)).scalar_one()
    c.execute(update(ledger_checkpoints).where(where).values(root=_flip(value)))


def alter_a_checkpoint_note(c: Connection) -> None:
    rows = c.execute(select(ledger_checkpoints).order_by(ledger_checkpoints.c.size)).all()
    older_root_line = rows[0].note.split("\n")[2]
    newer_root_line = rows[1].note.split("\n")[2]
    forged = rows[1].note.replace(newer_root_line, older_root_line)
    where = ledger_checkpoints.c.size == 20
    c.execute(update(ledger_checkpoints).where(where).values(note=forged))


def alter_a_checkpoint_signature(c: Connection) -> None:
    where = ledger_checkpoints.c.size == 11
    note = c.execute(select(ledger_checkpoints.c.note).where(where)).scalar_one()
    text, signature = note.rsplit(" ", 1)
    forged = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    c.execute(update(ledger_checkpoints).where(where).values(note=f"{text} {forged}"))


def alter_an_erased_entrys_leaf_hash(c: Connection) -> None:
    leaf: bytes = _entry(c, 8)["leaf_hash"]  # type: ignore[assignment]
    _set_entry(c, 8, body=None, salt=None, leaf_hash=_flip(leaf))


def rewrite_history_consistently(c: Connection) -> None:
    """Change an entry and recompute its leaf and every tree node: only the signatures
    can tell."""
    entry = _entry(c, 6)
    body = b'{"rewritten":true}'
    leaf = log.entry_leaf_hash(str(entry["kind"]), entry["salt"], body)  # type: ignore[arg-type]
    _set_entry(c, 6, body=body, leaf_hash=leaf)
    leaves = c.execute(select(ledger_entries.c.leaf_hash).order_by(ledger_entries.c.idx)).scalars()
    tree = merkle.InMemoryTree(leaves)
    for level, index in c.execute(select(ledger_nodes.c.level, ledger_nodes.c.idx)).all():
        where = (ledger_nodes.c.level == level) & (ledger_nodes.c.idx == index)
        c.execute(update(ledger_nodes).where(where).values(hash=tree.get_node(level, index)))


def half_erase_an_entry(c: Connection) -> None:
    _set_entry(c, 2, body=None)


CASES: list[tuple[Callable[[Connection], None], str, str]] = [
    (alter_leaf_hash, "index 5", "do not hash to its leaf hash"),
    (alter_body, "index 6", "do not hash to its leaf hash"),
    (alter_kind, "index 4", "do not hash to its leaf hash"),
    (delete_an_entry, "index 7", "the entry is missing (the log claims 20 entries)"),
    (delete_the_last_entry, "index 19", "the entry is missing"),
    (delete_the_last_entry_and_its_nodes, "index 19", "the log claims 20 entries"),
    (insert_extra_entries, "index 21", "tree node (1, 10) is missing"),
    (swap_two_entries, "index 3", "tree node (1, 1) over entries 2..3 differs"),
    (alter_a_lowest_node, "index 13", "tree node (1, 6) over entries 12..13 differs"),
    (alter_an_inner_node, "index 7", "tree node (2, 1) over entries 4..7 differs"),
    (alter_a_checkpoint_root, "checkpoint of size 11", "stored root differs from the signed"),
    (alter_a_checkpoint_note, "checkpoint of size 20", "signed note does not verify"),
    (alter_a_checkpoint_signature, "checkpoint of size 11", "invalid signature"),
    (alter_an_erased_entrys_leaf_hash, "index 9", "tree node (1, 4) over entries 8..9 differs"),
    (half_erase_an_entry, "index 2", "half erased"),
    (
        rewrite_history_consistently,
        "checkpoint of size 11",
        "the signed root differs from the root recomputed from the entries",
    ),
]


def test_an_untouched_log_passes(built: Built) -> None:
    code, output = _verify_cli()
    assert code == 0, output
    assert "ledger: OK. 20 entries (0 erased), 2 checkpoints" in output


def test_an_erased_entry_still_passes(built: Built) -> None:
    with built.vault.engine.begin() as connection:
        _set_entry(connection, 5, body=None, salt=None, erased_at=built.vault.clock())
    code, output = _verify_cli()
    assert code == 0, output
    assert "20 entries (1 erased)" in output


@pytest.mark.parametrize(("tamper", "where", "reason"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_is_caught_at_the_first_bad_index(
    built: Built, tamper: Callable[[Connection], None], where: str, reason: str
) -> None:
    assert _finding(built) is None
    with built.vault.engine.begin() as connection:
        tamper(connection)
    code, output = _verify_cli()
    assert code == 1, output
    assert f"TAMPERED at {where}: " in output
    assert reason in output
    findings = {str(_finding(built, batch)) for batch in (1, 3, 8, 5_000)}
    assert len(findings) == 1, findings  # the batch boundaries do not matter
    assert findings.pop().startswith(f"{where}: ")


def test_the_first_of_several_changes_is_named(built: Built) -> None:
    with built.vault.engine.begin() as connection:
        alter_an_inner_node(connection)  # found when entry 7 completes the node
        alter_body(connection)  # entry 6
        alter_a_checkpoint_root(connection)  # size 11
    finding = _finding(built)
    assert finding is not None
    assert (finding.index, finding.checkpoint_size) == (6, None)


def test_a_long_log_is_rebuilt_across_many_batches(any_vault: Vault, key_dir: Path) -> None:
    create_signer(key_dir, ORIGIN)
    signer = load_signer(key_dir)
    sizes = (1, 2, 3, 64, 65, 700, 1_337)
    with any_vault.engine.begin() as connection:
        for n in range(sizes[-1]):
            log.enqueue(
                connection,
                kind="policy_change",
                body={"policy": f"sha256:{n}"},
                subject_id=None,
                ref=None,
                now=any_vault.clock(),
            )
    for size in sizes:
        log.sequence(any_vault.engine, now=any_vault.clock(), limit=size - _log_size(any_vault))
        assert log.checkpoint(any_vault.engine, signer=signer, now=any_vault.clock()).size == size
    seen: list[tuple[int, int]] = []
    report = audit(
        any_vault.engine,
        verifiers=[signer.verifier],
        batch=100,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.ok, report.finding
    assert (report.size, report.checkpoints) == (1_337, len(sizes))
    with any_vault.engine.connect() as connection:
        leaves = connection.execute(
            select(ledger_entries.c.leaf_hash).order_by(ledger_entries.c.idx)
        ).scalars()
        assert report.root == merkle.root_from_leaf_hashes(leaves)
    assert seen[-1] == (1_337, 1_337)
    assert len(seen) == 14
