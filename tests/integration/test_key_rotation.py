"""Key-encryption key rotation, retirement, status and legacy-key adoption, on real key
folders and real key stores (SQLite file and PostgreSQL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyotp
import pytest
from sqlalchemy import select, update

from parcelvault.adapters.db.tables import ledger_queue, subjects
from parcelvault.adapters.wire import ShipmentIn
from parcelvault.crypto import keyring as keyring_module
from parcelvault.crypto.keyring import WRAP_V1, Keyring, Keys, kek_ids
from parcelvault.crypto.keystore import START, StoredKey, data_keys
from parcelvault.crypto.sealing import NONCE_BYTES
from parcelvault.services import key_rotation, operations, staff, tracking
from parcelvault.services.tenants import authenticate, create_tenant
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, make_vault

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_vault(request: pytest.FixtureRequest, key_dir: Path) -> Iterator[Vault]:
    """A vault whose database and key store are both SQLite files, or both PostgreSQL."""
    if request.param == "sqlite":
        built = make_vault(request.getfixturevalue("sqlite_url"), key_dir)
    else:
        url = request.getfixturevalue("postgres_url")
        built = make_vault(url, key_dir, keystore_url=url)
    yield built
    built.engine.dispose()
    built.keystore.engine.dispose()


@dataclass
class Seeded:
    numbers: list[str]
    names: list[str]
    tenant_id: int
    canaries: list[Canaries]


def seed(vault: Vault, count: int) -> Seeded:
    key = create_tenant(vault=vault, name="shop-a")
    principal = authenticate(vault=vault, key=key)
    numbers, names, planted = [], [], []
    for _ in range(count):
        canary = Canaries()
        shipment = ShipmentIn.model_validate(canary.shipment()).to_domain()
        view = operations.create_shipment(vault=vault, principal=principal, shipment=shipment)
        numbers.append(view.tracking_number)
        names.append(canary.name)
        planted.append(canary)
    return Seeded(numbers, names, principal.tenant_id, planted)


def opened_names(vault: Vault, seeded: Seeded) -> list[str]:
    """What the merchant view shows of each recipient's name (opens every data key, as
    the key store holds it now)."""
    vault.snapshots.clear()
    shown = []
    for number in seeded.numbers:
        view = tracking.merchant_view(vault=vault, tenant_id=seeded.tenant_id, raw_number=number)
        shown.append(str(view.personal))
    return shown


def queued_rotations(vault: Vault) -> list[dict[str, Any]]:
    with vault.engine.connect() as connection:
        rows = connection.execute(
            select(ledger_queue.c.body, ledger_queue.c.subject_id)
            .where(ledger_queue.c.kind == "key_rotation")
            .order_by(ledger_queue.c.id)
        ).all()
    assert all(row.subject_id is None for row in rows)
    return [orjson.loads(row.body) for row in rows]


def fresh_vault(vault: Vault) -> Vault:
    """Another process's view of the same database, key folder and key store."""
    return make_vault(
        vault.settings.database_url,
        vault.settings.key_dir,
        keystore_url=vault.settings.keystore_url,
    )


class Crash(Exception):
    pass


# --- rotation ------------------------------------------------------------------------


def test_rotation_rewraps_every_key_and_secret_and_all_data_still_opens(
    store_vault: Vault,
) -> None:
    vault = store_vault
    seeded = seed(vault, 12)
    enrolment = staff.create_staff(vault=vault, username="agent", role="support", password=PASSWORD)
    before = opened_names(vault, seeded)
    assert all(name in shown for name, shown in zip(seeded.names, before, strict=True))

    report = key_rotation.rotate(vault, now=NOW, batch=5, settle_seconds=0)

    assert report.new_kek
    assert report.kek_id == 2
    assert report.finished
    assert report.rewrapped == 12
    assert report.secrets == 1
    assert report.skipped == 0
    assert vault.keystore.count_by_kek() == {2: 12}
    assert key_rotation.secrets_by_kek(vault.engine) == {2: 1}
    other = fresh_vault(vault)
    assert opened_names(other, seeded) == before
    assert enrolment.totp_secret is not None
    code = pyotp.TOTP(enrolment.totp_secret).now()
    signed_in = staff.sign_in(vault=other, username="agent", password=PASSWORD, code=code)
    assert signed_in.staff.username == "agent"
    bodies = queued_rotations(vault)
    assert [b["action"] for b in bodies] == ["kek_rotation_started", "kek_rotation_finished"]
    assert bodies[0]["keys_to_rewrap"] == 12
    assert bodies[1]["keys_rewrapped"] == 12
    text = orjson.dumps(bodies).decode()
    assert not any(c.found_in(text) for c in seeded.canaries)


