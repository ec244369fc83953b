"""Ingest pipeline: shipments and scan events in, sealed rows out.

Each batch goes through two steps. `prepare_*` validates every item against the
domain rules and the database (unknown numbers, duplicates), seals every personal
value under its subject's data key and returns ready rows plus a list of problems;
it writes nothing. `write_*` stores the ready rows in the caller's transaction. The
HTTP batch endpoint refuses the whole batch if any item has a problem; the importer
reports the bad lines and writes the rest. Replaying an accepted batch is a no-op:
event ids are unique per tenant and rows are inserted with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeAlias

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection

from parcelvault.adapters.db import store
from parcelvault.adapters.db.store import HandledShipment
from parcelvault.crypto import keyed_hash
from parcelvault.crypto.keyring import Keyring
from parcelvault.crypto.keystore import StoredKey, new_key_id
from parcelvault.crypto.randomness import RandomBlock, RandomBytes
from parcelvault.crypto.sealing import associated_data, seal
from parcelvault.domain import tracking_numbers
from parcelvault.domain.errors import FieldProblem
from parcelvault.domain.shipments import (
    EARLIEST,
    MAX_FUTURE_SKEW,
    EventFields,
    Location,
    NewShipment,
    Proof,
    ScanEvent,
    event_problems,
)
from parcelvault.domain.statuses import STATUSES_WITH_REASON, Status
from parcelvault.privacy.policy import Policy


@dataclass(frozen=True)
class Problem:
    """A problem with item `index` of a batch (or line of a file)."""

    index: int
    problem: FieldProblem


SealedRow: TypeAlias = tuple[str, str, str, str, bytes]
"""A sealed value as stored, its cells in `store.SEALED_COLUMNS` order."""


@dataclass
class PreparedShipments:
    rows: list[dict[str, Any]] = field(default_factory=list)
    sealed: list[SealedRow] = field(default_factory=list)
    subjects: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    already_stored: list[int] = field(default_factory=list)
    tracking_numbers: dict[int, str] = field(default_factory=dict)


@dataclass
class PreparedEvents:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    """Event rows, their cells in `store.EVENT_COLUMNS` order."""
    sealed: list[SealedRow] = field(default_factory=list)
    status_updates: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)


class KeySource(Protocol):
    """Where a batch's data keys come from and go to: the key store, or for a dry run
    `WithoutStoring`."""

    def get(self, subject_ids: Iterable[str]) -> dict[str, StoredKey]: ...

    def add(self, keys: Sequence[StoredKey], *, now: datetime) -> dict[str, StoredKey]: ...


class WithoutStoring:
    """The key store as a dry run sees it: keys are read from it, and a new key is
    handed back as if stored (unless the subject has one, which wins as in `add`), but
    nothing is written: a dry run leaves no key for a person it did not import."""

    def __init__(self, keystore: KeySource) -> None:
        self._keystore = keystore

    def get(self, subject_ids: Iterable[str]) -> dict[str, StoredKey]:
        return self._keystore.get(subject_ids)

    def add(self, keys: Sequence[StoredKey], *, now: datetime) -> dict[str, StoredKey]:
        held = self._keystore.get({key.subject_id for key in keys})
        kept: dict[str, StoredKey] = {}
        for key in keys:
            kept.setdefault(key.subject_id, held.get(key.subject_id, key))
        return kept


def new_subject_key(
    keyring: Keyring, subject_id: str, random_bytes: RandomBytes
) -> tuple[bytes, StoredKey]:
    """A new data key for a subject, and its key-store form (wrapped by the current
    key-encryption key)."""
    data_key = keyring.new_data_key(random_bytes)
    wrapped = keyring.wrap(data_key, subject_id, random_bytes)
    return data_key, StoredKey(subject_id, new_key_id(random_bytes), keyring.kek_id, wrapped)


class SubjectKeys:
    """Data keys of the subjects one batch touches: created when new, unwrapped when
    first needed.

    New keys are stored in the key store (in one transaction per batch) before the
    batch's own transaction commits; if two writers create a key for the same subject
    at once, both seal with the one the key store kept. A key whose batch then fails
    stays unused until that subject's next shipment."""

    def __init__(self, keystore: KeySource, keyring: Keyring, now: datetime) -> None:
        self._keystore = keystore
        self._keyring = keyring
        self._now = now
        self._stored: dict[str, StoredKey] = {}
        self._ciphers: dict[str, AESGCM] = {}
        self.new_rows: list[dict[str, Any]] = []
        self.random_bytes = RandomBlock().take
        """For the batch's new keys, nonces and ids (crypto.randomness)."""

    def load(
        self,
        subject_ids: Sequence[str],
        *,
        create: bool = True,
        offered: Mapping[str, StoredKey] | None = None,
    ) -> None:
        """Find the keys of these subjects; with `create`, store keys for those that
        have none (the `offered` key of a subject if there is one, else a new key) and
        list every subject in `new_rows` (for `store.upsert_subjects`)."""
        missing = sorted({sid for sid in subject_ids if sid not in self._stored})
        if not missing:
            return
        offers = offered or {}
        if create and all(sid in offers for sid in missing):
            # One key-store transaction: the offered keys go in where the subject has
            # none, and every subject's key (offered or earlier) comes back.
            stored = self._keystore.add([offers[sid] for sid in missing], now=self._now)
        else:
            stored = self._keystore.get(missing)
            fresh = [sid for sid in missing if sid not in stored] if create else []
            if fresh:
                self._add_fresh(fresh, offers, stored)
        if create:
            self.new_rows.extend(
                {"id": sid, "key_id": key.key_id, "created_at": self._now}
                for sid, key in stored.items()
            )
        self._stored.update(stored)

    def _add_fresh(
        self, fresh: list[str], offers: Mapping[str, StoredKey], stored: dict[str, StoredKey]
    ) -> None:
        made: list[StoredKey] = []
        raw: dict[str, bytes] = {}
        for sid in fresh:
            key = offers.get(sid)
            if key is None:
                raw[sid], key = new_subject_key(self._keyring, sid, self.random_bytes)
            made.append(key)
        stored.update(self._keystore.add(made, now=self._now))
        ours = {key.subject_id: key.key_id for key in made}
        for sid, data_key in raw.items():
            kept = stored.get(sid)
            if kept is not None and kept.key_id == ours[sid]:
                self._ciphers[sid] = AESGCM(data_key)  # ours: no need to unwrap it

    def key_id(self, subject_id: str) -> str | None:
        key = self._stored.get(subject_id)
        return key.key_id if key else None

    def cipher(self, subject_id: str) -> AESGCM | None:
        """The subject's cipher; None if its key was destroyed (the subject is erased)."""
        cipher = self._ciphers.get(subject_id)
        if cipher is None:
            key = self._stored.get(subject_id)
            if key is None:
                return None
            cipher = self._ciphers[subject_id] = self._keyring.unwrap(key.wrapped, subject_id)
        return cipher


