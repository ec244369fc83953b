"""Retention: personal values are removed when the policy's retention period for
their field has ended.

When a period ends
------------------
Each field's rule reads `<days>d after created` or `<days>d after delivered`.

* `after created` counts from the shipment's `created_at`.
* `after delivered` counts from the time of the event that ended the shipment: the
  delivery scan for delivered parcels, or the final `returned_to_sender` or `expired`
  scan for parcels that ended otherwise (the shipment's `status_at` while its status
  is one of those). A shipment still under way has no such time: its `after
  delivered` fields are not due, and it is looked at again a day later.

What the sweep does
-------------------
For each shipment whose `retention_next_at` has come (or is NULL with `shredded`
NULL: never looked at), the sweep deletes the sealed values of every field whose
period has ended (the shipment's own fields, and the proof-of-delivery fields of its
events), adds those field names to `shipments.shredded`, bumps the shipment's
version when a value was removed (views are cached by version), and sets
`retention_next_at` to the next time a period ends, or a day later for a shipment
still under way. When no period is left to end, `retention_next_at` becomes NULL and
`shredded` at least the empty string, so the shipment is not read again. The
subject's other data (other shipments, the key) stays; ledger entries stay.

Shipments under an active legal hold are left untouched (and reported); their
`retention_next_at` stays as it was, so the first sweep after the hold's release
removes what is due by then.

Decisions are made in batches in set-based SQL straight on the DBAPI cursor: one
keyset query picks a batch of due shipments; per group of shipments with the same due
fields, one query reads which of those fields each shipment has (one row per shipment)
and one DELETE removes them (sealed values are stored by shipment, proofs included, so
both walk neighbouring key ranges; see `tables.sealed_fields`); one executemany per
kind of outcome writes the outcomes.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from parcelvault.domain.statuses import FINAL_STATUSES
from parcelvault.privacy.policy import FieldRule, Policy
from parcelvault.services.periodic import Periodic
from parcelvault.services.vault import Vault

log = logging.getLogger("parcelvault.retention")

RECHECK = timedelta(days=1)
"""How soon a shipment still under way is looked at again."""
BATCH_SIZE = 2_000
IN_CHUNK = 1_000
SWEEP_CACHE_KIB = -65_536
"""SQLite page cache of the sweep's connection (negative: KiB, as the pragma reads it)."""
REMOVED_NOTE = "removed after its retention period"


# --- when each field is due ----------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The policy's retention rules grouped by period: (period, fields) pairs for
    periods counted from creation and for periods counted from delivery."""

    after_created: tuple[tuple[timedelta, frozenset[str]], ...]
    after_delivered: tuple[tuple[timedelta, frozenset[str]], ...]
    personal: frozenset[str]
    """Every field the policy seals, of shipments and of their events' proofs."""

    @classmethod
    def of(cls, policy: Policy) -> Schedule:
        groups: dict[tuple[str, int], set[str]] = {}
        for rule in policy.fields.values():
            key = (rule.retention.after, rule.retention.days)
            groups.setdefault(key, set()).add(rule.name)

        def periods(after: str) -> tuple[tuple[timedelta, frozenset[str]], ...]:
            return tuple(
                (timedelta(days=days), frozenset(names))
                for (anchor, days), names in sorted(groups.items())
                if anchor == after
            )

        return cls(
            after_created=periods("created"),
            after_delivered=periods("delivered"),
            personal=_names(policy.fields_of("shipment")) | _names(policy.fields_of("event")),
        )


class Decider:
    """Which fields' periods have ended at `now`, and when the next one ends (None: no
    period is left to end), on values as the driver returns them. Each period's cutoff
    (`now - period`) is converted once to the stored form (text on SQLite, where it
    sorts as time does; datetimes on PostgreSQL), so a shipment whose periods have all
    ended costs comparisons only; times are parsed just for periods still running."""

    def __init__(self, schedule: Schedule, now: datetime, stored: Callable[[datetime], Any]):
        self.created = [(stored(now - p), p, names) for p, names in schedule.after_created]
        self.delivered = [(stored(now - p), p, names) for p, names in schedule.after_delivered]
        self.recheck = now + RECHECK
        self._unions: dict[tuple[frozenset[str], ...], frozenset[str]] = {}

    def __call__(
        self, status: str, status_at: Any, created_at: Any
    ) -> tuple[frozenset[str], datetime | None]:
        ended: list[frozenset[str]] = []
        upcoming: list[datetime] = []
        for cutoff, period, names in self.created:
            if created_at <= cutoff:
                ended.append(names)
            else:
                upcoming.append(_parse_time(created_at) + period)
        if self.delivered:
            if status in FINAL_STATUSES and status_at is not None:
                for cutoff, period, names in self.delivered:
                    if status_at <= cutoff:
                        ended.append(names)
                    else:
                        upcoming.append(_parse_time(status_at) + period)
            else:
                upcoming.append(self.recheck)
        key = tuple(ended)
        due = self._unions.get(key)
        if due is None:
            due = self._unions[key] = frozenset().union(*ended)
        return due, min(upcoming) if upcoming else None


