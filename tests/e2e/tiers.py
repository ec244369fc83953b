"""Every surface that shows a shipment, the tier each one reaches, and a world in which
each surface has been visited once, for the authorization matrix.

A *surface* is one endpoint or page as one tier reaches it (`merchant-api`,
`recipient-page`, `support-page`...). `visit_every_surface(vault)` plants two canary
shipments with every personal field: one delivered with a full proof (geo included),
one with the same proof on a failed attempt and on an active courier route (a
delivered parcel has no active stop). It signs staff in with TOTP, requests each
surface and keeps the bodies with the access records each request wrote. What a surface *should*
show is never written down here: `expected_form` reads it from the policy.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select

from parcelvault.adapters.db.tables import access_records, shipments
from parcelvault.entrypoints.api.app import create_app
from parcelvault.privacy import masking
from parcelvault.privacy.policy import Exposure, FieldRule, Mask
from parcelvault.services import staff, tenants
from parcelvault.services.vault import Vault
from tests.conftest import bearer

UNRECORDED_TIERS = frozenset({"public", "recipient"})
"""The data subject and anonymous lookups; every other tier's disclosure is recorded."""

CARRIER = "fast-couriers"
PASSWORD = "correct horse battery staple"
ROUTE_DAY = "2031-03-10"
ROUTE_STARTS = "2031-03-10T08:00:00+01:00"
BEFORE_START = datetime(2031, 3, 10, 6, 0, tzinfo=UTC)
DURING = datetime(2031, 3, 10, 7, 30, tzinfo=UTC)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')

Slot = Callable[[str, str], str | None]
"""(response body, policy field) -> the value the body shows in that field's place."""


# --- where each surface puts a field -----------------------------------------------------


def _leaf(container: dict[str, Any], leaf: str) -> str | None:
    value = container.get(leaf)
    if isinstance(value, list):
        return "\n".join(value)
    return value if value is None else str(value)


def tracking_json_slot(body: str, name: str) -> str | None:
    """A field in a TrackingOut body: `group.leaf` under its group, proof fields under
    the one event that carries a proof."""
    data = json.loads(body)
    group, _, leaf = name.partition(".")
    if group == "proof":
        proofs = [event["proof"] for event in data["events"] if "proof" in event]
        assert len(proofs) <= 1, "the canary shipment has one event with a proof"
        return _leaf(proofs[0], leaf) if proofs else None
    return _leaf(data.get(group, {}), leaf)


def courier_json_slot(body: str, name: str) -> str | None:
    """A field of the one active stop's shipment in a courier route body."""
    data = json.loads(body)
    shown = [stop["shipment"] for stop in data["stops"] if "shipment" in stop]
    assert len(shown) == 1, "the route has one active stop"
    group, _, leaf = name.partition(".")
    return _leaf(shown[0].get(group, {}), leaf)


_TAGS = re.compile(r"<[^>]+>")
_BADGE = re.compile(r'<span class="staff-badge">[^<]*</span>')


def staff_page_slot(body: str, name: str) -> str | None:
    """The `<dd data-field=NAME>` of the staff shipment page, without markup."""
    found = re.findall(rf'<dd data-field="{re.escape(name)}">(.*?)</dd>', body, re.DOTALL)
    assert len(found) <= 1, f"{name} is shown once"
    if not found or "not shown to your role" in found[0]:
        return None
    text = _TAGS.sub("", _BADGE.sub("", found[0].replace("<br>", "\n")))
    return html.unescape(text).strip()


@dataclass(frozen=True)
class Surface:
    name: str
    tier: str
    actor_kind: str
    """The actor kind of the access records this surface writes."""
    slot: Slot | None
    """None for a page that has no per-field markup: only the whole body is searched."""
    on_route: bool = False
    """Shows the shipment on the courier route rather than the delivered one."""

    def __str__(self) -> str:
        return self.name


SURFACES = (
    Surface("public-api", "public", "anyone", tracking_json_slot),
    Surface("public-page", "public", "anyone", None),
    Surface("recipient-api", "recipient", "subject", tracking_json_slot),
    Surface("recipient-page", "recipient", "subject", None),
    Surface("merchant-api", "merchant", "tenant", tracking_json_slot),
    Surface("carrier-api", "carrier", "tenant", tracking_json_slot),
    Surface("courier-api", "courier", "route", courier_json_slot, on_route=True),
    Surface("support-page", "support", "staff", staff_page_slot),
    Surface("auditor-page", "auditor", "staff", staff_page_slot),
    Surface("admin-page", "admin", "staff", staff_page_slot),
)
STAFF_ROLES = ("support", "auditor", "admin")


# --- what the policy says a surface shows -------------------------------------------------


def expected_form(rule: FieldRule, tier: str, value: str) -> str | None:
    """The form of `value` the policy lets `tier` see, or None if it sees nothing."""
    exposure = rule.exposure_for(tier)
    if exposure is Exposure.FULL:
        return value
    if exposure is Exposure.HIDDEN:
        return None
    return masking.apply(rule.mask, value) or None