def _seal_all(
    keys: SubjectKeys,
    subject_id: str,
    shipment_id: str,
    record_id: str,
    values: dict[str, str],
    policy: Policy,
) -> list[SealedRow]:
    cipher = keys.cipher(subject_id)
    if cipher is None:
        raise LookupError(f"no data key for subject {subject_id} was loaded")
    return _seal_values(
        cipher, subject_id, shipment_id, record_id, values, policy, keys.random_bytes
    )


def _seal_values(
    cipher: AESGCM,
    subject_id: str,
    shipment_id: str,
    record_id: str,
    values: dict[str, str],
    policy: Policy,
    random_bytes: RandomBytes,
) -> list[SealedRow]:
    """Sealed rows of one record (a shipment, or an event's proof) of a shipment; the
    associated data names the record, `shipment_id` only places the row."""
    rows: list[SealedRow] = []
    for name, value in values.items():
        if not policy.is_personal(name):
            raise ValueError(f"{name} has no policy rule; refusing to store it")
        ad = associated_data(subject_id, record_id, name)
        sealed = seal(cipher, value, ad, random_bytes)
        rows.append((shipment_id, record_id, name, subject_id, sealed))
    return rows


def _tracking_number(shipment: NewShipment) -> tuple[str | None, str | None, bool]:
    """(canonical number, problem, issued by us)."""
    if shipment.tracking_number is None:
        return tracking_numbers.issue(secrets.randbits), None, True
    issued = tracking_numbers.canonical_issued(shipment.tracking_number)
    if issued is not None:
        return issued, None, True
    supplied = tracking_numbers.normalize(shipment.tracking_number)
    if not tracking_numbers.is_valid_supplied(supplied):
        return None, "4-40 letters and digits (spaces and hyphens are ignored)", False
    return supplied, None, False


