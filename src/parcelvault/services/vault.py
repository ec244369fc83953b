"""Wiring: `build(settings)` assembles the engine, keys and policy every use case needs.
Nothing is created at import time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from parcelvault.adapters.db.engine import make_engine
from parcelvault.crypto.keyring import Keyring
from parcelvault.crypto.keystore import KeyStore, default_url
from parcelvault.privacy.policy import Policy, load_default_policy, load_policy_text
from parcelvault.services.access_writer import AccessWriter
from parcelvault.services.view_cache import VersionedCache
from parcelvault.settings import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Vault:
    settings: Settings
    engine: Engine
    keyring: Keyring
    keystore: KeyStore
    policy: Policy
    clock: Callable[[], datetime] = field(default=utc_now)
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    snapshots: VersionedCache[Any] = field(
        default_factory=lambda: VersionedCache(max_entries=5_000, max_age_seconds=60.0),
        repr=False,
    )
    """Sealed snapshots of recently viewed shipments (see `tracking.Snapshot`)."""
    access_writer: AccessWriter = field(init=False, repr=False)
    """Writes the access records of disclosed views (see `access_writer`)."""

    def __post_init__(self) -> None:
        self.access_writer = AccessWriter(self.engine, self._write_lock, self.writing)

    def writing(self) -> AbstractContextManager[object]:
        """Hold while a write transaction runs. SQLite has one writer: threads of this
        process take turns here instead of in SQLite's busy handler, which sleeps for
        milliseconds at a time and can fail transactions that upgrade a read lock.
        PostgreSQL needs no such turn-taking."""
        if self.engine.dialect.name == "sqlite":
            return self._write_lock
        return nullcontext()


def load_policy(settings: Settings) -> Policy:
    if settings.policy is None:
        return load_default_policy()
    return load_policy_text(settings.policy.read_text(), str(settings.policy))


def open_keystore(settings: Settings) -> KeyStore:
    return KeyStore.open(settings.keystore_url or default_url(settings.key_dir))


def build(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    checkpoints_elsewhere: bool = False,
) -> Vault:
    """`checkpoints_elsewhere`: another process (`parcelvault jobs`) checkpoints
    SQLite's write-ahead log; see `engine.DEFERRED_WAL_CHECKPOINT_PAGES`."""
    return Vault(
        settings=settings,
        engine=make_engine(settings.database_url, checkpoints_elsewhere=checkpoints_elsewhere),
        keyring=Keyring.from_folder(settings.key_dir),
        keystore=open_keystore(settings),
        policy=load_policy(settings),
        clock=clock,
    )