def can_show(rule: FieldRule, tier: str) -> bool:
    """Whether the policy lets `tier` see some non-empty form of the field."""
    exposure = rule.exposure_for(tier)
    return exposure is Exposure.FULL or (
        exposure is not Exposure.HIDDEN and rule.mask is not Mask.HIDDEN
    )


def raw_forms(name: str, value: str) -> set[str]:
    """Spellings of a raw value whose presence is a leak: the value, its postcode
    without the space, its phone digits, each coordinate, each long word of a name or
    street (a surname alone is a leak)."""
    forms = {value}
    if name.endswith(".postcode"):
        forms.add(value.replace(" ", ""))
    if name.endswith(".phone"):
        forms.add(re.sub(r"\D", "", value))
    if name == "proof.geo":
        forms.update(value.split(","))
    if name in ("recipient.name", "destination.street"):
        forms.update(word for word in value.split() if len(word) >= 6)
    return forms


def distinctive(masked: str | None) -> bool:
    """A masked form unlikely to occur by chance ("Q. X.", "UX47"; not "…23")."""
    return masked is not None and len(masked) >= 4


# --- operator policies -----------------------------------------------------------------------

EXPOSURE_RANK = {
    Exposure.HIDDEN: 0,
    Exposure.GENERALIZED: 1,
    Exposure.MASKED: 1,
    Exposure.FULL: 2,
}


def with_exposure(text: str, name: str, tier: str, exposure: str) -> str:
    """The policy text with one `[fields."NAME".exposure]` entry changed."""
    header = f'[fields."{name}".exposure]'
    start = text.find(header)
    if start < 0:
        raise ValueError(f"the policy has no table {header}")
    end = text.find("\n[", start + len(header))
    end = len(text) if end < 0 else end
    table, count = re.subn(
        rf'(?m)^{re.escape(tier)}\s*=\s*"[a-z]+"\s*$', f'{tier} = "{exposure}"', text[start:end]
    )
    if count != 1:
        raise ValueError(f"{header} has no single entry for {tier}")
    return text[:start] + table + text[end:]


# --- canary shipments ------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryShipment:
    """Unique values for every personal field, keyed by policy field name, in the form
    storage keeps them (street lines joined by newlines, geo as "lat,lon")."""

    values: dict[str, str]

    def body(self) -> dict[str, Any]:
        v = self.values
        return {
            "reference": "order-1001",
            "carrier": CARRIER,
            "origin": {"country": "GB", "city": "London", "postcode": v["origin.postcode"]},
            "destination": {
                "country": "GB",
                "region": "West Yorkshire",
                "city": "Leeds",
                "postcode": v["destination.postcode"],
                "street": v["destination.street"].split("\n"),
                "notes": v["destination.notes"],
            },
            "recipient": {
                "name": v["recipient.name"],
                "email": v["recipient.email"],
                "phone": v["recipient.phone"],
            },
        }

    def event(self, event_id: str, status: str, at: datetime) -> dict[str, Any]:
        v = self.values
        lat, lon = v["proof.geo"].split(",")
        body: dict[str, Any] = {
            "event_id": event_id,
            "time": at.isoformat(),
            "status": status,
            "location": {"country": "GB", "city": "Leeds", "facility": "LDS2"},
            "proof": {
                "received_by": v["proof.received_by"],
                "signature": v["proof.signature"],
                "photo": v["proof.photo"],
                "geo": {"lat": float(lat), "lon": float(lon)},
            },
        }
        if status == "failed_attempt":
            body["reason"] = "recipient_absent"
        return body


def canary_shipment() -> CanaryShipment:
    """Fresh values. Postcodes start with U, a letter tracking numbers never contain,
    so that a masked postcode found in a body cannot be part of the number."""
    tag = secrets.token_hex(4).upper()
    number = int(tag, 16)
    return CanaryShipment(
        {
            "recipient.name": f"Qyx{tag} Xanth{tag}",
            "recipient.email": f"canary.{tag.lower()}@mail-{tag.lower()}.example",
            "recipient.phone": f"+44 7700 9{number % 100_000:05d}",
            "destination.street": f"{number % 90 + 10} Canary{tag} Road",
            "destination.postcode": f"UX{number % 90 + 10} {number % 7 + 1}ZZ",
            "destination.notes": f"Gate code {tag}, leave it by the shed",
            "origin.postcode": f"UW{number % 80 + 11} {number % 5 + 2}YY",
            "proof.received_by": f"Receiver{tag} Neighbour",
            "proof.signature": f"sig/{tag}-canary.png",
            "proof.photo": f"pod/{tag}-canary.jpg",
            "proof.geo": f"5{number % 10}.{number % 999_983:06d},-1.{number % 999_979:06d}",
        }
    )


# --- visiting every surface ------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Seen:
    """The bodies a surface answered with and the access records those requests wrote."""

    bodies: list[str] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)


