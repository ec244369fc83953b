"""Replacing the transparency log's checkpoint signing key (`parcelvault ledger
rotate-key`); the key files themselves are handled by `ledger.keys`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from parcelvault.adapters.db.tables import ledger_checkpoints, ledger_queue
from parcelvault.ledger import log as ledger_log
from parcelvault.ledger.keys import (
    complete_rotation,
    load_signer,
    retired_verifiers,
    stage_next_signer,
)
from parcelvault.ledger.note import format_verifier_key


@dataclass(frozen=True)
class SignerRotation:
    retired: str
    """The retired key's verifier key string."""
    current: str
    last_size: int | None
    """The size of the last checkpoint the retired key signed."""


def rotate_signer(engine: Engine, folder: Path, *, now: datetime) -> SignerRotation:
    """Replace the checkpoint signing key. The old key signs one last checkpoint that
    covers a `key_rotation` entry naming both keys, so whoever trusts the old key can
    learn the new one from the log itself; then the new key takes over. Rerunning after
    an interruption finishes with the same new key."""
    current = load_signer(folder)
    staged = stage_next_signer(folder, current)
    retired_key = format_verifier_key(current.verifier)
    new_key = format_verifier_key(staged.verifier)
    ref = f"signer:{staged.key_id:08x}"
    with engine.begin() as connection:
        queued = connection.execute(
            select(ledger_queue.c.id).where(ledger_queue.c.ref == ref).limit(1)
        ).first()
        if queued is None and ledger_log.index_of_ref(connection, ref) is None:
            ledger_log.enqueue(
                connection,
                kind="key_rotation",
                body={
                    "action": "ledger_signer_rotated",
                    "retired_key": retired_key,
                    "new_key": new_key,
                },
                subject_id=None,
                ref=ref,
                now=now,
            )
    # Sequence until the entry is in the log (the service's sequencer may be doing the
    # same), then have the old key sign a checkpoint that covers it.
    while not _logged(engine, ref):
        # Nothing appended and still not logged: the entry is gone. (The service's
        # sequencer may have appended it just before this round looked.)
        if not ledger_log.sequence(engine, now=now) and not _logged(engine, ref):
            raise LookupError("the key rotation entry did not reach the log; rerun")
    ledger_log.checkpoint(engine, signer=current, now=now)
    earlier = retired_verifiers(folder)
    after = earlier[-1].last_size if earlier and earlier[-1].last_size is not None else -1
    with engine.connect() as connection:
        first, last = connection.execute(
            select(func.min(ledger_checkpoints.c.size), func.max(ledger_checkpoints.c.size)).where(
                ledger_checkpoints.c.size > after
            )
        ).one()
    complete_rotation(folder, current, first_size=first, last_size=last, now=now)
    return SignerRotation(retired_key, new_key, last)


def _logged(engine: Engine, ref: str) -> bool:
    with engine.connect() as connection:
        return ledger_log.index_of_ref(connection, ref) is not None