def _names(rules: Iterable[FieldRule]) -> frozenset[str]:
    return frozenset(rule.name for rule in rules)


# --- the report ------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldShipment:
    tracking_number: str
    case_refs: tuple[str, ...]


@dataclass
class SweepReport:
    now: datetime
    dry_run: bool
    examined: int = 0
    """Shipments whose retention was due to be looked at (held ones included)."""
    shipments_changed: int = 0
    """Shipments that had at least one value removed."""
    removed: Counter[str] = field(default_factory=Counter)
    """Values removed per field name."""
    held: list[HeldShipment] = field(default_factory=list)
    next_due: datetime | None = None
    """When the next sweep will have something to do (None: nothing is scheduled)."""
    seconds: float = 0.0

    @property
    def values_removed(self) -> int:
        return sum(self.removed.values())


Progress = Callable[[int, int], None]
"""Called with (shipments examined so far, shipments due in all)."""


# --- SQL on the DBAPI cursor -----------------------------------------------------------


class _Sql:
    """Plain SQL for both databases: written with `?` placeholders, turned into `%s`
    for psycopg; timestamps bound as SQLAlchemy's SQLite dialect stores them. The
    statements built with f-strings interpolate only constants and placeholders."""

    def __init__(self, connection: Connection) -> None:
        self.sqlite = connection.dialect.name == "sqlite"
        self.cursor = connection.connection.cursor()

    def text(self, sql: str) -> str:
        return sql if self.sqlite else sql.replace("?", "%s")

    def time(self, value: datetime | None) -> Any:
        if value is None or not self.sqlite:
            return value
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.cursor.execute(self.text(sql), tuple(params))
        return list(self.cursor.fetchall())

    def run(self, sql: str, params: Sequence[Any]) -> None:
        self.cursor.execute(self.text(sql), tuple(params))

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            self.cursor.executemany(self.text(sql), params)

    def close(self) -> None:
        self.cursor.close()


def _read_time(value: Any) -> datetime | None:
    return None if value is None else _parse_time(value)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _marks(count: int) -> str:
    return ",".join("?" * count)


_DUE = "(retention_next_at <= ? OR (retention_next_at IS NULL AND shredded IS NULL))"
_EVERY = "(? IS NOT NULL)"
"""Every shipment, with the same one parameter as `_DUE` (a recheck of all)."""


# --- the sweep -------------------------------------------------------------------------


def count_due(vault: Vault, now: datetime, *, everything: bool = False) -> int:
    with vault.engine.connect() as connection:
        sql = _Sql(connection)
        try:
            due = _EVERY if everything else _DUE
            query = f"SELECT count(*) FROM shipments WHERE {due}"  # noqa: S608 (constants only)
            found = sql.rows(query, [sql.time(now)])
        finally:
            sql.close()
    return int(found[0][0])


