"""Reading shipments: find by number, open what the viewer's tier may see, verify a
recipient by postcode.

Only the personal fields a tier sees in some form are decrypted at all, and every
view is built from the output of `disclose`, never from opened values directly.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import Connection

from parcelvault.adapters.db import store
from parcelvault.adapters.db.store import AnyRow
from parcelvault.crypto import keyed_hash
from parcelvault.crypto.keystore import KeyStore
from parcelvault.crypto.sealing import SealError, associated_data, open_sealed
from parcelvault.domain import tracking_numbers
from parcelvault.domain.errors import Gone, Locked, NotFound
from parcelvault.domain.statuses import LABELS, REASON_LABELS, STAGES, Reason, Status, stage_of
from parcelvault.privacy.access import AccessRecord, Viewer, access_for
from parcelvault.privacy.disclosure import disclose, fields_needed
from parcelvault.privacy.policy import Policy
from parcelvault.services.ingest import event_row_id
from parcelvault.services.vault import Vault
from parcelvault.services.write_turn import read_then_write
from parcelvault.settings import Settings

log = logging.getLogger("parcelvault.tracking")
PUBLIC = Viewer(tier="public", actor_kind="anyone")
RECIPIENT = Viewer(tier="recipient", actor_kind="subject")


class WrongPostcode(Exception):
    def __init__(self, remaining_attempts: int) -> None:
        super().__init__("the postcode does not match")
        self.remaining_attempts = remaining_attempts


@dataclass(frozen=True)
class Place:
    country: str | None
    region: str | None
    city: str | None
    facility: str | None = None


@dataclass(frozen=True)
class TimelineEntry:
    time: datetime
    status: Status
    label: str
    reason: Reason | None
    reason_label: str | None
    description: str | None
    place: Place
    proof: dict[str, str]


@dataclass(frozen=True)
class TrackingView:
    tier: str
    tracking_number: str
    display_number: str
    tenant: str | None
    status: Status
    status_label: str
    status_at: datetime | None
    stage: int
    stages: tuple[str, ...]
    promised_date: date | None
    origin: Place
    destination: Place
    personal: dict[str, str]
    timeline: tuple[TimelineEntry, ...]
    reference: str | None = None
    service: str | None = None
    erased: bool = False
    removed: dict[str, str] = dataclasses.field(default_factory=dict)
    """Personal fields this tier would see whose values were removed when their
    retention period ended: field name -> its label in the policy."""


def find_shipment(connection: Connection, raw_number: str, tenant: str | None = None) -> AnyRow:
    """The shipment a tracking number denotes. Numbers shared by two tenants resolve
    only with the tenant named; every miss raises the same NotFound."""
    number = tracking_numbers.for_lookup(raw_number)
    if number is None:
        raise NotFound()
    rows = store.shipments_for_tracking(connection, number, tenant)
    if len(rows) != 1:
        raise NotFound()
    return rows[0]


@dataclass(frozen=True)
class Snapshot:
    """Everything a view of one shipment version is built from, as stored: the row
    (with the subject's wrapped key), the events, and the ciphertexts of the
    shipment's and its proofs' sealed fields. Holds no opened personal value."""

    shipment: AnyRow
    events: Sequence[AnyRow]
    sealed: Sequence[AnyRow]
    wrapped_key: bytes | None
    """The subject's wrapped data key from the key store; None once it was destroyed."""

    @functools.cached_property
    def proof_records(self) -> dict[int, str]:
        """Event row id -> the record id its sealed proof fields are stored under."""
        return {e.id: event_row_id(e.tenant_id, e.event_id) for e in self.events if e.has_proof}

    @functools.cached_property
    def timeline(self) -> tuple[TimelineEntry, ...]:
        """The timeline without proofs of delivery: the same for every tier."""
        return tuple(_entry(row, {}) for row in self.events)


def _snapshot_at_version(connection: Connection, vault: Vault, shipment: AnyRow) -> Snapshot:
    """The snapshot of `shipment` at the version its row says, from the cache when that
    version was read recently (every change to what a snapshot holds advances it)."""
    cached: Snapshot | None = vault.snapshots.get("snapshot", shipment.id, shipment.version)
    if cached is not None:
        return cached
    snapshot = load_snapshot(connection, shipment, vault.keystore)
    vault.snapshots.put("snapshot", shipment.id, shipment.version, snapshot)
    return snapshot


def load_snapshot(connection: Connection, shipment: AnyRow, keystore: KeyStore) -> Snapshot:
    event_rows = store.events_of(connection, shipment.id)
    key = keystore.get_one(shipment.subject_id)
    return Snapshot(
        shipment,
        event_rows,
        store.sealed_of_shipments(connection, [shipment.id]),
        key.wrapped if key is not None else None,
    )


def build_view(
    connection: Connection, *, vault: Vault, shipment: AnyRow, viewer: Viewer
) -> TrackingView:
    """The view of one shipment for one viewer. If it discloses personal fields to
    anyone but their subject, the access record is written on `connection`, so the
    caller's transaction holds the read and its record together. The snapshot may come
    from the cache (`_snapshot_at_version`)."""
    snapshot = _snapshot_at_version(connection, vault, shipment)
    view, record = assemble(vault=vault, snapshot=snapshot, viewer=viewer)
    if record is not None:
        store.insert_access(connection, record)
    return view


def assemble(
    *, vault: Vault, snapshot: Snapshot, viewer: Viewer
) -> tuple[TrackingView, AccessRecord | None]:
    """Open only the sealed fields the viewer's tier sees in some form, pass them
    through `disclose`, and build the view from its output; also the access record
    the disclosure calls for (the caller writes it)."""
    policy = vault.policy
    tier = viewer.tier
    shipment = snapshot.shipment
    event_rows = snapshot.events
    shipment_fields = fields_needed(record="shipment", tier=tier, policy=policy)
    event_fields = fields_needed(record="event", tier=tier, policy=policy)
    proof_ids = snapshot.proof_records if event_fields else {}
    opened: dict[str, dict[str, str]] = {}
    erased = snapshot.wrapped_key is None
    if snapshot.wrapped_key is not None and (shipment_fields or proof_ids):
        cipher = vault.keyring.unwrap(snapshot.wrapped_key, shipment.subject_id)
        wanted_records = {shipment.id, *proof_ids.values()}
        wanted_fields = shipment_fields | event_fields
        for row in snapshot.sealed:
            record_id, name, value = row.record_id, row.field, row.value
            if record_id not in wanted_records or name not in wanted_fields:
                continue
            ad = associated_data(shipment.subject_id, record_id, name)
            try:
                opened.setdefault(record_id, {})[name] = open_sealed(cipher, value, ad)
            except SealError:
                log.warning(
                    "sealed value failed to open",
                    extra={"shipment": shipment.id, "record": record_id, "field": name},
                )
    personal = disclose(opened.get(shipment.id, {}), record="shipment", tier=tier, policy=policy)
    no_proof: dict[str, str] = {}
    proofs = {
        row.id: disclose(
            opened.get(proof_ids[row.id], {}), record="event", tier=tier, policy=policy
        )
        if row.id in proof_ids
        else no_proof
        for row in event_rows
    }
    timeline = tuple(
        dataclasses.replace(entry, proof=proofs[row.id]) if proofs[row.id] else entry
        for row, entry in zip(event_rows, snapshot.timeline, strict=True)
    )
    record = access_for(
        viewer,
        shipment_id=shipment.id,
        subject_id=shipment.subject_id,
        shown=[*personal, *(name for shown in proofs.values() for name in shown)],
        now=vault.clock(),
    )
    status = Status(shipment.status)
    show_tenant = tier in ("merchant",)
    removed = _removed_by_retention(
        shipment.shredded, policy=policy, tier=tier, personal=personal, proofs=proofs.values()
    )
    view = TrackingView(
        tier=tier,
        tracking_number=shipment.tracking_number,
        display_number=tracking_numbers.grouped(shipment.tracking_number),
        tenant=shipment.tenant_name if tier in ("merchant", "carrier") else None,
        status=status,
        status_label=LABELS[status],
        status_at=shipment.status_at,
        stage=stage_of(status),
        stages=STAGES,
        promised_date=shipment.promised_date,
        origin=Place(shipment.origin_country, shipment.origin_region, shipment.origin_city),
        destination=Place(shipment.dest_country, shipment.dest_region, shipment.dest_city),
        personal=personal,
        timeline=timeline,
        reference=shipment.reference if show_tenant else None,
        service=shipment.service,
        erased=erased,
        removed=removed,
    )
    return view, record


RETENTION_NOTE = "removed after its retention period"


def _removed_by_retention(
    shredded: str | None,
    *,
    policy: Policy,
    tier: str,
    personal: Mapping[str, str],
    proofs: Iterable[Mapping[str, str]],
) -> dict[str, str]:
    """Fields the retention sweep removed (`shipments.shredded`) that this tier would
    see in some form and that no value stands in for now."""
    if not shredded:
        return {}
    shown = set(personal).union(*proofs)
    visible = policy.visible_fields("shipment", tier) | policy.visible_fields("event", tier)
    return {
        name: policy.fields[name].label
        for name in shredded.split(",")
        if name in visible and name not in shown
    }


@functools.cache
def _zone(offset_minutes: int) -> timezone:
    return timezone(timedelta(minutes=offset_minutes))


def _entry(row: AnyRow, proof: dict[str, str]) -> TimelineEntry:
    status = Status(row.status)
    reason = Reason(row.reason) if row.reason else None
    local = _zone(row.utc_offset_min)
    return TimelineEntry(
        time=row.occurred_at.astimezone(local),
        status=status,
        label=LABELS[status],
        reason=reason,
        reason_label=REASON_LABELS[reason] if reason else None,
        description=row.description,
        place=Place(row.loc_country, row.loc_region, row.loc_city, row.loc_facility),
        proof=proof,
    )


@dataclass(frozen=True)
class Resolved:
    """Which shipment a lookup is about, its version, and who is looking."""

    shipment_id: str
    version: int
    viewer: Viewer


def resolve(
    *,
    vault: Vault,
    raw_number: str,
    cookies: Mapping[str, str],
    tenant: str | None = None,
) -> Resolved:
    """One indexed query. The viewer is the recipient when the request carries a
    valid, unexpired verification cookie for this very shipment, else the public.
    Numbers shared by two tenants resolve only with the tenant named; every miss
    raises the same NotFound."""
    number = tracking_numbers.for_lookup(raw_number)
    if number is None:
        raise NotFound()
    with vault.engine.connect() as connection:
        heads = store.shipment_heads(connection, number, tenant)
    if len(heads) != 1:
        raise NotFound()
    shipment_id, version = heads[0]
    verified = carries_token(vault=vault, cookies=cookies, shipment_id=shipment_id)
    return Resolved(shipment_id, version, RECIPIENT if verified else PUBLIC)


def snapshot_of(*, vault: Vault, resolved: Resolved) -> Snapshot:
    """The shipment's snapshot at the resolved version, from the cache when the same
    version was read recently (ciphertexts only; see `Snapshot`)."""
    cached: Snapshot | None = vault.snapshots.get(
        "snapshot", resolved.shipment_id, resolved.version
    )
    if cached is not None:
        return cached
    with vault.engine.connect() as connection:
        shipment = store.shipment_by_id(connection, resolved.shipment_id)
        if shipment is None:
            raise NotFound()
        return _snapshot_at_version(connection, vault, shipment)


def view_of(*, vault: Vault, resolved: Resolved) -> TrackingView:
    """The view a resolved lookup asks for. Lookups resolve to the public or the
    recipient tier, neither of which calls for an access record."""
    snapshot = snapshot_of(vault=vault, resolved=resolved)
    view, record = assemble(vault=vault, snapshot=snapshot, viewer=resolved.viewer)
    if record is not None:
        with vault.writing(), vault.engine.begin() as connection:
            store.insert_access(connection, record)
    return view


def track(
    *,
    vault: Vault,
    raw_number: str,
    cookies: Mapping[str, str],
    tenant: str | None = None,
) -> TrackingView:
    """The public view, or the recipient view for a verified recipient."""
    resolved = resolve(vault=vault, raw_number=raw_number, cookies=cookies, tenant=tenant)
    return view_of(vault=vault, resolved=resolved)


_DISCLOSURE_ATTEMPTS = 3
Pick = Callable[[Connection], tuple[AnyRow, Viewer]]
"""Chooses the shipment a view is of, and who is looking; raises NotFound."""


def _assembled(vault: Vault, pick: Pick) -> tuple[TrackingView, AccessRecord | None, int]:
    """The view, its access record if it needs one, and the shipment version it was
    built from; read outside the write turn."""
    with vault.engine.connect() as connection:
        shipment, viewer = pick(connection)
        snapshot = _snapshot_at_version(connection, vault, shipment)
    view, record = assemble(vault=vault, snapshot=snapshot, viewer=viewer)
    return view, record, shipment.version


def disclosed_view(*, vault: Vault, pick: Pick) -> TrackingView:
    """The view of the shipment `pick` chooses, built inside the write turn with its
    access record, if it needs one, in the same transaction. For callers off the event
    loop (a shipment just created, the demo); requests use `disclosed_view_async`."""
    with read_then_write(vault) as connection:
        shipment, viewer = pick(connection)
        return build_view(connection, vault=vault, shipment=shipment, viewer=viewer)


async def disclosed_view_async(*, vault: Vault, pick: Pick) -> TrackingView:
    """The view of the shipment `pick` chooses, read and assembled on the event loop
    as a recipient's lookup is, and returned only once its access record, if it needs
    one, is committed for the very version it shows (see `access_writer`). A version
    that moved means reading again; after `_DISCLOSURE_ATTEMPTS` such races the view
    is built inside the write turn."""
    for _ in range(_DISCLOSURE_ATTEMPTS):
        view, record, version = _assembled(vault, pick)
        if record is None or await vault.access_writer.record(record, version):
            return view
    return await asyncio.to_thread(disclosed_view, vault=vault, pick=pick)


def merchant_view(*, vault: Vault, tenant_id: int, raw_number: str) -> TrackingView:
    number = tracking_numbers.for_lookup(raw_number)
    viewer = Viewer(tier="merchant", actor_kind="tenant", actor_id=str(tenant_id))

    def owned(connection: Connection) -> tuple[AnyRow, Viewer]:
        shipment = store.shipment_of_tenant(connection, tenant_id, number) if number else None
        if shipment is None:
            raise NotFound()
        return shipment, viewer

    return disclosed_view(vault=vault, pick=owned)


def handled_by(tenant_id: int, raw_number: str) -> Pick:
    """A tenant's shipment by number: one it owns (tier merchant) or is assigned to
    carry (tier carrier). Its own shipment wins when a carried one shares the number;
    any other shipment, and a number several carried shipments share, is NotFound."""
    number = tracking_numbers.for_lookup(raw_number)
    if number is None:
        raise NotFound()

    def handled(connection: Connection) -> tuple[AnyRow, Viewer]:
        rows = store.shipments_handled_for_tracking(connection, tenant_id, number)
        owned = [row for row in rows if row.tenant_id == tenant_id]
        if owned:
            shipment, tier = owned[0], "merchant"
        elif len(rows) == 1:
            shipment, tier = rows[0], "carrier"
        else:
            raise NotFound()
        return shipment, Viewer(tier=tier, actor_kind="tenant", actor_id=str(tenant_id))

    return handled


# --- recipient verification -------------------------------------------------------


@dataclass(frozen=True)
class RecipientPass:
    shipment_id: str
    expires_at: datetime
    token: str


ERASED_NOTHING_TO_VERIFY = "the recipient's details of this shipment were erased; nothing to verify"


def verify_postcode(
    *, vault: Vault, raw_number: str, postcode: str, tenant: str | None = None
) -> RecipientPass:
    """Compare a postcode with the shipment's (keyed hash, constant time).

    After `verify_max_failures` wrong postcodes within `verify_window_seconds` the
    shipment's verification is locked until the oldest of them leaves the window; the
    lock is kept in the database, so every API process enforces it. The failures are
    counted and the attempt recorded in one transaction that holds the write lock
    (SQLite) or the shipment's row (PostgreSQL) from the count on, so attempts sent at
    the same moment are judged one after the other: never more than the limit compared.
    """
    settings = vault.settings
    now = vault.clock()
    with read_then_write(vault) as connection:
        shipment = find_shipment(connection, raw_number, tenant)
        store.lock_shipment(connection, shipment.id)
        if shipment.postcode_digest == keyed_hash.ERASED_DIGEST:
            raise Gone(ERASED_NOTHING_TO_VERIFY)
        failures = _recent_failures(connection, shipment.id, settings, now)
        locked_for = _locked_for(failures, settings, now)
        if locked_for is not None:
            raise Locked(locked_for)
        candidate = keyed_hash.postcode_digest(
            vault.keyring.lookup_key, record_id=shipment.id, postcode=postcode
        )
        if not keyed_hash.digests_match(shipment.postcode_digest, candidate):
            store.record_failure(connection, shipment.id, now)
            failures.append(now)
            locked_for = _locked_for(failures, settings, now)
            connection.commit()
            if locked_for is not None:
                raise Locked(locked_for)
            raise WrongPostcode(settings.verify_max_failures - len(failures))
    expires = now + timedelta(seconds=settings.recipient_session_seconds)
    return RecipientPass(
        shipment_id=shipment.id,
        expires_at=expires,
        token=issue_token(vault.keyring.session_key, shipment.id, expires),
    )


@dataclass(frozen=True)
class VerificationState:
    """Where a shipment's postcode check stands, read without trying a postcode (the
    tracking page shows it after redirecting from a failed attempt, so reloading the
    page never counts as another attempt)."""

    erased: bool
    recent_failures: int
    remaining_attempts: int
    retry_after_seconds: int | None
    """Set while verification is locked."""


def verification_state(
    *, vault: Vault, raw_number: str, tenant: str | None = None
) -> VerificationState:
    settings = vault.settings
    now = vault.clock()
    with vault.engine.connect() as connection:
        shipment = find_shipment(connection, raw_number, tenant)
        failures = _recent_failures(connection, shipment.id, settings, now)
    return VerificationState(
        erased=shipment.postcode_digest == keyed_hash.ERASED_DIGEST,
        recent_failures=len(failures),
        remaining_attempts=max(0, settings.verify_max_failures - len(failures)),
        retry_after_seconds=_locked_for(failures, settings, now),
    )


def _recent_failures(
    connection: Connection, shipment_id: str, settings: Settings, now: datetime
) -> list[datetime]:
    window = timedelta(seconds=settings.verify_window_seconds)
    return store.recent_failures(connection, shipment_id, now - window)


def _locked_for(failures: list[datetime], settings: Settings, now: datetime) -> int | None:
    """Seconds until verification unlocks (the oldest of the last `verify_max_failures`
    wrong postcodes leaves the window); None while it is not locked."""
    limit = settings.verify_max_failures
    if len(failures) < limit:
        return None
    unlock_at = failures[-limit] + timedelta(seconds=settings.verify_window_seconds)
    return max(1, int((unlock_at - now).total_seconds()) + 1)


PROVEN_RECIPIENT = "recipient"
REFUSED_ATTEMPT = "refused"
"""What a token vouches for: that its holder proved the postcode (recipient), or that
its holder's own postcode attempt was just refused (the page after the refusal shows
where the check stands only to them)."""


def _token_mac(key: bytes, purpose: str, shipment_id: str, expires: int) -> str:
    mac = hmac.new(key, f"{purpose}\x1f{shipment_id}\x1f{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def issue_token(
    key: bytes, shipment_id: str, expires_at: datetime, purpose: str = PROVEN_RECIPIENT
) -> str:
    expires = int(expires_at.timestamp())
    return f"{shipment_id}.{expires}.{_token_mac(key, purpose, shipment_id, expires)}"


def read_token(
    key: bytes, token: str, now: datetime, purpose: str = PROVEN_RECIPIENT
) -> str | None:
    """The shipment id a valid, unexpired token of this purpose vouches for; None for
    anything else."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    shipment_id, expires_text, mac = parts
    expected = _token_mac(key, purpose, shipment_id, int(expires_text))
    if not hmac.compare_digest(expected, mac):
        return None
    if int(expires_text) <= now.timestamp():
        return None
    return shipment_id


def refusal_token(*, vault: Vault, shipment_id: str) -> str:
    """A token for the client whose postcode attempt was just refused, valid while its
    attempt counts (`verify_window_seconds`)."""
    expires = vault.clock() + timedelta(seconds=vault.settings.verify_window_seconds)
    return issue_token(vault.keyring.session_key, shipment_id, expires, REFUSED_ATTEMPT)


def refused_here(*, vault: Vault, resolved: Resolved, cookies: Mapping[str, str]) -> bool:
    """Whether this client's own postcode attempt on this shipment was refused lately."""
    return carries_token(
        vault=vault, cookies=cookies, shipment_id=resolved.shipment_id, purpose=REFUSED_ATTEMPT
    )


def carries_token(
    *,
    vault: Vault,
    cookies: Mapping[str, str],
    shipment_id: str,
    purpose: str = PROVEN_RECIPIENT,
) -> bool:
    """Whether the request's cookie for this shipment and purpose holds a valid,
    unexpired token for this very shipment."""
    token = cookies.get(cookie_name(shipment_id, purpose))
    return token is not None and shipment_id == read_token(
        vault.keyring.session_key, token, vault.clock(), purpose
    )


def cookie_name(shipment_id: str, purpose: str = PROVEN_RECIPIENT) -> str:
    prefix = "pvr" if purpose == PROVEN_RECIPIENT else "pvf"
    return f"{prefix}_{shipment_id[:16]}"
