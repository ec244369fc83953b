"""Queries and writes on the hot paths, in SQLAlchemy Core.

Every function takes an open Connection; the caller owns the transaction, so a use
case that writes several tables commits all of them or none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, NamedTuple, TypeAlias

from sqlalchemy import (
    BigInteger,
    Connection,
    Date,
    Insert,
    Integer,
    Row,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from parcelvault.adapters.db.tables import (
    UtcDateTime,
    access_records,
    api_keys,
    events,
    route_stops,
    routes,
    sealed_fields,
    shipments,
    subjects,
    tenants,
    verification_failures,
)
from parcelvault.privacy.access import AccessRecord

IN_CHUNK = 500
AnyRow: TypeAlias = Row[*tuple[Any, ...]]


def insert_ignoring_duplicates(connection: Connection, table: Table) -> Insert:
    """INSERT that skips rows whose unique key exists (used where retries must be no-ops)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


_COMPILED: dict[tuple[str, str, bool, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}


def sqlite_datetime(value: datetime) -> str:
    """The text form SQLAlchemy's SQLite dialect stores a DateTime in (naive UTC, with
    microseconds), so rows written either way compare and sort alike. (The first 26
    characters of the aware form are the naive form: cheaper than `replace`.)"""
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def _utc_from_sqlite_text(value: str) -> datetime:
    """What a UtcDateTime column reads back from the text SQLite stores
    (`sqlite_datetime`'s form), parsed in C rather than by SQLAlchemy's pattern: an
    ingest batch reads the status time of up to a thousand shipments."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _sqlite_rows(table: Table, order: tuple[str, ...], rows: list[dict[str, Any]]) -> list[Any]:
    """Rows as tuples in statement order (itemgetter builds them in C), with timestamps
    and dates turned into the text SQLAlchemy would have stored."""
    getter = itemgetter(*order)
    stamps = [i for i, name in enumerate(order) if isinstance(table.c[name].type, UtcDateTime)]
    days = [i for i, name in enumerate(order) if isinstance(table.c[name].type, Date)]
    if len(order) == 1:
        return [(getter(row),) for row in rows]
    if not stamps and not days:
        return [getter(row) for row in rows]
    return _with_text_stamps(map(getter, rows), stamps, days)


def _with_text_stamps(
    rows: Iterable[tuple[Any, ...]], stamps: Sequence[int], days: Sequence[int]
) -> list[tuple[Any, ...]]:
    """Rows with the timestamp cells at `stamps` and date cells at `days` turned into
    the text SQLAlchemy's SQLite dialect stores (a cell holding that text already is
    kept). Most rows of a batch share one timestamp object in a column (the batch's
    `now`): it is turned into text once."""
    converted = []
    last: list[Any] = [None] * len(stamps)
    last_text = [""] * len(stamps)
    for row in rows:
        values = list(row)
        for k, i in enumerate(stamps):
            value = values[i]
            if value is None:
                continue
            if value is not last[k]:
                last[k] = value
                last_text[k] = value if isinstance(value, str) else sqlite_datetime(value)
            values[i] = last_text[k]
        for i in days:
            if values[i] is not None:
                values[i] = values[i].isoformat()
        converted.append(tuple(values))
    return converted


def bulk_insert(
    connection: Connection, table: Table, rows: list[dict[str, Any]], *, skip_duplicates: bool
) -> int:
    """executemany straight to the driver, for the ingest hot path.

    The statement is compiled once per table, column set and dialect; rows go to the
    DBAPI as plain tuples (SQLite) or dicts (PostgreSQL), skipping SQLAlchemy's per-row
    parameter processing, which cost more than the insert itself. The only type that
    needs converting by hand is the UTC timestamp on SQLite. Returns the number of rows
    inserted as the driver counts them (-1 where it does not say).
    """
    if not rows:
        return 0
    sql, order = _compiled_insert(connection, table, tuple(rows[0]), skip_duplicates)
    if connection.dialect.paramstyle == "qmark":
        params: Any = _sqlite_rows(table, order, rows)
    else:
        params = rows
    return int(connection.exec_driver_sql(sql, params).rowcount)


def _compiled_insert(
    connection: Connection, table: Table, keys: tuple[str, ...], skip_duplicates: bool
) -> tuple[str, tuple[str, ...]]:
    dialect = connection.dialect
    cache_key = (table.name, dialect.name, skip_duplicates, keys)
    if cache_key not in _COMPILED:
        statement = (
            insert_ignoring_duplicates(connection, table) if skip_duplicates else table.insert()
        )
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        _COMPILED[cache_key] = (str(compiled), tuple(compiled.positiontup or ()))
    return _COMPILED[cache_key]


def bulk_insert_tuples(
    connection: Connection,
    table: Table,
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    *,
    skip_duplicates: bool,
    text_stamps: bool = False,
) -> int:
    """`bulk_insert` for rows already shaped as tuples in `columns` order: on SQLite
    only the timestamp and date cells are rewritten, in place of building a dict and
    then a tuple per row; with `text_stamps` the timestamps are already the text
    `sqlite_datetime` makes and the rows go to the driver as they are. Returns the
    number of rows inserted as the driver counts them."""
    if not rows:
        return 0
    sql, order = _compiled_insert(connection, table, columns, skip_duplicates)
    if connection.dialect.paramstyle != "qmark":
        params = [dict(zip(columns, row, strict=True)) for row in rows]
        return int(connection.exec_driver_sql(sql, params).rowcount)
    if order != columns:
        position = {name: i for i, name in enumerate(columns)}
        getter = itemgetter(*(position[name] for name in order))
        rows = [getter(row) for row in rows]
        columns = order
    stamps = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, UtcDateTime)]
    days = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, Date)]
    if text_stamps:
        stamps = []
    bound = _with_text_stamps(rows, stamps, days) if stamps or days else rows
    return int(connection.exec_driver_sql(sql, bound).rowcount)


_DRIVER_MANY: dict[tuple[int, str], tuple[str, tuple[str, ...], dict[str, Any], list[int]]] = {}


def driver_executemany(
    connection: Connection, statement: Any, params: list[dict[str, Any]]
) -> None:
    """executemany of a prepared Core UPDATE straight on the driver (no per-row
    processing by SQLAlchemy). On SQLite the parameters bound to UtcDateTime columns
    are turned into the text such a column holds (text given already in that form,
    `sqlite_datetime`'s, is passed as it is); every other parameter is passed as it
    is, so only text, integer and UTC timestamp parameters belong here."""
    if not params:
        return
    dialect = connection.dialect
    key = (id(statement), dialect.name)
    if key not in _DRIVER_MANY:
        compiled = statement.compile(dialect=dialect)
        order = tuple(compiled.positiontup or ())
        stamps = [
            i for i, name in enumerate(order) if isinstance(compiled.binds[name].type, UtcDateTime)
        ]
        _DRIVER_MANY[key] = (str(compiled), order, dict(compiled.params), stamps)
    sql, order, defaults, stamps = _DRIVER_MANY[key]
    if dialect.paramstyle != "qmark":
        connection.exec_driver_sql(sql, [{**defaults, **row} for row in params])
        return
    bound: list[tuple[Any, ...]] = []
    for row in params:
        merged = {**defaults, **row} if defaults else row
        values = [merged[name] for name in order]
        for i in stamps:
            if values[i] is not None and not isinstance(values[i], str):
                values[i] = sqlite_datetime(values[i])
        bound.append(tuple(values))
    connection.exec_driver_sql(sql, bound)


def chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """`values` in slices small enough for one `IN (...)` list on every database."""
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


# --- tenants and keys ------------------------------------------------------------


def tenant_by_name(connection: Connection, name: str) -> AnyRow | None:
    return connection.execute(select(tenants).where(tenants.c.name == name)).first()


def inserted_id(connection: Connection, statement: Any) -> int:
    """Run a single-row INSERT into a table with an integer key; the new row's id."""
    key = connection.execute(statement).inserted_primary_key
    assert key is not None
    return int(key[0])


def insert_tenant(connection: Connection, name: str, now: datetime) -> int:
    return inserted_id(connection, tenants.insert().values(name=name, created_at=now))


def insert_api_key(
    connection: Connection,
    *,
    tenant_id: int,
    key_hash: bytes,
    prefix: str,
    scopes: str,
    now: datetime,
) -> None:
    connection.execute(
        api_keys.insert().values(
            tenant_id=tenant_id, key_hash=key_hash, prefix=prefix, scopes=scopes, created_at=now
        )
    )


_KEY_LOOKUP = (
    select(api_keys.c.tenant_id, api_keys.c.scopes, tenants.c.name)
    .join(tenants, tenants.c.id == api_keys.c.tenant_id)
    .where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None))
)


