"""`parcelvault ledger ...`: key, sequence, checkpoint, verify, proof bundles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner, Result

from parcelvault.adapters.db.tables import events, ledger_entries
from parcelvault.entrypoints.cli import app
from parcelvault.ledger import log
from parcelvault.ledger.bundle import parse_bundle
from parcelvault.ledger.keys import SIGNER_FILE, create_signer, load_signer
from parcelvault.ledger.note import (
    Signer,
    format_verifier_key,
    generate_signer,
    parse_verifier_key,
)
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer
from tests.integration.test_ledger_log import _load

ORIGIN = "cli.example/ledger"


@pytest.fixture
def signer(vault: Vault, key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Signer:
    create_signer(key_dir, ORIGIN)
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", vault.settings.database_url)
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(key_dir))
    monkeypatch.chdir(tmp_path)
    return load_signer(key_dir)


def _cli(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["ledger", *args], input=stdin)


def _events(vault: Vault) -> list[tuple[int, str]]:
    with vault.engine.connect() as connection:
        rows = connection.execute(
            select(events.c.ledger_index, events.c.event_id)
            .where(events.c.ledger_index.is_not(None))
            .order_by(events.c.ledger_index)
        ).all()
    return [(row.ledger_index, row.event_id) for row in rows]


def _nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", "postgresql://nowhere.invalid:1/none")
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(tmp_path / "no-keys-here"))


def test_ledger_key_prints_the_verifier_key_of_the_signing_key(signer: Signer) -> None:
    result = _cli("key")
    assert result.exit_code == 0, result.output
    printed = result.stdout.strip()
    assert printed == format_verifier_key(signer.verifier)
    assert parse_verifier_key(printed) == signer.verifier
    assert "PRIVATE" not in result.output


def test_ledger_key_without_a_signing_key_says_how_to_make_one(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(tmp_path / "empty"))
    result = _cli("key")
    assert result.exit_code == 2
    assert "parcelvault init --exist-ok" in result.output


def test_sequence_and_checkpoint_run_one_round_and_print_the_sizes(
    signer: Signer, client: TestClient, shop_key: str, vault: Vault
) -> None:
    _load(client, shop_key, shipments=2, events_each=3)  # 2 access records, 6 events
    first = _cli("sequence")
    assert first.exit_code == 0, first.output
    assert "appended 8 entries; the log has 8 entries" in first.output
    again = _cli("sequence")
    assert "appended 0 entries; the log has 8 entries" in again.output
    assert _cli("sequence", "--limit", "0").exit_code == 2

    signed = _cli("checkpoint")
    assert signed.exit_code == 0, signed.output
    with vault.engine.connect() as connection:
        latest = log.latest_checkpoint(connection)
    assert latest is not None
    assert latest.size == 8
    assert "checkpoint of size 8, root " in signed.output
    assert latest.note.split("\n")[2] in signed.output


def test_verify_passes_on_a_sound_log_and_fails_with_exit_1_on_a_changed_one(
    signer: Signer, client: TestClient, shop_key: str, vault: Vault
) -> None:
    _load(client, shop_key, shipments=1, events_each=4)
    assert _cli("sequence").exit_code == 0
    assert _cli("checkpoint").exit_code == 0
    sound = _cli("verify")
    assert sound.exit_code == 0, sound.output
    assert "ledger: OK. 5 entries (0 erased), 1 checkpoint; root " in sound.output
    with vault.engine.begin() as connection:
        connection.execute(
            update(ledger_entries).where(ledger_entries.c.idx == 3).values(body=b"{}")
        )
    changed = _cli("verify")
    assert changed.exit_code == 1
    assert "TAMPERED at index 3: " in changed.output


def test_old_checkpoints_signed_with_a_rotated_key_need_that_key_given_with_key(
    signer: Signer, client: TestClient, shop_key: str, key_dir: Path
) -> None:
    _load(client, shop_key, shipments=1, events_each=2)
    _cli("sequence")
    _cli("checkpoint")  # size 3, signed by the old key
    (key_dir / SIGNER_FILE).unlink()
    rotated = create_signer(key_dir, ORIGIN)
    assert rotated is not None
    _load(client, shop_key, shipments=1, events_each=2)
    _cli("sequence")
    assert "size 6" in _cli("checkpoint").output

    without = _cli("verify")
    assert without.exit_code == 1
    assert "TAMPERED at checkpoint of size 3: " in without.output
    assert f"unknown keys: {ORIGIN}+{signer.key_id:08x}" in without.output
    old_key = format_verifier_key(signer.verifier)
    with_old = _cli("verify", "--key", old_key)
    assert with_old.exit_code == 0, with_old.output
    assert "6 entries (0 erased), 2 checkpoints" in with_old.output

    # An auditor with a copy of the database and only the public keys:
    (key_dir / SIGNER_FILE).unlink()
    new_key = format_verifier_key(rotated.verifier)
    assert _cli("verify", "--key", old_key, "--key", new_key).exit_code == 0
    assert _cli("verify", "--key", old_key).exit_code == 1
    assert _cli("verify", "--key", "not-a-key").exit_code == 2


def test_an_event_bundle_verifies_offline_with_the_cli_and_the_standalone_module(
    signer: Signer,
    client: TestClient,
    shop_key: str,
    vault: Vault,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _load(client, shop_key, shipments=2, events_each=3)
    _cli("sequence")
    index, event_id = _events(vault)[4]
    early = _cli("prove-event", event_id, "--tenant", "shop-a")
    assert early.exit_code == 1
    assert "not covered by a checkpoint yet" in early.output
    assert "parcelvault ledger checkpoint" in early.output
    _cli("checkpoint")

    path = tmp_path / "event.tlog-proof"
    written = _cli("prove-event", event_id, "--tenant", "shop-a", "-o", str(path))
    assert written.exit_code == 0, written.output
    assert f"wrote the proof of entry {index} to" in written.output
    bundle = parse_bundle(path.read_text())
    assert (bundle.index, bundle.entry.kind) == (index, "event")
    assert event_id.encode() in bundle.entry.body

    key = format_verifier_key(signer.verifier)
    _nowhere(monkeypatch, tmp_path)
    checked = _cli("verify-bundle", str(path), "--key", key)
    assert checked.exit_code == 0, checked.output
    assert f"OK: entry {index} (event) is in the log {ORIGIN} of 8 entries" in checked.output
    standalone = subprocess.run(
        [sys.executable, "-m", "parcelvault.ledger.verify", str(path), "--key", key],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert standalone.returncode == 0, standalone.stdout
    assert standalone.stdout.startswith(f"OK: entry {index} (event)")

    path.write_text(path.read_text().replace(f"index {index}\n", f"index {index + 1}\n"))
    moved = _cli("verify-bundle", str(path), "--key", key)
    assert moved.exit_code == 1
    assert "FAILED: " in moved.output
    assert "not proven in the checkpoint" in moved.output


def test_an_access_bundle_goes_to_stdout_and_carries_no_personal_value(
    signer: Signer,
    client: TestClient,
    shop_key: str,
    vault: Vault,
    canaries: Canaries,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    created = client.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(shop_key))
    number = created.json()["tracking_number"]
    client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key))
    _cli("sequence")
    _cli("checkpoint")
    result = _cli("prove-access", "1")
    assert result.exit_code == 0, result.output
    bundle = parse_bundle(result.stdout)
    assert (bundle.index, bundle.entry.kind) == (1, "access")
    assert b'"recipient.name"' in bundle.entry.body  # which fields, never their values
    assert canaries.found_in(result.stdout) == []
    assert canaries.found_in(bundle.entry.body) == []

    _nowhere(monkeypatch, tmp_path)
    key = format_verifier_key(signer.verifier)
    from_stdin = _cli("verify-bundle", "-", "--key", key, stdin=result.stdout)
    assert from_stdin.exit_code == 0, from_stdin.output
    assert "OK: entry 1 (access)" in from_stdin.output
    other = format_verifier_key(generate_signer(ORIGIN).verifier)
    refused = _cli("verify-bundle", "-", "--key", other, stdin=result.stdout)
    assert refused.exit_code == 1
    assert "no signature from a known key" in refused.output


def test_proving_the_wrong_kind_an_unknown_event_or_an_erased_entry_is_refused_clearly(
    signer: Signer, client: TestClient, shop_key: str, vault: Vault
) -> None:
    _load(client, shop_key, shipments=1, events_each=2)
    _cli("sequence")
    _cli("checkpoint")
    index, event_id = _events(vault)[0]

    wrong_kind = _cli("prove-access", str(index))
    assert wrong_kind.exit_code == 1
    assert f"entry {index} is not of the kind access (it is event)" in wrong_kind.output
    beyond = _cli("prove-access", "99")
    assert beyond.exit_code == 1
    assert "the log has no entry 99" in beyond.output
    no_tenant = _cli("prove-event", event_id, "--tenant", "shop-z")
    assert no_tenant.exit_code == 1
    assert "there is no tenant named 'shop-z'" in no_tenant.output
    no_event = _cli("prove-event", "never-posted", "--tenant", "shop-a")
    assert no_event.exit_code == 1
    assert "event 'never-posted' of shop-a is not in the log" in no_event.output

    with vault.engine.begin() as connection:
        connection.execute(
            update(ledger_entries)
            .where(ledger_entries.c.idx == index)
            .values(body=None, salt=None, erased_at=vault.clock())
        )
    erased = _cli("prove-event", event_id, "--tenant", "shop-a")
    assert erased.exit_code == 1
    assert f"entry {index} was erased" in erased.output
    assert "Traceback" not in erased.output
