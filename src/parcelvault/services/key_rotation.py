"""The key lifecycle: rotating the key-encryption key, retiring old ones, moving
legacy keys into the key store, and the state `keys status` reports.

Rotation
--------
`rotate` writes a new key-encryption key (unless a rotation is unfinished: then it
continues it), and re-wraps every data key in the key store that an older one wrapped,
a batch per transaction (in row order on SQLite, subject order on PostgreSQL). Nothing
else changes: the data keys stay the
same, so no sealed field is touched and the service keeps serving. A running service
wraps new keys with the new key-encryption key within `KEK_REFRESH_SECONDS` of its file
appearing (see `Keyring`); keys it wrapped with the old one just before are found by a
later pass. A batch stores a re-wrapped key only if the row still has the key id it was
read with, so a key destroyed (or replaced) during rotation stays as erasure left it.

Whether a rotation is unfinished is read from the data itself: some key or staff
secret is still wrapped by a key-encryption key other than the newest. An interrupted
rotation therefore resumes wherever it stopped, whoever reruns it.

Retiring
--------
`retire` deletes the files of key-encryption keys that wrap nothing any more (no
data key in the key store, no staff secret, no legacy key in the database). Key-store
backups made before then still need the retired key; see docs/operations.md.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, and_, bindparam, select, update

from parcelvault.adapters.db import store
from parcelvault.adapters.db.tables import staff, subjects
from parcelvault.crypto.keyring import KEK_REFRESH_SECONDS, Keyring, add_kek, kek_ids, kek_path
from parcelvault.crypto.keystore import (
    START,
    KeyStore,
    RewrapBatch,
    RewrapCursor,
    StoredKey,
    kek_of,
    new_key_id,
)
from parcelvault.ledger import log as ledger_log
from parcelvault.ledger.keys import signer_since
from parcelvault.services.vault import Vault

BATCH = 10_000
POOL_FROM = 50_000
"""Rotations of at least this many keys re-wrap in worker processes."""
PASSES = 3

Progress = Callable[[int, int], None]
"""Called with (keys re-wrapped so far, keys to re-wrap) after every stored batch."""


class KeyLifecycleError(Exception):
    """A lifecycle step that cannot go on; the message says why and names no person."""


# --- staff secrets -------------------------------------------------------------------


def _totp_purpose(staff_id: int) -> str:
    return f"totp:{staff_id}"


def secrets_by_kek(engine: Engine) -> dict[int, int]:
    """How many staff TOTP secrets each key-encryption key seals."""
    counts: dict[int, int] = {}
    with engine.connect() as connection:
        for sealed in connection.execute(
            select(staff.c.totp_secret).where(staff.c.totp_secret.is_not(None))
        ).scalars():
            kek = kek_of(sealed)
            counts[kek] = counts.get(kek, 0) + 1
    return counts


def reseal_secrets(engine: Engine, keyring: Keyring, target: int) -> int:
    """Seal every staff secret not sealed by `target` again under it; returns how many.
    A secret changed meanwhile (re-enrolment) is left as the other writer left it."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(staff.c.id, staff.c.totp_secret).where(staff.c.totp_secret.is_not(None))
        ).all()
    changed = 0
    for row in rows:
        if kek_of(row.totp_secret) == target:
            continue
        resealed = keyring.reseal_secret(row.totp_secret, _totp_purpose(row.id))
        with engine.begin() as connection:
            result = connection.execute(
                update(staff)
                .where(staff.c.id == row.id, staff.c.totp_secret == row.totp_secret)
                .values(totp_secret=resealed)
            )
            changed += result.rowcount
    return changed


# --- legacy keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class Adoption:
    moved: int
    conflicts: int
    """Subjects whose legacy key differs from a key the key store already holds for
    them; left in place for an operator to look at (see `keys status`)."""


def legacy_by_kek(engine: Engine) -> dict[int, int]:
    counts: dict[int, int] = {}
    with engine.connect() as connection:
        for wrapped in connection.execute(
            select(subjects.c.wrapped_key).where(subjects.c.wrapped_key.is_not(None))
        ).scalars():
            kek = kek_of(wrapped)
            counts[kek] = counts.get(kek, 0) + 1
    return counts