def api_key_owner(connection: Connection, key_hash: bytes) -> AnyRow | None:
    return connection.execute(_KEY_LOOKUP, {"key_hash": key_hash}).first()


def tenant_ids_by_name(connection: Connection, names: Iterable[str]) -> dict[str, int]:
    wanted = sorted(set(names))
    found: dict[str, int] = {}
    for chunk in chunks(wanted):
        query = select(tenants.c.name, tenants.c.id).where(tenants.c.name.in_(chunk))
        found.update({row.name: row.id for row in connection.execute(query)})
    return found


def list_tenants(connection: Connection) -> Sequence[AnyRow]:
    counts = (
        select(shipments.c.tenant_id, func.count().label("shipments"))
        .group_by(shipments.c.tenant_id)
        .subquery()
    )
    query = (
        select(tenants.c.name, tenants.c.created_at, func.coalesce(counts.c.shipments, 0))
        .outerjoin(counts, counts.c.tenant_id == tenants.c.id)
        .order_by(tenants.c.name)
    )
    return connection.execute(query).all()


# --- subjects -------------------------------------------------------------------


def _upsert_subjects(dialect_insert: Any) -> Insert:
    statement = dialect_insert(subjects).values(
        id=bindparam("id"), key_id=bindparam("key_id"), created_at=bindparam("created_at")
    )
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=[subjects.c.id],
        set_={"key_id": statement.excluded.key_id, "erased_at": null()},
        where=or_(subjects.c.key_id.is_(None), subjects.c.key_id != statement.excluded.key_id),
    )
    return upsert