def test_retiring_deletes_only_keks_that_wrap_nothing_and_data_still_opens(
    store_vault: Vault,
) -> None:
    vault = store_vault
    seeded = seed(vault, 3)
    before = opened_names(vault, seeded)
    key_rotation.rotate(vault, now=NOW, settle_seconds=0)
    retired = key_rotation.retire(vault, now=NOW)
    assert retired.retired == (1,)
    assert retired.still_needed == {}
    assert kek_ids(vault.settings.key_dir) == [2]
    assert not (vault.settings.key_dir / "kek.key").exists()
    assert opened_names(fresh_vault(vault), seeded) == before
    assert queued_rotations(vault)[-1] == {"action": "kek_retired", "kek": 1, "active_kek": 2}


def test_an_older_kek_that_still_wraps_keys_is_not_retired(vault: Vault) -> None:
    seed(vault, 2)
    keyring_module.add_kek(vault.settings.key_dir)
    result = key_rotation.retire(vault, now=NOW)
    assert result.retired == ()
    assert result.still_needed == {1: "2 data keys"}
    assert (vault.settings.key_dir / "kek.key").exists()


def test_an_interrupted_rotation_resumes_without_making_another_kek(store_vault: Vault) -> None:
    vault = store_vault
    seeded = seed(vault, 10)
    before = opened_names(vault, seeded)

    def crash_after_two_batches(done: int, total: int) -> None:
        if done >= 6:
            raise Crash

    with pytest.raises(Crash):
        key_rotation.rotate(
            vault, now=NOW, batch=3, progress=crash_after_two_batches, settle_seconds=0
        )
    assert vault.keystore.count_by_kek() == {1: 4, 2: 6}
    state = key_rotation.status(vault, now=NOW)
    assert state.unfinished
    assert any("rotation is unfinished" in item for item in state.due)

    report = key_rotation.rotate(vault, now=NOW, resume_only=True, batch=3, settle_seconds=0)
    assert not report.new_kek
    assert report.kek_id == 2
    assert report.rewrapped == 4
    assert report.finished
    assert kek_ids(vault.settings.key_dir) == [1, 2]
    assert vault.keystore.count_by_kek() == {2: 10}
    assert opened_names(fresh_vault(vault), seeded) == before
    actions = [b["action"] for b in queued_rotations(vault)]
    assert actions == ["kek_rotation_started", "kek_rotation_resumed", "kek_rotation_finished"]