def sweep(
    vault: Vault,
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    everything: bool = False,
) -> SweepReport:
    """Remove every value whose retention period has ended (see the module text).
    With `dry_run`, nothing is written and the report says what would be removed.
    Setting `stop` ends the sweep after the batch in hand (each batch commits).

    With `everything`, every shipment is decided again under the policy in force, not
    only those due: a shipment is otherwise looked at on the date worked out under the
    policy of its last sweep, so a period shortened since (or a field given a period
    it did not have) would apply only from then on."""
    started = time.perf_counter()
    now = vault.clock()
    schedule = Schedule.of(vault.policy)
    report = SweepReport(now=now, dry_run=dry_run)
    total = count_due(vault, now, everything=everything)
    if progress is not None:
        progress(0, total)
    after = ""
    planned_next: list[datetime] = []
    decide: Decider | None = None
    with vault.engine.connect() as connection, _sqlite_cache(connection):
        while stop is None or not stop.is_set():
            with vault.writing(), connection.begin():
                sql = _Sql(connection)
                decide = decide or Decider(schedule, now, sql.time)
                try:
                    rows = _due_batch(
                        sql, now, after, batch_size, lock=not dry_run, everything=everything
                    )
                    if not rows:
                        break
                    after = rows[-1][0]
                    planned = _sweep_batch(sql, schedule, decide, rows, report, dry_run)
                    planned_next.extend(planned)
                finally:
                    sql.close()
            report.examined += len(rows)
            if progress is not None:
                progress(report.examined, max(total, report.examined))
    report.next_due = _next_due(vault, now, planned_next if dry_run else [])
    report.seconds = time.perf_counter() - started
    log.info(
        "retention sweep",
        extra={
            "dry_run": dry_run,
            "examined": report.examined,
            "changed": report.shipments_changed,
            "values_removed": report.values_removed,
            "held": len(report.held),
            "recheck_all": everything,
        },
    )
    return report


@contextmanager
def _sqlite_cache(connection: Connection) -> Iterator[None]:
    """On SQLite, a page cache large enough that a batch's changed pages stay in memory
    until its commit (the default 2 MiB spills them to the WAL half way and writes them
    again); the connection's own size is restored afterwards."""
    if connection.dialect.name != "sqlite":
        yield
        return
    before = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    connection.exec_driver_sql(f"PRAGMA cache_size = {SWEEP_CACHE_KIB}")
    connection.commit()
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size = {int(before)}")
        connection.commit()


def _due_batch(
    sql: _Sql, now: datetime, after: str, limit: int, *, lock: bool, everything: bool = False
) -> list[Any]:
    columns = "id, status, status_at, created_at, shredded, retention_next_at"
    due = _EVERY if everything else _DUE
    query = f"SELECT {columns} FROM shipments WHERE id > ? AND {due} ORDER BY id LIMIT ?"  # noqa: S608
    if lock and not sql.sqlite:
        # Concurrent sweeps (one per serving process) share the work instead of waiting.
        query += " FOR UPDATE SKIP LOCKED"
    return sql.rows(query, [after, sql.time(now), limit])


def _sweep_batch(
    sql: _Sql,
    schedule: Schedule,
    decide: Decider,
    rows: Sequence[Any],
    report: SweepReport,
    dry_run: bool,
) -> list[datetime]:
    """Decide and (unless `dry_run`) apply one batch; returns the next due times."""
    held = _holds_in_range(sql, rows[0][0], rows[-1][0])
    outcomes: list[tuple[str, str | None, datetime | None, bool]] = []
    groups: dict[frozenset[str], list[str]] = {}
    for shipment_id, status, status_at, created_at, shredded, next_before in rows:
        if shipment_id in held:
            number, refs = held[shipment_id]
            report.held.append(HeldShipment(number, tuple(refs)))
            continue
        due, next_at = decide(status, status_at, created_at)
        outcomes.append((shipment_id, shredded, next_at, next_at is None and next_before is None))
        if due:
            groups.setdefault(due, []).append(shipment_id)
    removed: dict[str, str] = {}
    for names, ids in groups.items():
        _remove(sql, ids, names, every=names >= schedule.personal, dry_run=dry_run, into=removed)
    for names_gone, count in Counter(removed.values()).items():
        for name in names_gone.split(","):
            report.removed[name] += count
    updates: dict[tuple[bool, bool], list[tuple[Any, ...]]] = {}
    for shipment_id, shredded, next_at, stays_null in outcomes:
        gone = removed.get(shipment_id)
        if gone:
            marker: str | None = _shredded(shredded, gone)
        else:
            marker = shredded if shredded is not None else ("" if next_at is None else None)
        row = (marker, shipment_id) if stays_null else (marker, sql.time(next_at), shipment_id)
        updates.setdefault((bool(gone), not stays_null), []).append(row)
    report.shipments_changed += sum(len(p) for (bump, _), p in updates.items() if bump)
    if not dry_run:
        for (bump, sets_next), outcome_rows in updates.items():
            sql.many(_outcome_statement(bump=bump, sets_next=sets_next), outcome_rows)
    return [next_at for _, _, next_at, _ in outcomes if next_at is not None]