_UPSERT_SUBJECTS = {
    "sqlite": _upsert_subjects(sqlite.insert),
    "postgresql": _upsert_subjects(postgresql.insert),
}


def upsert_subjects(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert subjects (`id`, `key_id`, `created_at`); a subject already present (one
    whose earlier key was destroyed) takes the new key id and is no longer erased."""
    driver_executemany(connection, _UPSERT_SUBJECTS[connection.dialect.name], rows)


def legacy_wrapped_keys(connection: Connection, limit: int) -> list[AnyRow]:
    """Subjects whose wrapped key is still in the database (databases made before the
    key store existed)."""
    query = (
        select(subjects.c.id, subjects.c.wrapped_key, subjects.c.created_at)
        .where(subjects.c.wrapped_key.is_not(None))
        .limit(limit)
    )
    return list(connection.execute(query))


# --- shipments ------------------------------------------------------------------


def _present(
    connection: Connection, table: Table, column: str, tenant_id: int, values: Iterable[str]
) -> set[str]:
    """Which of `values` the tenant already has in `table.column`, in chunked queries."""
    wanted = sorted(set(values))
    found: set[str] = set()
    if not wanted:
        return found
    # Straight on the driver: SQLAlchemy's compiling of an IN list of new length for
    # every chunk cost more than the indexed lookups themselves.
    # Names come from the table definitions; every value is a bound parameter.
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    name = table.c[column].name
    head = f"SELECT {name} FROM {table.name} WHERE tenant_id = {mark} AND {name} IN ("  # noqa: S608
    cursor = connection.connection.cursor()
    try:
        for chunk in chunks(wanted):
            cursor.execute(head + ", ".join([mark] * len(chunk)) + ")", (tenant_id, *chunk))
            found.update(row[0] for row in cursor.fetchall())
    finally:
        cursor.close()
    return found


def existing_tracking_numbers(
    connection: Connection, tenant_id: int, numbers: Iterable[str]
) -> set[str]:
    return _present(connection, shipments, "tracking_number", tenant_id, numbers)


def tracking_numbers_of_others(
    connection: Connection, tenant_id: int, numbers: Iterable[str]
) -> set[str]:
    wanted = sorted(set(numbers))
    found: set[str] = set()
    for chunk in chunks(wanted):
        query = select(shipments.c.tracking_number).where(
            shipments.c.tenant_id != tenant_id, shipments.c.tracking_number.in_(chunk)
        )
        found.update(connection.execute(query).scalars())
    return found


class AlreadyStored(Exception):
    """An insert that was to add every row found some of them stored already."""


SEALED_COLUMNS = ("shipment_id", "record_id", "field", "subject_id", "value")
"""The order of the cells of a sealed-value row given to `insert_shipments` and
`insert_events`."""


def insert_shipments(
    connection: Connection,
    shipment_rows: list[dict[str, Any]],
    sealed_rows: list[tuple[str, str, str, str, bytes]],
) -> None:
    bulk_insert(connection, shipments, shipment_rows, skip_duplicates=False)
    bulk_insert_tuples(connection, sealed_fields, SEALED_COLUMNS, sealed_rows, skip_duplicates=True)


class HandledShipment(NamedTuple):
    id: str
    tenant_id: int
    tracking_number: str
    subject_id: str
    status: str
    status_at: datetime | None
    status_arrival: int


def shipments_handled_by(
    connection: Connection, tenant_id: int, numbers: Iterable[str]
) -> list[HandledShipment]:
    """Shipments with these numbers that the tenant owns or is assigned to carry.

    Straight on the driver, as `_present` is: an ingest batch names up to a thousand
    numbers, and building, compiling and processing the Core query and its rows cost
    more than the indexed lookups. `status_at` goes through its column type's own
    result processing (on SQLite, the same done by `datetime.fromisoformat`)."""
    wanted = sorted(set(numbers))
    found: list[HandledShipment] = []
    if not wanted:
        return found
    dialect = connection.dialect
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    columns = ", ".join(shipments.c[name].name for name in HandledShipment._fields)
    head = (
        f"SELECT {columns} FROM {shipments.name} "  # noqa: S608 - names from the table
        f"WHERE (tenant_id = {mark} OR carrier_tenant_id = {mark}) AND tracking_number IN ("
    )
    to_time = shipments.c.status_at.type._cached_result_processor(dialect, None)
    if dialect.name == "sqlite":
        to_time = _utc_from_sqlite_text
    make = HandledShipment._make
    cursor = connection.connection.cursor()
    try:
        for chunk in chunks(wanted):
            marks = ", ".join([mark] * len(chunk))
            cursor.execute(f"{head}{marks})", (tenant_id, tenant_id, *chunk))
            for row in cursor.fetchall():
                if to_time is not None and row[5] is not None:
                    row = (*row[:5], to_time(row[5]), row[6])
                found.append(make(row))
    finally:
        cursor.close()
    return found


_SHIPMENT = select(shipments, tenants.c.name.label("tenant_name")).join(
    tenants, tenants.c.id == shipments.c.tenant_id
)
_TRACKED = _SHIPMENT.where(shipments.c.tracking_number == bindparam("tn"))
_BY_NUMBER = _TRACKED.limit(2)
_BY_NUMBER_OF_TENANT_NAMED = _TRACKED.where(tenants.c.name == bindparam("tenant_name"))
_BY_NUMBER_OF_TENANT = _TRACKED.where(shipments.c.tenant_id == bindparam("tenant_id"))


_BY_ID = _SHIPMENT.where(shipments.c.id == bindparam("sid"))
_HEAD = select(shipments.c.id, shipments.c.version).where(
    shipments.c.tracking_number == bindparam("tn")
)
_HEADS = _HEAD.limit(2)
_HEADS_OF_TENANT_NAMED = _HEAD.join(tenants, tenants.c.id == shipments.c.tenant_id).where(
    tenants.c.name == bindparam("tenant_name")
)


_DRIVER_SQL: dict[tuple[int, str], tuple[str, tuple[str, ...], dict[str, Any]]] = {}


def driver_rows(connection: Connection, statement: Any, params: dict[str, Any]) -> list[Any]:
    """Run a prepared Core SELECT straight on the DBAPI cursor and return its rows as
    tuples: for the one query of every public lookup, where SQLAlchemy's result
    machinery costs more than the query. Parameters are plain values (no type
    processing), so only statements over text and integer parameters belong here."""
    dialect = connection.dialect
    key = (id(statement), dialect.name)
    if key not in _DRIVER_SQL:
        compiled = statement.compile(dialect=dialect)
        _DRIVER_SQL[key] = (str(compiled), tuple(compiled.positiontup or ()), compiled.params)
    sql, order, defaults = _DRIVER_SQL[key]
    values = {**defaults, **params}
    bound: Any = tuple(values[name] for name in order) if order else values
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, bound)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def shipment_heads(
    connection: Connection, tracking_number: str, tenant_name: str | None = None
) -> Sequence[AnyRow]:
    """(id, version) of at most two shipments with this number: the one query of a
    public lookup whose view is cached."""
    if tenant_name is not None:
        params = {"tn": tracking_number, "tenant_name": tenant_name}
        return connection.execute(_HEADS_OF_TENANT_NAMED, params).all()
    return driver_rows(connection, _HEADS, {"tn": tracking_number})


def shipment_by_id(connection: Connection, shipment_id: str) -> AnyRow | None:
    return connection.execute(_BY_ID, {"sid": shipment_id}).first()


def lock_shipment(connection: Connection, shipment_id: str) -> None:
    """Lock the shipment's row until the transaction ends (PostgreSQL; on SQLite the
    caller's BEGIN IMMEDIATE holds the whole database already)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            select(shipments.c.id).where(shipments.c.id == shipment_id).with_for_update()
        )