class Presealed(NamedTuple):
    """A shipment sealed ahead, without the database, under a new key of its subject
    (the importer does this in the process that validates the file). It is used if
    the key store takes `key` for the subject; otherwise the shipment is sealed again
    under the key the subject has."""

    number: str | None
    issued: bool
    number_problem: str | None
    subject_id: str
    key: StoredKey
    record_id: str
    postcode_digest: bytes
    sealed: tuple[tuple[str, bytes], ...]
    """(field, sealed value)."""


def preseal_shipments(
    keyring: Keyring, policy: Policy, shipments: Sequence[NewShipment]
) -> list[Presealed]:
    """Seal each shipment under a new data key of its subject (one key per subject of
    the batch). Pure apart from randomness: needs no database."""
    ciphers: dict[str, tuple[StoredKey, AESGCM]] = {}
    done: list[Presealed] = []
    draw = RandomBlock().take
    for shipment in shipments:
        number, problem, issued = _tracking_number(shipment)
        contact = shipment.recipient
        subject = keyed_hash.subject_id(
            keyring.lookup_key, email=contact.email, phone=contact.phone
        ) or secrets.token_hex(32)
        if subject not in ciphers:
            data_key, key = new_subject_key(keyring, subject, draw)
            ciphers[subject] = (key, AESGCM(data_key))
        key, cipher = ciphers[subject]
        record_id = new_record_id(draw)
        done.append(
            Presealed(
                number,
                issued,
                problem,
                subject,
                key,
                record_id,
                keyed_hash.postcode_digest(
                    keyring.lookup_key, record_id=record_id, postcode=shipment.destination.postcode
                ),
                tuple(
                    (name, value)
                    for _, _, name, _, value in _seal_values(
                        cipher,
                        subject,
                        record_id,
                        record_id,
                        shipment.personal_values(),
                        policy,
                        draw,
                    )
                ),
            )
        )
    return done