def adopt_legacy(
    engine: Engine, keystore: KeyStore, *, now: datetime, batch: int = 1_000
) -> Adoption:
    """Move wrapped keys still kept in `subjects.wrapped_key` into the key store: each
    gets a key id, `subjects.key_id` names it and the column is emptied. Idempotent and
    resumable: a key the key store already holds with the same wrapped bytes (an
    earlier run stopped half way) is simply finished."""
    moved = conflicts = 0
    skip: set[str] = set()
    statement = (
        update(subjects)
        .where(and_(subjects.c.id == bindparam("sid"), subjects.c.wrapped_key.is_not(None)))
        .values(key_id=bindparam("kid"), wrapped_key=None)
    )
    while True:
        with engine.connect() as connection:
            rows = [
                r
                for r in store.legacy_wrapped_keys(connection, batch + len(skip))
                if r.id not in skip
            ]
        if not rows:
            return Adoption(moved, conflicts)
        existing = keystore.get(r.id for r in rows)
        fresh = [
            StoredKey(r.id, new_key_id(), kek_of(r.wrapped_key), bytes(r.wrapped_key))
            for r in rows
            if r.id not in existing
        ]
        stored = {**existing, **keystore.add(fresh, now=now)}
        settled = []
        for row in rows:
            key = stored[row.id]
            if key.wrapped == bytes(row.wrapped_key):
                settled.append({"sid": row.id, "kid": key.key_id})
            else:
                skip.add(row.id)
                conflicts += 1
        if settled:
            with engine.begin() as connection:
                connection.execute(statement, settled)
            moved += len(settled)


# --- rotation ------------------------------------------------------------------------


_worker_keyring: Keyring | None = None


def _start_worker(folder: str) -> None:
    global _worker_keyring
    _worker_keyring = Keyring.from_folder(Path(folder))


def _rewrap_in_worker(items: list[tuple[str, bytes]], target: int) -> list[bytes]:
    assert _worker_keyring is not None
    return _worker_keyring.rewrap_many(items, target)


class _Rewrapper:
    """Unwrap-and-wrap in this process (`workers == 0`), or in that many worker
    processes beside it, which each load the key folder themselves (no key travels
    between processes) while this one reads and writes the key store."""

    def __init__(self, keyring: Keyring, folder: Path, workers: int) -> None:
        self.keyring = keyring
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        if workers > 0:
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(str(folder),),
            )

    @property
    def depth(self) -> int:
        return self.workers + 1 if self.pool is not None else 1

    def submit(self, items: list[tuple[str, bytes]], target: int) -> Future[list[bytes]]:
        if self.pool is not None:
            return self.pool.submit(_rewrap_in_worker, items, target)
        done: Future[list[bytes]] = Future()
        done.set_result(self.keyring.rewrap_many(items, target))
        return done

    def __enter__(self) -> _Rewrapper:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class PassResult:
    read: int
    stored: int
    """Rows changed; `read - stored` keys were destroyed or replaced meanwhile."""


def rewrap_pass(
    keystore: KeyStore,
    keyring: Keyring,
    folder: Path,
    target: int,
    *,
    total: int,
    batch: int = BATCH,
    workers: int = 0,
    progress: Progress | None = None,
    done_before: int = 0,
) -> PassResult:
    """One pass over the key store, re-wrapping every key not wrapped by `target`. Each
    batch is stored in its own transaction, so stopping anywhere loses at most the
    batches not yet stored.

    One thread stores a batch while this one reads and re-wraps the next: the database
    driver lets go of the interpreter while the statement runs, so on two cores the
    UPDATEs and the crypto overlap."""
    after: RewrapCursor = START
    read = stored = 0
    in_flight: deque[tuple[RewrapBatch, Future[list[bytes]]]] = deque()
    storing: tuple[RewrapBatch, Future[int]] | None = None
    exhausted = False

    def stored_one(pending: tuple[RewrapBatch, Future[int]]) -> None:
        nonlocal read, stored
        stored += pending[1].result()
        read += len(pending[0])
        if progress is not None:
            progress(done_before + read, max(total, done_before + read))

    with (
        _Rewrapper(keyring, folder, workers) as rewrapper,
        ThreadPoolExecutor(1, thread_name_prefix="keystore-writer") as writer,
    ):
        while True:
            while not exhausted and len(in_flight) < rewrapper.depth:
                found = keystore.batch_to_rewrap(target, after=after, limit=batch)
                if not found:
                    exhausted = True
                    break
                after = found.after
                items = list(zip(found.subject_ids, found.wrapped, strict=True))
                in_flight.append((found, rewrapper.submit(items, target)))
            if not in_flight:
                break
            found, future = in_flight.popleft()
            wrapped = future.result()
            if storing is not None:
                stored_one(storing)
            storing = (found, writer.submit(keystore.store_rewrapped, found, wrapped, target))
        if storing is not None:
            stored_one(storing)
    return PassResult(read, stored)


@dataclass(frozen=True)
class RotationReport:
    kek_id: int
    new_kek: bool
    """Whether this run wrote the key-encryption key (False: it resumed a rotation)."""
    previous: tuple[int, ...]
    adopted: int
    rewrapped: int
    skipped: int
    """Keys destroyed or replaced while they were being re-wrapped (left as they are)."""
    secrets: int
    remaining: int
    """Keys or secrets still wrapped by an older key-encryption key (0: finished)."""
    retired: tuple[int, ...] = ()

    @property
    def finished(self) -> bool:
        return self.remaining == 0