def lock_shipments_of_subject(connection: Connection, subject_id: str) -> None:
    """Lock the subject's shipment rows until the transaction ends (PostgreSQL; on
    SQLite the caller's BEGIN IMMEDIATE holds the whole database already)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            select(shipments.c.id)
            .where(shipments.c.subject_id == subject_id)
            .order_by(shipments.c.id)
            .with_for_update()
        )


def versions_held(connection: Connection, shipment_ids: Iterable[str]) -> dict[str, int]:
    """Shipment id -> version, the rows locked FOR SHARE on PostgreSQL (in id order)
    until the transaction ends, so a change that would advance them waits; SQLite's
    caller holds the write lock already. Shipments that are gone are missing."""
    versions: dict[str, int] = {}
    for chunk in chunks(sorted(set(shipment_ids))):
        query = (
            select(shipments.c.id, shipments.c.version)
            .where(shipments.c.id.in_(chunk))
            .order_by(shipments.c.id)
            .with_for_update(read=True)
        )
        versions.update((row.id, row.version) for row in connection.execute(query))
    return versions


def shipments_for_tracking(
    connection: Connection, tracking_number: str, tenant_name: str | None = None
) -> Sequence[AnyRow]:
    """At most two shipments with this number (two: tenants share it; name the tenant)."""
    if tenant_name is not None:
        params = {"tn": tracking_number, "tenant_name": tenant_name}
        return connection.execute(_BY_NUMBER_OF_TENANT_NAMED, params).all()
    return connection.execute(_BY_NUMBER, {"tn": tracking_number}).all()


def shipment_of_tenant(
    connection: Connection, tenant_id: int, tracking_number: str
) -> AnyRow | None:
    params = {"tn": tracking_number, "tenant_id": tenant_id}
    return connection.execute(_BY_NUMBER_OF_TENANT, params).first()


_BY_NUMBER_HANDLED = _TRACKED.where(
    or_(
        shipments.c.tenant_id == bindparam("tenant_id"),
        shipments.c.carrier_tenant_id == bindparam("tenant_id"),
    )
)


def shipments_handled_for_tracking(
    connection: Connection, tenant_id: int, tracking_number: str
) -> Sequence[AnyRow]:
    """Shipments with this number that the tenant owns or carries, ready for a view."""
    params = {"tn": tracking_number, "tenant_id": tenant_id}
    return connection.execute(_BY_NUMBER_HANDLED, params).all()


_EVENTS_OF = (
    select(events)
    .where(events.c.shipment_id == bindparam("sid"))
    .order_by(events.c.occurred_at.desc(), events.c.arrival.desc())
)


def events_of(connection: Connection, shipment_id: str) -> Sequence[AnyRow]:
    return connection.execute(_EVENTS_OF, {"sid": shipment_id}).all()


_SEALED_OF_SHIPMENTS = select(
    sealed_fields.c.record_id, sealed_fields.c.field, sealed_fields.c.value
).where(sealed_fields.c.shipment_id.in_(bindparam("ids", expanding=True)))


def sealed_of_shipments(connection: Connection, shipment_ids: Sequence[str]) -> Sequence[AnyRow]:
    """Every sealed value of the given shipments, their proofs' included, as (record id,
    field, ciphertext); nothing is opened here."""
    found: list[AnyRow] = []
    for chunk in chunks(shipment_ids):
        found.extend(connection.execute(_SEALED_OF_SHIPMENTS, {"ids": list(chunk)}))
    return found


# --- events ---------------------------------------------------------------------


def existing_event_ids(
    connection: Connection, tenant_id: int, event_ids: Iterable[str]
) -> set[str]:
    return _present(connection, events, "event_id", tenant_id, event_ids)


_LATER = and_(
    bindparam("advance", type_=Integer) == 1,
    or_(
        shipments.c.status_at.is_(None),
        shipments.c.status_at < bindparam("at", type_=UtcDateTime()),
        and_(
            shipments.c.status_at == bindparam("at", type_=UtcDateTime()),
            shipments.c.status_arrival <= bindparam("arrival", type_=BigInteger),
        ),
    ),
)
_TOUCH = (
    update(shipments)
    .where(shipments.c.id == bindparam("sid"))
    .values(
        version=shipments.c.version + 1,
        status=case((_LATER, bindparam("status", type_=String)), else_=shipments.c.status),
        status_at=case((_LATER, bindparam("at", type_=UtcDateTime())), else_=shipments.c.status_at),
        status_arrival=case(
            (_LATER, bindparam("arrival", type_=BigInteger)), else_=shipments.c.status_arrival
        ),
    )
)
"""One UPDATE per shipment a batch touches: it advances the `version` (which invalidates
cached views) and, where the batch has a later event for it (`advance` 1), moves the
current status forward only if that event is later than the one the shipment has. The
condition is in the UPDATE itself, so concurrent writers cannot move a status backwards;
every SET reads the row as it was before the UPDATE."""


EVENT_COLUMNS = (
    "shipment_id",
    "tenant_id",
    "event_id",
    "occurred_at",
    "utc_offset_min",
    "arrival",
    "status",
    "reason",
    "description",
    "loc_country",
    "loc_region",
    "loc_city",
    "loc_facility",
    "has_proof",
)
"""The order of the cells of an event row given to `insert_events`. On SQLite the
`occurred_at` cell is the text `sqlite_datetime` makes; elsewhere a datetime."""


def status_reasons(connection: Connection, shipment_ids: Iterable[str]) -> dict[str, str | None]:
    """The reason of each shipment's latest event (by event time, then arrival: the
    event its current status is from); None for a status without one."""
    found: dict[str, str | None] = {}
    for shipment_id in shipment_ids:
        row = connection.execute(
            select(events.c.reason)
            .where(events.c.shipment_id == shipment_id)
            .order_by(events.c.occurred_at.desc(), events.c.arrival.desc())
            .limit(1)
        ).first()
        found[shipment_id] = row.reason if row is not None else None
    return found


def insert_events(
    connection: Connection,
    event_rows: list[tuple[Any, ...]],
    sealed_rows: list[tuple[str, str, str, str, bytes]],
    status_updates: list[dict[str, Any]],
    *,
    written_with_status: Set[str] = frozenset(),
    all_new: bool = False,
) -> None:
    """Insert events (skipping ids already stored), move each shipment's current
    status forward only if the new event is later than the one it has (the condition is
    in the UPDATE itself, so concurrent writers cannot move a status backwards), and
    advance the `version` of every shipment touched, which invalidates cached views.
    Shipments in `written_with_status` were inserted in this transaction with their
    status and version already set (`ingest.fold_into_new_shipments`): not updated.
    With `all_new` the caller did not look for stored event ids: if the insert skips
    any, AlreadyStored is raised before anything else is written, and the caller rolls
    the transaction back (the status updates were worked out as if every event were
    new, and a replayed event must change nothing)."""
    inserted = bulk_insert_tuples(
        connection, events, EVENT_COLUMNS, event_rows, skip_duplicates=True, text_stamps=True
    )
    if all_new and inserted != len(event_rows):
        raise AlreadyStored(f"{len(event_rows) - inserted} of the events were stored already")
    bulk_insert_tuples(connection, sealed_fields, SEALED_COLUMNS, sealed_rows, skip_duplicates=True)
    # In id order: this takes every row lock the batch needs in one global order, so
    # concurrent batches cannot deadlock on PostgreSQL.
    advances = {row["sid"]: row for row in status_updates}
    idle = {"advance": 0, "status": None, "at": None, "arrival": None}
    driver_executemany(
        connection,
        _TOUCH,
        [
            {"sid": sid, "advance": 1, **advances[sid]} if sid in advances else {"sid": sid, **idle}
            for sid in sorted({row[0] for row in event_rows} | advances.keys())
            if sid not in written_with_status
        ],
    )
    proven = sorted({row[0] for row in event_rows if row[13]} - written_with_status)
    for chunk in chunks(proven):
        # Found by id first, then updated by id: with the conditions in the UPDATE,
        # SQLite's planner walks the whole retention_next_at index (NULL for almost every
        # shipment) instead of looking the ids up, and every batch with proofs cost the
        # size of the table. The rows are locked already (`_TOUCH` on PostgreSQL, the
        # write lock on SQLite), so nothing changes in between.
        done = [
            row.id
            for row in connection.execute(_SHREDDED_OF, {"ids": list(chunk)})
            if row.retention_next_at is None
        ]
        if done:
            connection.execute(_RETENTION_AGAIN, {"ids": done})


RETENTION_DUE_AT_ONCE = datetime(2000, 1, 1, tzinfo=UTC)
_SHREDDED_OF = select(shipments.c.id, shipments.c.retention_next_at).where(
    shipments.c.id.in_(bindparam("ids", expanding=True)), shipments.c.shredded.is_not(None)
)
_RETENTION_AGAIN = (
    update(shipments)
    .where(shipments.c.id.in_(bindparam("ids", expanding=True)))
    .values(retention_next_at=RETENTION_DUE_AT_ONCE)
)
"""A proof of delivery arriving for a shipment that retention had finished with (a late
scan) puts it back on the sweep's list, so the new values get their period too."""


