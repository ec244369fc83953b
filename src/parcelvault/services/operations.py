"""Write use cases of the API: create one shipment, ingest events all-or-nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from parcelvault.domain.errors import Conflict, FieldProblem, InvalidInput, NotFound
from parcelvault.domain.shipments import NewShipment, ScanEvent
from parcelvault.services import ingest, tracking
from parcelvault.services.tenants import Principal
from parcelvault.services.vault import Vault


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


def create_shipment(
    *, vault: Vault, principal: Principal, shipment: NewShipment, carrier: str | None = None
) -> tracking.TrackingView:
    now = vault.clock()
    try:
        with vault.writing(), vault.engine.begin() as connection:
            prepared = ingest.prepare_shipments(
                connection,
                keystore=vault.keystore,
                keyring=vault.keyring,
                policy=vault.policy,
                tenant_id=principal.tenant_id,
                items=[(0, shipment)],
                now=now,
                carriers={0: carrier} if carrier else None,
            )
            if prepared.already_stored:
                raise Conflict("you already have a shipment with this number")
            _raise_problems(prepared.problems, single=True)
            ingest.write_shipments(connection, prepared)
            number = prepared.tracking_numbers[0]
    except IntegrityError as exc:
        raise Conflict("you already have a shipment with this number") from exc
    return tracking.merchant_view(vault=vault, tenant_id=principal.tenant_id, raw_number=number)


def ingest_events(
    *,
    vault: Vault,
    principal: Principal,
    items: Sequence[tuple[str, ScanEvent]],
    single: bool = False,
) -> IngestResult:
    """Store every event or none (see `ingest_flat_events`)."""
    flat = ingest.flat_events(
        ((index, number, event) for index, (number, event) in enumerate(items)),
        text_stamps=vault.engine.dialect.name == "sqlite",
    )
    return ingest_flat_events(vault=vault, principal=principal, events=flat, single=single)


def ingest_flat_events(
    *,
    vault: Vault,
    principal: Principal,
    events: Sequence[ingest.FlatEvent],
    single: bool = False,
) -> IngestResult:
    """Store every event or none; `events` are flattened beforehand
    (`ingest.flat_event`, pure), outside this process's write turn. A concurrent
    writer inserting the same event ids can only make rows already present; the insert
    skips them and the result counts them as duplicates on a retry."""
    for attempt in range(2):
        try:
            return _ingest_once(vault, principal, events, single)
        except IntegrityError:
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def _ingest_once(
    vault: Vault, principal: Principal, events: Sequence[ingest.FlatEvent], single: bool
) -> IngestResult:
    with vault.writing(), vault.engine.begin() as connection:
        prepared = ingest.prepare_flat_events(
            connection,
            keystore=vault.keystore,
            keyring=vault.keyring,
            policy=vault.policy,
            tenant_id=principal.tenant_id,
            items=events,
            now=vault.clock(),
        )
        if single and any(p.problem.loc == ("tracking_number",) for p in prepared.problems):
            raise NotFound()
        _raise_problems(prepared.problems, single=single)
        ingest.write_events(connection, prepared)
    return IngestResult(accepted=len(prepared.rows), duplicates=len(prepared.duplicates))


def _raise_problems(problems: Sequence[ingest.Problem], *, single: bool) -> None:
    if not problems:
        return
    if single:
        raise InvalidInput([p.problem for p in problems])
    raise InvalidInput(
        [FieldProblem(("events", p.index, *p.problem.loc), p.problem.message) for p in problems]
    )