def prepare_shipments(
    connection: Connection,
    *,
    keystore: KeySource,
    keyring: Keyring,
    policy: Policy,
    tenant_id: int,
    items: Sequence[tuple[int, NewShipment]],
    now: datetime,
    carriers: Mapping[int, str] | None = None,
    presealed: Mapping[int, Presealed] | None = None,
) -> PreparedShipments:
    """Seal and shape a batch of new shipments.

    A shipment whose number the tenant already has is listed in `already_stored` and
    not prepared again: the API answers 409, the importer counts it so reruns are
    no-ops. A number in parcelvault's own issued format that another tenant holds is a
    problem: issued numbers must stay unique, or public tracking could not find them.
    `carriers` names, by item index, the tenant that will carry the shipment;
    `presealed`, by item index, the shipments `preseal_shipments` sealed ahead.
    """
    prepared = PreparedShipments()
    carrier_ids, bad_carrier = _carrier_ids(connection, tenant_id, carriers or {})
    prepared.problems.extend(bad_carrier)
    rejected = {problem.index for problem in bad_carrier}
    numbered: list[tuple[int, NewShipment, str, bool]] = []
    seen: set[str] = set()
    ahead = presealed or {}
    for index, shipment in items:
        early = ahead.get(index)
        if early is not None:
            number, problem, issued = early.number, early.number_problem, early.issued
        else:
            number, problem, issued = _tracking_number(shipment)
        if number is None:
            prepared.problems.append(
                Problem(index, FieldProblem(("tracking_number",), problem or ""))
            )
        elif number in seen:
            prepared.problems.append(
                Problem(index, FieldProblem(("tracking_number",), "appears twice in this batch"))
            )
        else:
            seen.add(number)
            numbered.append((index, shipment, number, issued))
    taken = store.existing_tracking_numbers(connection, tenant_id, seen)
    issued_form = [n for _, _, n, issued in numbered if issued and n not in taken]
    held_elsewhere = store.tracking_numbers_of_others(connection, tenant_id, issued_form)
    keys = SubjectKeys(keystore, keyring, now)
    pending: list[tuple[int, NewShipment, str, bool, str]] = []
    for index, shipment, number, issued in numbered:
        if index in rejected:
            continue
        if number in taken:
            prepared.already_stored.append(index)
            continue
        if number in held_elsewhere:
            message = "is in parcelvault's issued format and already in use; leave it out"
            prepared.problems.append(Problem(index, FieldProblem(("tracking_number",), message)))
            continue
        early = ahead.get(index)
        if early is not None:
            subject = early.subject_id
        else:
            contact = shipment.recipient
            subject = keyed_hash.subject_id(
                keyring.lookup_key, email=contact.email, phone=contact.phone
            ) or secrets.token_hex(32)
        pending.append((index, shipment, number, issued, subject))
    keys.load(
        [subject for *_, subject in pending],
        offered={early.subject_id: early.key for early in ahead.values()},
    )
    for index, shipment, number, issued, subject in pending:
        early = ahead.get(index)
        if early is not None and early.key.key_id == keys.key_id(subject):
            record_id, digest = early.record_id, early.postcode_digest
            prepared.sealed.extend(
                (record_id, record_id, name, subject, value) for name, value in early.sealed
            )
        else:
            record_id = new_record_id(keys.random_bytes)
            digest = keyed_hash.postcode_digest(
                keyring.lookup_key, record_id=record_id, postcode=shipment.destination.postcode
            )
            prepared.sealed.extend(
                _seal_all(keys, subject, record_id, record_id, shipment.personal_values(), policy)
            )
        prepared.tracking_numbers[index] = number
        prepared.rows.append(
            {
                "id": record_id,
                "tenant_id": tenant_id,
                "tracking_number": number,
                "issued": issued,
                "subject_id": subject,
                "postcode_digest": digest,
                "reference": shipment.reference,
                "service": shipment.service,
                "origin_country": shipment.origin.country,
                "origin_region": shipment.origin.region,
                "origin_city": shipment.origin.city,
                "dest_country": shipment.destination.country,
                "dest_region": shipment.destination.region,
                "dest_city": shipment.destination.city,
                "carrier_tenant_id": carrier_ids.get(index),
                "promised_date": shipment.promised_date,
                "status": Status.PENDING.value,
                "status_at": None,
                "status_arrival": 0,
                "created_at": now,
            }
        )
    prepared.subjects = keys.new_rows
    return prepared


def _carrier_ids(
    connection: Connection, tenant_id: int, carriers: Mapping[int, str]
) -> tuple[dict[int, int], list[Problem]]:
    """The carrier tenant id of each item that names one, and a problem for each
    item whose carrier is unknown or the owner itself."""
    known = store.tenant_ids_by_name(connection, carriers.values())
    resolved: dict[int, int] = {}
    problems: list[Problem] = []
    for index, name in carriers.items():
        carrier_id = known.get(name)
        if carrier_id is None:
            problems.append(Problem(index, FieldProblem(("carrier",), "no tenant has this name")))
        elif carrier_id == tenant_id:
            message = "names your own tenant; leave it out for shipments you deliver yourself"
            problems.append(Problem(index, FieldProblem(("carrier",), message)))
        else:
            resolved[index] = carrier_id
    return resolved, problems


def write_shipments(connection: Connection, prepared: PreparedShipments) -> None:
    store.upsert_subjects(connection, prepared.subjects)
    store.insert_shipments(connection, prepared.rows, prepared.sealed)


def new_record_id(random_bytes: RandomBytes = os.urandom) -> str:
    """32 hex digits, time-ordered (48-bit milliseconds, then 80 random bits), so new
    shipments and their sealed fields append to the end of their indexes instead of
    landing at random places in them."""
    return f"{time.time_ns() // 1_000_000:012x}{random_bytes(10).hex()}"