def _outcome_statement(*, bump: bool, sets_next: bool) -> str:
    """The UPDATE writing a shipment's outcome: `retention_next_at` is set only where
    it changes (a shipment never looked at whose periods have all ended keeps NULL, and
    its index entry is left alone); the version is bumped where a value was removed."""
    columns = ["shredded = ?"]
    if sets_next:
        columns.append("retention_next_at = ?")
    if bump:
        columns.append("version = version + 1")
    return f"UPDATE shipments SET {', '.join(columns)} WHERE id = ?"  # noqa: S608 (constants)


def _holds_in_range(sql: _Sql, first: str, last: str) -> dict[str, tuple[str, list[str]]]:
    """Shipment id -> (tracking number, case refs) of the active holds on shipments
    whose ids lie between those of a batch's first and last shipment."""
    found: dict[str, tuple[str, list[str]]] = {}
    for shipment_id, number, case_ref in sql.rows(
        "SELECT h.shipment_id, s.tracking_number, h.case_ref FROM legal_holds h "
        "JOIN shipments s ON s.id = h.shipment_id "
        "WHERE h.shipment_id >= ? AND h.shipment_id <= ? AND h.released_at IS NULL "
        "ORDER BY h.id",
        [first, last],
    ):
        found.setdefault(shipment_id, (number, []))[1].append(case_ref)
    return found


def _remove(
    sql: _Sql,
    shipment_ids: Sequence[str],
    names: frozenset[str],
    *,
    every: bool,
    dry_run: bool,
    into: dict[str, str],
) -> None:
    """Delete (unless `dry_run`) the values of `names` stored under these shipments
    (their own and their proofs'), noting in `into` the fields that went from each
    shipment (comma-separated, in no particular order). With `every`, `names` covers
    every field the policy seals: the shipments' whole key ranges go, with no filter on
    the field. Each chunk is read (one row per shipment) and then deleted; both
    statements see the same rows: on SQLite the transaction reads one snapshot and has
    the only writer; on PostgreSQL a writer adding values to a shipment also updates the
    shipment's row, which the sweep holds locked."""
    field_filter = "" if every else f" AND field IN ({_marks(len(names))})"
    extra = [] if every else sorted(names)
    fields = "group_concat(field, ',')" if sql.sqlite else "string_agg(field, ',')"
    for start in range(0, len(shipment_ids), IN_CHUNK):
        chunk = shipment_ids[start : start + IN_CHUNK]
        where = f"WHERE shipment_id IN ({_marks(len(chunk))}){field_filter}"
        params = [*chunk, *extra]
        found = f"SELECT shipment_id, {fields} FROM sealed_fields {where} GROUP BY shipment_id"  # noqa: S608
        into.update(sql.rows(found, params))
        if not dry_run:
            sql.run(f"DELETE FROM sealed_fields {where}", params)  # noqa: S608


@functools.lru_cache(maxsize=1024)
def _shredded(before: str | None, gone: str) -> str:
    """The `shredded` marker after `gone` (field names, comma-separated) were removed."""
    return ",".join(sorted({*(before.split(",") if before else ()), *gone.split(",")}))


def _next_due(vault: Vault, now: datetime, planned: list[datetime]) -> datetime | None:
    with vault.engine.connect() as connection:
        sql = _Sql(connection)
        try:
            found = sql.rows(
                "SELECT min(retention_next_at) FROM shipments WHERE retention_next_at > ?",
                [sql.time(now)],
            )
        finally:
            sql.close()
    stored = _read_time(found[0][0])
    candidates = [*planned, *([stored] if stored is not None else [])]
    return min(candidates) if candidates else None


# --- on a schedule ---------------------------------------------------------------------


class RetentionSchedule(Periodic):
    """Runs a sweep when started and then every `interval` seconds in a thread of its
    own (see `serve`)."""

    name = "retention"
    failure = "retention sweep failed"

    def __init__(self, vault: Vault, interval: float, batch_size: int = 500) -> None:
        super().__init__(interval)
        self.vault = vault
        self.batch_size = batch_size
        self.last_report: SweepReport | None = None

    @property
    def interval(self) -> float:
        return self.period

    def tick(self) -> None:
        self.last_report = sweep(self.vault, batch_size=self.batch_size, stop=self.stopping)