def pending(vault: Vault, target: int) -> tuple[int, int]:
    """(data keys, staff secrets) not yet wrapped by `target`."""
    keys = vault.keystore.count_not_wrapped_by(target)
    secrets = sum(n for kek, n in secrets_by_kek(vault.engine).items() if kek != target)
    return keys, secrets


def _record(vault: Vault, *, body: dict[str, Any], kek_id: int, now: datetime) -> None:
    with vault.writing(), vault.engine.begin() as connection:
        ledger_log.enqueue(
            connection,
            kind="key_rotation",
            body=body,
            subject_id=None,
            ref=f"kek:{kek_id}",
            now=now,
        )


def default_workers(total: int) -> int:
    """Worker processes for re-wrapping `total` keys. None for small stores (starting
    one costs more than it saves) and on machines of one or two cores: measured on two
    cores, shipping each batch to a worker and back cost more than the crypto it moved
    off this process (re-wrapping is about a third of the per-key time; the key store's
    UPDATE is the rest). With three or more cores, up to two workers beside this one."""
    cores = os.cpu_count() or 1
    return min(2, cores - 1) if total >= POOL_FROM and cores >= 3 else 0


def rotate(
    vault: Vault,
    *,
    now: datetime,
    resume_only: bool = False,
    batch: int = BATCH,
    workers: int | None = None,
    progress: Progress | None = None,
    settle_seconds: float = KEK_REFRESH_SECONDS,
) -> RotationReport:
    """Rotate the key-encryption key, or finish an unfinished rotation; see the module
    docstring. `resume_only` refuses to start a new rotation."""
    folder = vault.settings.key_dir
    keyring = vault.keyring
    keyring.reload()
    adopted = adopt_legacy(vault.engine, vault.keystore, now=now).moved
    target = keyring.kek_id
    keys_left, secrets_left = pending(vault, target)
    previous = tuple(i for i in kek_ids(folder) if i != target)
    new_kek = False
    started = time.monotonic()
    if keys_left == 0 and secrets_left == 0:
        if resume_only:
            raise KeyLifecycleError(
                "no rotation is unfinished; run `parcelvault keys rotate` to start one"
            )
        target = add_kek(folder)
        if not keyring.reload() or keyring.kek_id != target:
            raise KeyLifecycleError(f"the new key-encryption key {target} did not load")
        new_kek = True
        previous = tuple(i for i in kek_ids(folder) if i != target)
        vault.keystore.record_kek(target, now=now)
        keys_left, secrets_left = pending(vault, target)
        _record(
            vault,
            body={
                "action": "kek_rotation_started",
                "kek": target,
                "previous_keks": list(previous),
                "keys_to_rewrap": keys_left,
                "secrets_to_reseal": secrets_left,
            },
            kek_id=target,
            now=now,
        )
    else:
        vault.keystore.record_kek(target, now=now)
        _record(
            vault,
            body={
                "action": "kek_rotation_resumed",
                "kek": target,
                "keys_to_rewrap": keys_left,
                "secrets_to_reseal": secrets_left,
            },
            kek_id=target,
            now=now,
        )
    chosen = workers if workers is not None else default_workers(keys_left)
    read = stored = 0
    secrets = 0
    left = (keys_left, secrets_left)
    for number in range(PASSES):
        if number > 0:
            # Give services that still wrap with the old key time to notice the new one.
            time.sleep(max(0.0, settle_seconds - (time.monotonic() - started)))
        result = rewrap_pass(
            vault.keystore,
            keyring,
            folder,
            target,
            total=keys_left,
            batch=batch,
            workers=chosen,
            progress=progress,
            done_before=read,
        )
        read += result.read
        stored += result.stored
        secrets += reseal_secrets(vault.engine, keyring, target)
        left = pending(vault, target)
        if left == (0, 0):
            break
        chosen = default_workers(left[0])
    remaining = sum(left)
    if remaining == 0:
        _record(
            vault,
            body={
                "action": "kek_rotation_finished",
                "kek": target,
                "keys": vault.keystore.count_by_kek().get(target, 0),
                "keys_rewrapped": stored,
                "secrets_resealed": secrets,
            },
            kek_id=target,
            now=vault.clock(),
        )
    return RotationReport(
        kek_id=target,
        new_kek=new_kek,
        previous=previous,
        adopted=adopted,
        rewrapped=stored,
        skipped=read - stored,
        secrets=secrets,
        remaining=remaining,
    )


# --- retiring ------------------------------------------------------------------------


@dataclass(frozen=True)
class Retirement:
    retired: tuple[int, ...]
    still_needed: dict[int, str] = field(default_factory=dict)
    """kek id -> what it still wraps."""