# --- access records ---------------------------------------------------------------


_INSERT_ACCESS = access_records.insert()
"""One statement object, its parameters passed at execution: built with `.values()` per
call, SQLAlchemy constructed, coerced and cache-keyed it anew for every view recorded
(a quarter of a merchant view's time in-process)."""


def insert_access(connection: Connection, record: AccessRecord) -> None:
    insert_accesses(connection, [record])


def insert_accesses(connection: Connection, records: Sequence[AccessRecord]) -> None:
    if not records:
        return
    connection.execute(
        _INSERT_ACCESS,
        [
            {
                "at": record.at,
                "shipment_id": record.shipment_id,
                "subject_id": record.subject_id,
                "tier": record.tier,
                "actor_kind": record.actor_kind,
                "actor_id": record.actor_id,
                "fields": ",".join(record.fields),
                "purpose": record.purpose,
                "reason": record.reason,
                "reference": None,
            }
            for record in records
        ],
    )


def accesses_of_shipment(connection: Connection, shipment_id: str) -> Sequence[AnyRow]:
    query = (
        select(access_records)
        .where(access_records.c.shipment_id == shipment_id)
        .order_by(access_records.c.at.desc(), access_records.c.id.desc())
    )
    return connection.execute(query).all()


# --- courier routes -------------------------------------------------------------