def event_row_id(tenant_id: int, event_id: str) -> str:
    """The record id that an event's sealed proof fields are stored under, derived from
    the idempotency key so a replay writes onto the same ids."""
    return hashlib.sha256(f"{tenant_id}\x1f{event_id}".encode()).hexdigest()[:32]


_NO_LOCATION = Location()

number_for_lookup = functools.lru_cache(maxsize=1 << 16)(tracking_numbers.for_lookup)
"""`tracking_numbers.for_lookup`, remembered: the same numbers come back batch after
batch, and checking an issued number's check symbol is not free."""

NOT_HANDLED = "no shipment of yours has this number"
SHARED_NUMBER = "is shared by several shipments you carry; cannot tell which one"


def handled_by_number(
    connection: Connection, tenant_id: int, numbers: Sequence[str]
) -> tuple[dict[str, HandledShipment], set[str]]:
    """The shipment each number denotes for a tenant that owns or carries shipments:
    its own first (another tenant cannot take a number away from its owner by naming
    it carrier), else the single shipment it carries with that number. Numbers that
    several carried shipments share, and none owned, come back in the second item."""
    found: dict[str, HandledShipment] = {}
    carried: dict[str, list[HandledShipment]] = {}
    for row in store.shipments_handled_by(connection, tenant_id, numbers):
        if row.tenant_id == tenant_id:
            found[row.tracking_number] = row
        else:
            carried.setdefault(row.tracking_number, []).append(row)
    shared: set[str] = set()
    for number, rows in carried.items():
        if number in found:
            continue
        if len(rows) == 1:
            found[number] = rows[0]
        else:
            shared.add(number)
    return found, shared