def _uses(vault: Vault) -> dict[int, list[str]]:
    uses: dict[int, list[str]] = {}
    for kek, n in vault.keystore.count_by_kek().items():
        uses.setdefault(kek, []).append(f"{n} data key{'s' if n != 1 else ''}")
    for kek, n in secrets_by_kek(vault.engine).items():
        uses.setdefault(kek, []).append(f"{n} staff secret{'s' if n != 1 else ''}")
    for kek, n in legacy_by_kek(vault.engine).items():
        uses.setdefault(kek, []).append(f"{n} legacy key{'s' if n != 1 else ''} in the database")
    return uses


def retire(vault: Vault, *, now: datetime) -> Retirement:
    """Delete the files of older key-encryption keys that wrap nothing any more."""
    folder = vault.settings.key_dir
    vault.keyring.reload()
    active = vault.keyring.kek_id
    uses = _uses(vault)
    retired: list[int] = []
    needed: dict[int, str] = {}
    for kek in kek_ids(folder):
        if kek == active:
            continue
        if uses.get(kek):
            needed[kek] = ", ".join(uses[kek])
            continue
        kek_path(folder, kek).unlink()
        vault.keystore.record_kek_retired(kek, now=now)
        _record(
            vault,
            body={"action": "kek_retired", "kek": kek, "active_kek": active},
            kek_id=kek,
            now=now,
        )
        retired.append(kek)
    return Retirement(tuple(retired), needed)


# --- status --------------------------------------------------------------------------


@dataclass(frozen=True)
class KekState:
    kek_id: int
    since: datetime | None
    """When it was put to use (recorded by rotation), else its file's modification time."""
    keys: int
    secrets: int
    legacy: int
    active: bool
    present: bool
    """Whether its file is in the key folder (False: retired, or missing)."""
    retired_at: datetime | None


@dataclass(frozen=True)
class KeyStatus:
    keks: tuple[KekState, ...]
    active: int
    keystore: str
    destroyed: int
    signer_since: datetime | None
    due: tuple[str, ...]
    missing: tuple[int, ...]
    """Key-encryption keys something still needs whose file is not in the key folder."""

    @property
    def unfinished(self) -> bool:
        return any((k.keys or k.secrets) and not k.active for k in self.keks)


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def status(vault: Vault, *, now: datetime) -> KeyStatus:
    folder = vault.settings.key_dir
    vault.keyring.reload()
    present = set(kek_ids(folder))
    active = max(present) if present else vault.keyring.kek_id
    keys = vault.keystore.count_by_kek()
    secrets = secrets_by_kek(vault.engine)
    legacy = legacy_by_kek(vault.engine)
    history = vault.keystore.kek_history()
    ids = sorted(present | set(keys) | set(secrets) | set(legacy) | set(history))
    states = []
    for kek in ids:
        recorded = history.get(kek)
        since = recorded[0] if recorded else _mtime(kek_path(folder, kek))
        states.append(
            KekState(
                kek_id=kek,
                since=since,
                keys=keys.get(kek, 0),
                secrets=secrets.get(kek, 0),
                legacy=legacy.get(kek, 0),
                active=kek == active,
                present=kek in present,
                retired_at=recorded[1] if recorded else None,
            )
        )
    due: list[str] = []
    missing = tuple(s.kek_id for s in states if not s.present and (s.keys or s.secrets or s.legacy))
    for kek in missing:
        due.append(f"key-encryption key {kek} is needed but its file is missing: restore it")
    if any(s.keys or s.secrets for s in states if not s.active):
        due.append("a key rotation is unfinished: run `parcelvault keys rotate --resume`")
    elif any(s.present and not s.active for s in states):
        due.append("older key-encryption keys wrap nothing: run `parcelvault keys retire`")
    if any(s.legacy for s in states):
        due.append("legacy keys are still in the database: run `parcelvault keys adopt`")
    current = next((s for s in states if s.active), None)
    if current is not None and current.since is not None:
        age = (now - current.since).days
        if age >= vault.settings.kek_max_age_days:
            due.append(
                f"the key-encryption key is {age} days old (limit "
                f"{vault.settings.kek_max_age_days}): run `parcelvault keys rotate`"
            )
    signed_since = signer_since(folder)
    if signed_since is not None:
        age = (now - signed_since).days
        if age >= vault.settings.ledger_signer_max_age_days:
            due.append(
                f"the checkpoint signing key is {age} days old (limit "
                f"{vault.settings.ledger_signer_max_age_days}): run `parcelvault ledger rotate-key`"
            )
    return KeyStatus(
        keks=tuple(states),
        active=active,
        keystore=vault.keystore.engine.url.render_as_string(hide_password=True),
        destroyed=vault.keystore.count_destroyed(),
        signer_since=signed_since,
        due=tuple(due),
        missing=missing,
    )