def test_rerunning_rotate_after_a_crash_continues_instead_of_starting_over(vault: Vault) -> None:
    seed(vault, 4)

    def crash(done: int, total: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        key_rotation.rotate(vault, now=NOW, batch=2, progress=crash, settle_seconds=0)
    report = key_rotation.rotate(vault, now=NOW, batch=2, settle_seconds=0)
    assert not report.new_kek
    assert report.kek_id == 2
    assert report.finished
    assert kek_ids(vault.settings.key_dir) == [1, 2]


def test_resume_without_an_unfinished_rotation_is_refused(vault: Vault) -> None:
    seed(vault, 1)
    with pytest.raises(key_rotation.KeyLifecycleError, match="no rotation is unfinished"):
        key_rotation.rotate(vault, now=NOW, resume_only=True)
    assert kek_ids(vault.settings.key_dir) == [1]


def test_a_key_destroyed_between_reading_and_storing_a_batch_stays_destroyed(
    store_vault: Vault,
) -> None:
    vault = store_vault
    seed(vault, 4)
    keyring_module.add_kek(vault.settings.key_dir)
    vault.keyring.reload()
    batch = vault.keystore.batch_to_rewrap(2, after=START, limit=10)
    rewrapped = vault.keyring.rewrap_many(
        list(zip(batch.subject_ids, batch.wrapped, strict=False)), 2
    )
    erased, replaced = batch.subject_ids[0], batch.subject_ids[1]
    destroyed = vault.keystore.destroy(erased, now=NOW)
    assert destroyed is not None
    vault.keystore.destroy(replaced, now=NOW)
    new_key = vault.keyring.wrap(vault.keyring.new_data_key(), replaced)
    fresh = StoredKey(replaced, "f" * 32, 2, new_key)
    vault.keystore.add([fresh], now=NOW)

    stored = vault.keystore.store_rewrapped(batch, rewrapped, 2)

    assert stored == 2
    assert vault.keystore.get_one(erased) is None
    assert destroyed.key_id in vault.keystore.destroyed_ids()
    kept = vault.keystore.get_one(replaced)
    assert kept is not None
    assert kept.key_id == "f" * 32
    assert kept.wrapped == new_key


def test_a_key_destroyed_while_a_rotation_runs_stays_destroyed(store_vault: Vault) -> None:
    vault = store_vault
    seed(vault, 6)
    erased: list[str] = []

    def erase_one_not_yet_rewrapped(done: int, total: int) -> None:
        if done == 2:
            waiting = vault.keystore.batch_wrapped_by(1, after="", limit=1)
            vault.keystore.destroy(waiting[0].subject_id, now=NOW)
            erased.append(waiting[0].subject_id)

    report = key_rotation.rotate(
        vault, now=NOW, batch=2, progress=erase_one_not_yet_rewrapped, settle_seconds=0
    )
    assert report.finished
    assert report.rewrapped == 5
    assert vault.keystore.get_one(erased[0]) is None
    assert vault.keystore.count_by_kek() == {2: 5}
    assert len(vault.keystore.destroyed_ids()) == 1


def test_rotation_in_worker_processes_gives_the_same_result(tmp_path: Path, key_dir: Path) -> None:
    vault = make_vault(f"sqlite:///{tmp_path / 'pv.db'}", key_dir)
    seeded = seed(vault, 5)
    before = opened_names(vault, seeded)
    report = key_rotation.rotate(vault, now=NOW, batch=2, workers=2, settle_seconds=0)
    assert report.finished
    assert report.rewrapped == 5
    assert opened_names(fresh_vault(vault), seeded) == before


# --- a running service ---------------------------------------------------------------


def test_a_running_service_unwraps_keys_wrapped_by_a_kek_it_never_loaded(vault: Vault) -> None:
    service = fresh_vault(vault)
    seeded = seed(vault, 2)
    before = opened_names(service, seeded)
    key_rotation.rotate(vault, now=NOW, settle_seconds=0)
    assert service.keyring.kek_ids == [1]
    assert opened_names(service, seeded) == before
    assert service.keyring.kek_ids == [1, 2]


def test_a_running_service_wraps_new_keys_with_the_new_kek(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyring_module, "KEK_REFRESH_SECONDS", 0.0)
    service = fresh_vault(vault)
    keyring_module.add_kek(vault.settings.key_dir)
    seeded = seed(service, 1)
    assert service.keyring.kek_id == 2
    assert service.keystore.count_by_kek() == {2: 1}
    assert opened_names(vault, seeded)[0] == opened_names(service, seeded)[0]


def test_a_keyring_keeps_keks_it_loaded_after_their_files_are_retired(key_dir: Path) -> None:
    ring = Keyring.from_folder(key_dir)
    wrapped = ring.wrap(b"k" * 32, "subject")
    keyring_module.add_kek(key_dir)
    ring.reload()
    (key_dir / "kek.key").unlink()
    ring.reload()
    assert ring.unwrap_key(wrapped, "subject") == b"k" * 32


# --- status --------------------------------------------------------------------------


def test_status_reports_each_kek_and_what_is_due(vault: Vault) -> None:
    seed(vault, 3)
    old = (NOW - timedelta(days=400)).timestamp()
    os.utime(vault.settings.key_dir / "kek.key", (old, old))
    state = key_rotation.status(vault, now=NOW)
    assert [(k.kek_id, k.keys, k.active) for k in state.keks] == [(1, 3, True)]
    assert not state.unfinished
    assert any("400 days old" in item for item in state.due)
    assert state.destroyed == 0
    assert state.keystore.endswith("subject-keys.db")

    key_rotation.rotate(vault, now=NOW, settle_seconds=0)
    state = key_rotation.status(vault, now=NOW)
    assert [(k.kek_id, k.keys, k.active) for k in state.keks] == [(1, 0, False), (2, 3, True)]
    assert any("keys retire" in item for item in state.due)
    assert not any("days old" in item for item in state.due)


# --- legacy keys ---------------------------------------------------------------------


def make_legacy(vault: Vault, *, v1: bool) -> None:
    """Turn the database into one from before the key store: every subject's wrapped key
    back in `subjects.wrapped_key`, no key id, and the key store empty."""
    keys = Keys.load(vault.settings.key_dir)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kek = AESGCM(keys.kek)
    with vault.keystore.engine.begin() as connection:
        rows = connection.execute(select(data_keys)).all()
        connection.execute(data_keys.delete())
    with vault.engine.begin() as connection:
        for row in rows:
            wrapped = row.wrapped
            if v1:
                data_key = vault.keyring.unwrap_key(wrapped, row.subject_id)
                nonce = os.urandom(NONCE_BYTES)
                wrapped = WRAP_V1 + nonce + kek.encrypt(nonce, data_key, row.subject_id.encode())
            connection.execute(
                update(subjects)
                .where(subjects.c.id == row.subject_id)
                .values(wrapped_key=wrapped, key_id=None)
            )


@pytest.mark.parametrize("v1", [True, False], ids=["v1-format", "v2-format"])
def test_adopt_moves_legacy_keys_into_the_key_store_once(store_vault: Vault, v1: bool) -> None:
    vault = store_vault
    seeded = seed(vault, 4)
    before = opened_names(vault, seeded)
    make_legacy(vault, v1=v1)

    first = key_rotation.adopt_legacy(vault.engine, vault.keystore, now=NOW, batch=3)
    second = key_rotation.adopt_legacy(vault.engine, vault.keystore, now=NOW)

    assert (first.moved, first.conflicts, second.moved) == (4, 0, 0)
    assert key_rotation.legacy_by_kek(vault.engine) == {}
    with vault.engine.connect() as connection:
        key_ids = connection.execute(select(subjects.c.key_id)).scalars().all()
    stored = {k.key_id for k in vault.keystore.get(_subject_ids(vault)).values()}
    assert set(key_ids) == stored
    assert len(stored) == 4
    assert opened_names(fresh_vault(vault), seeded) == before


def _subject_ids(vault: Vault) -> list[str]:
    with vault.engine.connect() as connection:
        return list(connection.execute(select(subjects.c.id)).scalars())


def test_adopt_finishes_a_run_that_stopped_after_the_key_store_write(vault: Vault) -> None:
    seeded = seed(vault, 2)
    before = opened_names(vault, seeded)
    make_legacy(vault, v1=False)
    with vault.engine.connect() as connection:
        legacy = connection.execute(select(subjects.c.id, subjects.c.wrapped_key)).all()
    vault.keystore.add([StoredKey(r.id, "a" * 32, 1, r.wrapped_key) for r in legacy[:1]], now=NOW)
    result = key_rotation.adopt_legacy(vault.engine, vault.keystore, now=NOW)
    assert result.moved == 2
    assert result.conflicts == 0
    assert vault.keystore.get_one(legacy[0].id).key_id == "a" * 32  # type: ignore[union-attr]
    assert opened_names(vault, seeded) == before


def test_rotation_moves_legacy_keys_first_and_rewraps_them(vault: Vault) -> None:
    seeded = seed(vault, 3)
    before = opened_names(vault, seeded)
    make_legacy(vault, v1=True)
    report = key_rotation.rotate(vault, now=NOW, settle_seconds=0)
    assert report.adopted == 3
    assert report.rewrapped == 3
    assert report.finished
    assert vault.keystore.count_by_kek() == {2: 3}
    assert key_rotation.retire(vault, now=NOW).retired == (1,)
    assert opened_names(fresh_vault(vault), seeded) == before
