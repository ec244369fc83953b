"""`parcelvault keys ...` and `parcelvault ledger rotate-key`, run as an operator runs
them, and the checkpoint signing key's rotation at the service level."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner, Result

from parcelvault.adapters.db.tables import ledger_entries, subjects
from parcelvault.crypto.keyring import kek_ids
from parcelvault.entrypoints.cli import app
from parcelvault.ledger import log
from parcelvault.ledger.bundle import format_bundle, make_bundle, verify_bundle
from parcelvault.ledger.keys import (
    RETIRED_FILE,
    STAGED_FILE,
    all_verifiers,
    create_signer,
    load_signer,
    retired_verifiers,
)
from parcelvault.ledger.note import NoteError, format_verifier_key, open_note
from parcelvault.services import key_rotation, signer_rotation
from parcelvault.services.ledger_audit import audit
from parcelvault.services.ledger_views import Sequencer
from parcelvault.services.vault import Vault
from tests.conftest import Canaries
from tests.integration.test_key_rotation import make_legacy, opened_names, seed

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ORIGIN = "keys.example/ledger"


@pytest.fixture
def operator(vault: Vault, key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Vault:
    """The environment of an operator's shell, pointing at the test's vault."""
    create_signer(key_dir, ORIGIN)
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", vault.settings.database_url)
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(key_dir))
    monkeypatch.chdir(tmp_path)
    return vault


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


# --- keys ----------------------------------------------------------------------------


def test_keys_rotate_rewraps_everything_and_retire_deletes_the_old_kek(operator: Vault) -> None:
    seeded = seed(operator, 4)
    before = opened_names(operator, seeded)

    rotated = _cli("keys", "rotate")
    assert rotated.exit_code == 0, rotated.output
    assert "started rotation to key-encryption key 2" in rotated.output
    assert "re-wrapped 4 data keys" in rotated.output
    assert "parcelvault keys retire" in rotated.output
    assert kek_ids(operator.settings.key_dir) == [1, 2]

    retired = _cli("keys", "retire")
    assert retired.exit_code == 0, retired.output
    assert "retired key-encryption key 1" in retired.output
    assert kek_ids(operator.settings.key_dir) == [2]
    assert opened_names(operator, seeded) == before


def test_keys_rotate_with_retire_does_both_in_one_run(operator: Vault) -> None:
    seed(operator, 2)
    result = _cli("keys", "rotate", "--retire")
    assert result.exit_code == 0, result.output
    assert "retired key-encryption key 1" in result.output
    assert kek_ids(operator.settings.key_dir) == [2]


def test_keys_status_shows_keks_counts_and_an_unfinished_rotation(operator: Vault) -> None:
    seed(operator, 3)

    def crash(done: int, total: int) -> None:
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        key_rotation.rotate(operator, now=NOW, batch=1, progress=crash, settle_seconds=0)
    operator.keystore.destroy(
        operator.keystore.batch_wrapped_by(1, after="", limit=1)[0].subject_id, now=NOW
    )

    result = _cli("keys", "status")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "active key-encryption key: 2" in text
    assert "rotation: UNFINISHED" in text
    assert "parcelvault keys rotate --resume" in text
    assert "destroyed keys (erasures): 1" in text
    assert "subject-keys.db" in text
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert any("│ 1 " in row and "older" in row for row in rows)
    assert any("│ 2 " in row and "active" in row for row in rows)

    resumed = _cli("keys", "rotate", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed rotation to key-encryption key 2" in resumed.output
    assert "rotation: none in progress" in _cli("keys", "status").output


def test_keys_status_says_when_the_kek_is_due(
    operator: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARCELVAULT_KEK_MAX_AGE_DAYS", "30")
    old = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    os.utime(operator.settings.key_dir / "kek.key", (old, old))
    result = _cli("keys", "status")
    assert result.exit_code == 0, result.output
    assert "days old (limit 30): run `parcelvault keys rotate`" in result.output


def test_keys_rotate_resume_with_nothing_unfinished_says_so(operator: Vault) -> None:
    result = _cli("keys", "rotate", "--resume")
    assert result.exit_code == 1
    assert "no rotation is unfinished" in result.output
    assert kek_ids(operator.settings.key_dir) == [1]


def test_keys_rotate_with_a_needed_kek_missing_names_it_and_loses_nothing(
    operator: Vault,
) -> None:
    seeded = seed(operator, 3)
    folder = operator.settings.key_dir
    (folder / "kek-2.key").write_bytes((folder / "kek.key").read_bytes())
    (folder / "kek-2.key").chmod(0o600)
    hidden = folder.parent / "kek.key.aside"
    (folder / "kek.key").rename(hidden)

    result = _cli("keys", "rotate", "--resume")
    assert result.exit_code == 1
    assert "key-encryption key 1" in result.output
    assert "restore the missing key file and rerun" in result.output
    assert "Traceback" not in result.output

    hidden.rename(folder / "kek.key")
    again = _cli("keys", "rotate", "--resume")
    assert again.exit_code == 0, again.output
    assert opened_names(operator, seeded)


def test_keys_commands_without_keys_say_to_run_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", f"sqlite:///{tmp_path / 'pv.db'}")
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(tmp_path / "no-keys"))
    for command in (["status"], ["rotate"], ["retire"], ["adopt"]):
        result = _cli("keys", *command)
        assert result.exit_code == 1
        assert "run `parcelvault init` first" in result.output


def test_migrate_moves_legacy_keys_into_the_key_store(operator: Vault, canaries: Canaries) -> None:
    seeded = seed(operator, 3)
    before = opened_names(operator, seeded)
    make_legacy(operator, v1=True)

    result = _cli("migrate")
    assert result.exit_code == 0, result.output
    assert "moved 3 legacy keys" in result.output
    with operator.engine.connect() as connection:
        left = connection.execute(
            select(subjects.c.id).where(subjects.c.wrapped_key.is_not(None))
        ).all()
    assert left == []
    assert opened_names(operator, seeded) == before
    again = _cli("keys", "adopt")
    assert again.exit_code == 0, again.output
    assert "no legacy keys left" in again.output


# --- the checkpoint signing key ---------------------------------------------------------


def _sequence(vault: Vault) -> None:
    while log.sequence(vault.engine, now=NOW):
        pass


def test_a_checkpoint_signed_before_a_signer_rotation_still_verifies_after(
    operator: Vault,
) -> None:
    vault = operator
    folder = vault.settings.key_dir
    seed(vault, 2)
    old = load_signer(folder)
    _sequence(vault)
    before = log.checkpoint(vault.engine, signer=old, now=NOW)
    with vault.engine.connect() as connection:
        old_bundle = format_bundle(make_bundle(connection, 0))

    rotated = signer_rotation.rotate_signer(vault.engine, folder, now=NOW)

    new = load_signer(folder)
    assert new.name == old.name == ORIGIN
    assert new.key_id != old.key_id
    assert rotated.retired == format_verifier_key(old.verifier)
    assert rotated.current == format_verifier_key(new.verifier)
    assert not (folder / STAGED_FILE).exists()
    seed_more = seed_second_tenant(vault)
    assert seed_more
    _sequence(vault)
    after = log.checkpoint(vault.engine, signer=new, now=NOW)
    assert after.size > before.size

    open_note(before.note, [old.verifier])
    with pytest.raises(NoteError):
        open_note(after.note, [old.verifier])
    open_note(after.note, [new.verifier])
    assert verify_bundle(old_bundle, [old.verifier]).index == 0
    report = audit(vault.engine, verifiers=all_verifiers(folder))
    assert report.finding is None
    assert report.checkpoints == 3
    only_new = audit(vault.engine, verifiers=[new.verifier])
    assert only_new.finding is not None
    assert only_new.finding.checkpoint_size == before.size

    retired = retired_verifiers(folder)
    assert [r.verifier for r in retired] == [old.verifier]
    assert retired[0].last_size == before.size + 1
    with vault.engine.connect() as connection:
        bodies = [
            orjson.loads(body)
            for body in connection.execute(
                select(ledger_entries.c.body).where(ledger_entries.c.kind == "key_rotation")
            ).scalars()
        ]
    assert {
        "action": "ledger_signer_rotated",
        "retired_key": rotated.retired,
        "new_key": rotated.current,
    } in bodies


def seed_second_tenant(vault: Vault) -> list[str]:
    from parcelvault.adapters.wire import ShipmentIn
    from parcelvault.services import operations
    from parcelvault.services.tenants import authenticate, create_tenant

    principal = authenticate(vault=vault, key=create_tenant(vault=vault, name="shop-b"))
    shipment = ShipmentIn.model_validate(Canaries().shipment()).to_domain()
    view = operations.create_shipment(vault=vault, principal=principal, shipment=shipment)
    return [view.tracking_number]


def test_an_interrupted_signer_rotation_finishes_with_the_same_new_key(operator: Vault) -> None:
    folder = operator.settings.key_dir
    old = load_signer(folder)
    from parcelvault.ledger.keys import stage_next_signer

    staged = stage_next_signer(folder, old)
    signer_rotation.rotate_signer(operator.engine, folder, now=NOW)
    assert load_signer(folder).key_id == staged.key_id
    with operator.engine.connect() as connection:
        entries = connection.execute(
            select(ledger_entries.c.idx).where(ledger_entries.c.kind == "key_rotation")
        ).all()
    assert len(entries) == 1


def test_the_running_sequencer_signs_with_the_new_key_after_rotation(operator: Vault) -> None:
    folder = operator.settings.key_dir
    sequencer = Sequencer(operator)
    first = sequencer._load_signer()
    assert first is not None
    signer_rotation.rotate_signer(operator.engine, folder, now=NOW)
    after = sequencer._load_signer()
    assert after is not None
    assert after.key_id != first.key_id
    assert after.key_id == load_signer(folder).key_id


def test_ledger_rotate_key_then_verify_and_key_list_both_keys(operator: Vault) -> None:
    seed(operator, 1)
    assert _cli("ledger", "sequence").exit_code == 0
    assert _cli("ledger", "checkpoint").exit_code == 0
    old_key = _cli("ledger", "key").stdout.strip()

    rotated = _cli("ledger", "rotate-key")
    assert rotated.exit_code == 0, rotated.output
    assert f"retired key {old_key}" in rotated.output
    seed_second_tenant(operator)
    assert _cli("ledger", "sequence").exit_code == 0
    assert _cli("ledger", "checkpoint").exit_code == 0

    verified = _cli("ledger", "verify")
    assert verified.exit_code == 0, verified.output
    assert "ledger: OK" in verified.output
    listed = _cli("ledger", "key", "--retired").stdout.strip().splitlines()
    assert listed[1] == old_key
    assert listed[0] != old_key
    assert (operator.settings.key_dir / RETIRED_FILE).exists()


def test_the_transparency_page_lists_retired_keys(operator: Vault, client: TestClient) -> None:
    old_key = format_verifier_key(load_signer(operator.settings.key_dir).verifier)
    signer_rotation.rotate_signer(operator.engine, operator.settings.key_dir, now=NOW)
    page = client.get("/transparency")
    assert page.status_code == 200
    assert old_key in page.text
    assert 'data-testid="retired-keys"' in page.text