FlatEvent: TypeAlias = tuple[
    int,
    str | None,
    str,
    int | None,
    Any,
    int,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    dict[str, str] | None,
    tuple[FieldProblem, ...],
]
"""An event reduced to what `prepare_flat_events` needs, as a plain tuple (cheap to
build, to pickle between processes and to unpack):

(index, number for lookup or None if it cannot be one, event id, UTC microseconds
since the epoch or None without a UTC offset, occurred_at as stored (a datetime, or
on SQLite its text), UTC offset in minutes, status, reason, description, location
country, region, city, facility, personal values of the proof or None, the problems
found without a clock or the database)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_NO_CLOCK = datetime.max.replace(tzinfo=UTC)
"""`event_problems` at this "now" finds every problem but the one that needs a clock."""
_SKEW_US = MAX_FUTURE_SKEW // _MICROSECOND
_EARLIEST_US = (EARLIEST - _EPOCH) // _MICROSECOND
IN_THE_FUTURE = FieldProblem(("time",), "is more than 10 minutes in the future")
NOT_A_NUMBER = FieldProblem(("tracking_number",), "is not a tracking number")


def flat_event(
    index: int, raw_number: str, event: EventFields, proof: Proof | None, *, text_stamps: bool
) -> FlatEvent:
    """`event` with `proof` as a FlatEvent; `text_stamps` on SQLite. Pure: the importer
    runs it in the process that validates the file."""
    occurred_at = event.time
    offset = occurred_at.utcoffset() if occurred_at.tzinfo is not None else None
    location = event.location or _NO_LOCATION
    reason = event.reason
    at_us = utc = None
    if offset is not None:
        # Naive arithmetic: an aware datetime asks its tzinfo for the offset again at
        # every step.
        try:
            utc = occurred_at.replace(tzinfo=None) - offset
        except OverflowError:  # within a day of datetime's range
            at_us = (occurred_at - _EPOCH) // _MICROSECOND
        else:
            at_us = (utc - _NAIVE_EPOCH) // _MICROSECOND
    if (
        at_us is not None
        and at_us >= _EARLIEST_US
        and (reason is None or event.status in STATUSES_WITH_REASON)
    ):
        problems: tuple[FieldProblem, ...] = ()  # what `event_problems` would find
    else:
        problems = tuple(event_problems(event, now=_NO_CLOCK))
    stored_at: Any = occurred_at
    if text_stamps and not problems and utc is not None and at_us is not None:
        # Only a time that can be stored is turned into text (a refused one may not
        # even have a UTC form in datetime's range); `store.sqlite_datetime`'s form.
        stored_at = utc.isoformat(" ", "microseconds")
    return (
        index,
        number_for_lookup(raw_number),
        event.event_id,
        at_us,
        stored_at,
        int(offset.total_seconds() // 60) if offset else 0,
        event.status.value,
        reason.value if reason else None,
        event.description or None,
        location.country,
        location.region,
        location.city,
        location.facility,
        (proof.personal_values() or None) if proof else None,
        problems,
    )


def prepare_events(
    connection: Connection,
    *,
    keystore: KeySource,
    keyring: Keyring,
    policy: Policy,
    tenant_id: int,
    items: Sequence[tuple[int, str, ScanEvent]],
    now: datetime,
) -> PreparedEvents:
    """Check, seal and shape a batch of (index, tracking number, event)."""
    return prepare_flat_events(
        connection,
        keystore=keystore,
        keyring=keyring,
        policy=policy,
        tenant_id=tenant_id,
        items=flat_events(items, text_stamps=connection.dialect.name == "sqlite"),
        now=now,
    )


def flat_events(
    items: Iterable[tuple[int, str, ScanEvent]], *, text_stamps: bool
) -> list[FlatEvent]:
    """(index, tracking number, event) items as FlatEvents; pure."""
    return [
        flat_event(i, raw, event, event.proof, text_stamps=text_stamps) for i, raw, event in items
    ]


def prepare_flat_events(
    connection: Connection,
    *,
    keystore: KeySource,
    keyring: Keyring,
    policy: Policy,
    tenant_id: int,
    items: Sequence[FlatEvent],
    now: datetime,
    unwritten: Mapping[str, HandledShipment] | None = None,
    unchecked_ids: bool = False,
) -> PreparedEvents:
    """Check, seal and shape a batch of flat events (see `flat_event`). `unwritten`:
    shipments of the tenant, by number, that the caller prepared in this transaction
    and writes before the events (`fold_into_new_shipments`). With `unchecked_ids` the
    stored event ids are not looked up (only repeats within the batch are found): the
    caller must write with `all_new`, which refuses the batch if any id was stored."""
    prepared = PreparedEvents()
    candidates: list[FlatEvent] = []
    latest_allowed = (now - _EPOCH) // _MICROSECOND + _SKEW_US
    for item in items:
        index, number, at_us, found = item[0], item[1], item[3], item[14]
        if (at_us is not None and at_us > latest_allowed) or found or number is None:
            problems = list(found)
            if at_us is not None and at_us > latest_allowed:
                # The clock's check comes first, as in `event_problems`, and excludes
                # the other check of the time (a time in the future is after 2000).
                problems = [IN_THE_FUTURE, *(p for p in found if p.loc != ("time",))]
            if number is None:
                problems.append(NOT_A_NUMBER)
            if problems:
                prepared.problems.extend(Problem(index, p) for p in problems)
                continue
        candidates.append(item)
    fresh = unwritten or {}
    shipments, shared = handled_by_number(
        connection,
        tenant_id,
        [item[1] for item in candidates if item[1] is not None and item[1] not in fresh],
    )
    shipments.update(fresh)
    stored = (
        set()
        if unchecked_ids
        else store.existing_event_ids(connection, tenant_id, [item[2] for item in candidates])
    )
    # Only the subjects whose events carry proof need their data keys unwrapped; a
    # subject without a key (erased) gets no personal data stored again.
    keys = SubjectKeys(keystore, keyring, now)
    proof_subjects = {
        shipments[item[1]].subject_id
        for item in candidates
        if item[13] is not None and item[1] in shipments
    }
    if proof_subjects:
        keys.load(sorted(proof_subjects), create=False)
    seen: set[str] = set()
    to_seal: list[tuple[str, str, str, dict[str, str]]] = []
    # Per shipment: (event time in UTC microseconds, arrival, status) of the latest
    # event so far, starting from what is stored. The (time, arrival) pairs are
    # compared as tuples, which is the order `supersedes` defines.
    latest: dict[str, tuple[int, int, str, Any]] = {}
    for sid, row in {s.id: s for s in shipments.values()}.items():
        if row.status_at is not None:
            at = (row.status_at - _EPOCH) // _MICROSECOND
            latest[sid] = (at, row.status_arrival, Status.PENDING.value, row.status_at)
    changed: set[str] = set()
    arrival_base = time.time_ns() // 1000
    add_row = prepared.rows.append
    get_shipment = shipments.get
    for offset, item in enumerate(candidates):
        (index, number, event_id, at_us, occurred_at, offset_min, status, reason) = item[:8]
        shipment = get_shipment(number) if number is not None else None
        if shipment is None:
            message = SHARED_NUMBER if number in shared else NOT_HANDLED
            prepared.problems.append(Problem(index, FieldProblem(("tracking_number",), message)))
            continue
        if event_id in stored or event_id in seen:
            prepared.duplicates.append(index)
            continue
        seen.add(event_id)
        arrival = arrival_base + offset
        personal = item[13]
        if personal and keys.cipher(shipment.subject_id) is None:
            # The recipient was erased: personal data about them is not taken in again.
            personal = None
        shipment_id = shipment.id
        add_row(
            (
                shipment_id,
                tenant_id,
                event_id,
                occurred_at,
                offset_min,
                arrival,
                status,
                reason,
                *item[8:13],
                bool(personal),
            )
        )
        if personal:
            to_seal.append(
                (shipment.subject_id, shipment_id, event_row_id(tenant_id, event_id), personal)
            )
        assert at_us is not None  # events without a UTC offset were refused above
        best = latest.get(shipment_id)
        if best is None or (at_us, arrival) >= best[:2]:
            latest[shipment_id] = (at_us, arrival, status, occurred_at)
            changed.add(shipment_id)
    if to_seal:
        for subject, owner, row_id, personal in to_seal:
            prepared.sealed.extend(_seal_all(keys, subject, owner, row_id, personal, policy))
    # In shipment-id order, as the version bumps are: concurrent batches touching the
    # same shipments then lock them in the same order and cannot deadlock.
    prepared.status_updates = [
        {"sid": sid, "status": status, "at": stored_at, "arrival": arrival}
        for sid, (_, arrival, status, stored_at) in sorted(latest.items())
        if sid in changed
    ]
    return prepared


def unwritten_shipments(prepared: PreparedShipments) -> dict[str, HandledShipment]:
    """The shipments of `prepared` as `prepare_flat_events` finds stored ones."""
    return {
        row["tracking_number"]: HandledShipment(
            row["id"],
            row["tenant_id"],
            row["tracking_number"],
            row["subject_id"],
            row["status"],
            row["status_at"],
            row["status_arrival"],
        )
        for row in prepared.rows
    }


def fold_into_new_shipments(shipments: PreparedShipments, events: PreparedEvents) -> set[str]:
    """Give shipments not yet written the status their events in `events` bring and the
    `version` the events' UPDATE would have given them, so that UPDATE can leave them
    out (`write_events(..., written_with_status=...)`); returns their ids. For a bulk
    import, where most shipments arrive with their events, this saves an UPDATE per
    shipment."""
    rows = {row["id"]: row for row in shipments.rows}
    touched = {row[0] for row in events.rows if row[0] in rows}
    kept = []
    for update in events.status_updates:
        row = rows.get(update["sid"])
        if row is None:
            kept.append(update)
        else:
            row["status"], row["status_at"] = update["status"], update["at"]
            row["status_arrival"] = update["arrival"]
    events.status_updates = kept
    for shipment_id, row in rows.items():
        row["version"] = 1 if shipment_id in touched else 0
    return set(rows)


def write_events(
    connection: Connection,
    prepared: PreparedEvents,
    *,
    written_with_status: Set[str] = frozenset(),
    all_new: bool = False,
) -> None:
    """`all_new`: `prepared` was made with `unchecked_ids` (see `store.insert_events`)."""
    store.insert_events(
        connection,
        prepared.rows,
        prepared.sealed,
        prepared.status_updates,
        written_with_status=written_with_status,
        all_new=all_new,
    )