@dataclass
class World:
    vault: Vault
    delivered: CanaryShipment
    on_route: CanaryShipment
    shipment_ids: dict[str, str]
    """"delivered" / "on_route" -> shipment id."""
    seen: dict[str, Seen]

    def canaries_for(self, surface: Surface) -> CanaryShipment:
        return self.on_route if surface.on_route else self.delivered

    def shipment_id_for(self, surface: Surface) -> str:
        return self.shipment_ids["on_route" if surface.on_route else "delivered"]


def _records_after(vault: Vault, last_id: int) -> list[Any]:
    with vault.engine.connect() as connection:
        query = select(access_records).where(access_records.c.id > last_id)
        return list(connection.execute(query.order_by(access_records.c.id)).all())


def _last_record_id(vault: Vault) -> int:
    records = _records_after(vault, 0)
    return int(records[-1].id) if records else 0


def _visit(vault: Vault, seen: Seen, request: Callable[[], httpx.Response]) -> None:
    before = _last_record_id(vault)
    response = request()
    assert response.status_code == 200, response.text
    seen.bodies.append(response.text)
    seen.records.extend(_records_after(vault, before))


def _ok(response: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def _sign_in(client: TestClient, clock: Clock, username: str, seed: str | None) -> None:
    clock.now += timedelta(seconds=staff.TOTP_STEP_SECONDS)
    form_page = client.get("/staff/login")
    found = CSRF.search(form_page.text)
    assert found, "no CSRF field on the sign-in form"
    code = pyotp.TOTP(seed).at(clock.now) if seed else ""
    answer = client.post(
        "/staff/login",
        data={"csrf": found.group(1), "username": username, "password": PASSWORD, "code": code},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def visit_every_surface(vault: Vault) -> World:
    clock = Clock(BEFORE_START)
    vault.clock = clock
    shop = tenants.create_tenant(vault=vault, name="shop-a")
    carrier = tenants.create_tenant(
        vault=vault, name=CARRIER, scopes=("events:write", "shipments:read")
    )
    seeds = {
        role: staff.create_staff(
            vault=vault, username=f"{role}-one", role=role, password=PASSWORD
        ).totp_secret
        for role in STAFF_ROLES
    }
    delivered, on_route = canary_shipment(), canary_shipment()
    seen = {surface.name: Seen() for surface in SURFACES}
    app = create_app(vault=vault)
    with TestClient(app) as api:
        numbers = {}
        for key, canaries, status in (
            ("delivered", delivered, "delivered"),
            ("on_route", on_route, "failed_attempt"),
        ):
            created = _ok(api.post("/api/v1/shipments", json=canaries.body(), headers=bearer(shop)))
            numbers[key] = created["tracking_number"]
            event = canaries.event(f"{key}-1", status, clock.now - timedelta(hours=1))
            path = f"/api/v1/shipments/{numbers[key]}/events"
            _ok(api.post(path, json=event, headers=bearer(carrier)))
        route = _ok(
            api.post(
                "/api/v1/routes",
                json={"date": ROUTE_DAY, "starts_at": ROUTE_STARTS, "stops": [numbers["on_route"]]},
                headers=bearer(shop),
            )
        )
        clock.now = DURING
        number = numbers["delivered"]
        track, page = f"/api/v1/track/{number}", f"/t/{number}"
        for _ in range(2):  # a cache miss answered by the route, then the cached fast path
            _visit(vault, seen["public-api"], partial(api.get, track))
        _visit(vault, seen["public-page"], partial(api.get, page))

        verified = api.post(
            f"{track}/verify", json={"postcode": delivered.values["destination.postcode"]}
        )
        assert verified.status_code == 200, verified.text
        api.cookies.clear()
        jar: SimpleCookie = SimpleCookie()
        jar.load(verified.headers["set-cookie"])
        (morsel,) = jar.values()
        cookie = {"Cookie": f"{morsel.key}={morsel.value}"}
        _visit(vault, seen["recipient-api"], partial(api.get, track, headers=cookie))
        _visit(vault, seen["recipient-page"], partial(api.get, page, headers=cookie))

        tenant_path = f"/api/v1/shipments/{number}"
        _visit(vault, seen["merchant-api"], partial(api.get, tenant_path, headers=bearer(shop)))
        _visit(vault, seen["carrier-api"], partial(api.get, tenant_path, headers=bearer(carrier)))
        device, stops_path = bearer(route["token"]), "/api/v1/courier/stops"
        _visit(vault, seen["courier-api"], partial(api.get, stops_path, headers=device))

    for role in STAFF_ROLES:
        with TestClient(app) as console:
            _sign_in(console, clock, f"{role}-one", seeds[role])
            _visit(vault, seen[f"{role}-page"], partial(console.get, f"/staff/shipments/{number}"))

    with vault.engine.connect() as connection:
        ids = {
            key: str(
                connection.execute(
                    select(shipments.c.id).where(shipments.c.tracking_number == value)
                ).scalar_one()
            )
            for key, value in numbers.items()
        }
    return World(vault, delivered, on_route, ids, seen)