def insert_route(
    connection: Connection, route: dict[str, Any], stop_rows: list[dict[str, Any]]
) -> None:
    connection.execute(routes.insert().values(**route))
    if stop_rows:
        connection.execute(route_stops.insert(), stop_rows)


def route_by_token_hash(connection: Connection, token_hash: bytes) -> AnyRow | None:
    return connection.execute(select(routes).where(routes.c.token_hash == token_hash)).first()


def route_of_tenant(connection: Connection, tenant_id: int, route_id: str) -> AnyRow | None:
    query = select(routes).where(routes.c.id == route_id, routes.c.tenant_id == tenant_id)
    return connection.execute(query).first()


def revoke_route(connection: Connection, route_id: str, now: datetime) -> None:
    connection.execute(
        update(routes)
        .where(routes.c.id == route_id, routes.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


_STOPS_OF_ROUTE = (
    _SHIPMENT.add_columns(route_stops.c.position, route_stops.c.completed_at)
    .join(route_stops, route_stops.c.shipment_id == shipments.c.id)
    .where(route_stops.c.route_id == bindparam("route_id"))
    .order_by(route_stops.c.position)
)


def stops_of_route(connection: Connection, route_id: str) -> Sequence[AnyRow]:
    """The route's stops in order, each with the shipment columns a view is built from."""
    return connection.execute(_STOPS_OF_ROUTE, {"route_id": route_id}).all()


def complete_stop(connection: Connection, route_id: str, shipment_id: str, now: datetime) -> None:
    connection.execute(
        update(route_stops)
        .where(
            route_stops.c.route_id == route_id,
            route_stops.c.shipment_id == shipment_id,
            route_stops.c.completed_at.is_(None),
        )
        .values(completed_at=now)
    )


# --- recipient verification -------------------------------------------------------


def recent_failures(connection: Connection, shipment_id: str, since: datetime) -> list[datetime]:
    query = (
        select(verification_failures.c.at)
        .where(
            verification_failures.c.shipment_id == shipment_id, verification_failures.c.at > since
        )
        .order_by(verification_failures.c.at)
    )
    return list(connection.execute(query).scalars())


def record_failure(connection: Connection, shipment_id: str, at: datetime) -> None:
    connection.execute(verification_failures.insert().values(shipment_id=shipment_id, at=at))
