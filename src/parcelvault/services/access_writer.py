"""Group commit of access records for views served on the event loop.

Security invariant: a view that discloses personal fields to anyone but their subject
is returned only after its access record is committed (the ledger learns of every
disclosure from those rows), and only if the shipment is still at the version the
view was built from. Every change to what a view can show (a scan, a correction, an
erasure) advances that version, so a record describes exactly what was shown, and an
erasure can never fall between a view and its record.

Pipeline: a request assembles its view on the event loop and awaits `record` with the
version it read. Records that arrive during one turn of the loop are written together
by one callback the loop runs after them: one transaction checks the versions of all
their shipments (one query), inserts the records whose shipment has not moved and
commits once; each request then learns whether its record was written (False: read
the shipment again). On SQLite the callback writes on the loop itself, but only if
neither this process's write turn nor another process holds the write lock (the busy
timeout is zero for that attempt): the loop never waits for a lock. While one is held,
the batch stays on the loop (gathering the records that arrive meanwhile) and is tried
again every `RETRY_SECONDS`, which follows a lock's release far more closely than
SQLite's busy handler, whose sleeps grow to 100 ms; after `LOOP_PATIENCE_SECONDS` of
trying, and always on PostgreSQL (network round trips), a pool thread writes the batch
and waits its turn.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from parcelvault.adapters.db import store
from parcelvault.adapters.db.engine import committed, immediate_transaction, without_waiting
from parcelvault.privacy.access import AccessRecord

RETRY_SECONDS = 0.002
LOOP_PATIENCE_SECONDS = 1.0


@dataclass(frozen=True)
class _Waiting:
    record: AccessRecord
    version: int
    written: asyncio.Future[bool]
    since: float
    """The loop's clock when the record arrived."""


@dataclass
class _LoopBatch:
    waiting: list[_Waiting] = field(default_factory=list)
    flush_scheduled: bool = False


class AccessWriter:
    def __init__(
        self,
        engine: Engine,
        write_lock: threading.Lock,
        turn: Callable[[], AbstractContextManager[object]],
    ) -> None:
        """`write_lock`: the process's write turn on SQLite, tried without waiting on
        the loop; `turn`: the turn as a pool thread takes it (`Vault.writing`)."""
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock = write_lock
        self._turn = turn
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBatch] = (
            weakref.WeakKeyDictionary()
        )

    async def record(self, record: AccessRecord, version: int) -> bool:
        """True once `record` is committed; False if its shipment is no longer at
        `version` (the view built from it must not be returned)."""
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _LoopBatch()
        waiting = _Waiting(record, version, loop.create_future(), loop.time())
        batch.waiting.append(waiting)
        if not batch.flush_scheduled:
            batch.flush_scheduled = True
            loop.call_soon(self._flush, loop, batch)
        return await waiting.written

    def _flush(self, loop: asyncio.AbstractEventLoop, batch: _LoopBatch) -> None:
        taken, batch.waiting, batch.flush_scheduled = batch.waiting, [], False
        # A request that went away cancelled its future: its view is never returned,
        # so its record is not written.
        waiting = [w for w in taken if not w.written.cancelled()]
        if not waiting:
            return
        try:
            written = self._write_now(waiting) if self._sqlite else None
        except Exception as exc:
            _settle(waiting, exc)
            return
        if written is not None:
            _settle(waiting, written)
            return
        if self._sqlite and loop.time() - waiting[0].since < LOOP_PATIENCE_SECONDS:
            batch.waiting[:0] = waiting
            batch.flush_scheduled = True
            loop.call_later(RETRY_SECONDS, self._flush, loop, batch)
            return
        in_thread = loop.run_in_executor(None, self._write_waiting_turn, waiting)
        in_thread.add_done_callback(lambda done: _settle(waiting, _outcome(done)))

    def _write_now(self, waiting: Sequence[_Waiting]) -> list[bool] | None:
        """The batch written without waiting for any lock, or None if one is held."""
        if not self._write_lock.acquire(blocking=False):
            return None
        try:
            with self._engine.connect() as connection, without_waiting(connection):
                try:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                except OperationalError:  # another process holds the write lock
                    connection.rollback()
                    return None
                with committed(connection):
                    return _check_and_insert(connection, waiting)
        finally:
            self._write_lock.release()

    def _write_waiting_turn(self, waiting: Sequence[_Waiting]) -> list[bool]:
        with immediate_transaction(self._engine, self._turn()) as connection:
            return _check_and_insert(connection, waiting)


def _check_and_insert(connection: Connection, waiting: Sequence[_Waiting]) -> list[bool]:
    versions = store.versions_held(connection, (w.record.shipment_id for w in waiting))
    written = [versions.get(w.record.shipment_id) == w.version for w in waiting]
    store.insert_accesses(
        connection, [w.record for w, ok in zip(waiting, written, strict=True) if ok]
    )
    return written


def _outcome(done: asyncio.Future[list[bool]]) -> list[bool] | BaseException:
    if done.cancelled():
        return asyncio.CancelledError()
    exc = done.exception()
    return exc if exc is not None else done.result()


def _settle(waiting: Sequence[_Waiting], outcome: list[bool] | BaseException) -> None:
    for index, w in enumerate(waiting):
        if w.written.done():
            continue
        if isinstance(outcome, asyncio.CancelledError):
            w.written.cancel()
        elif isinstance(outcome, BaseException):
            w.written.set_exception(outcome)
        else:
            w.written.set_result(outcome[index])
