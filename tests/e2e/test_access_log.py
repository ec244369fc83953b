"""A recipient's access log: who was shown their details (a shop, a courier, a support
agent under a pseudonym), why, and where each access sits in the transparency ledger;
over the API and on the tracking page, for the verified recipient only."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from parcelvault.adapters.db.tables import access_records
from parcelvault.entrypoints.api import schemas
from parcelvault.entrypoints.api.app import create_app
from parcelvault.ledger import log, merkle
from parcelvault.ledger.keys import create_signer, load_signer
from parcelvault.ledger.note import Signer, open_note, parse_checkpoint
from parcelvault.services import staff, tenants
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer

START = datetime(2031, 3, 10, 9, 0, 7, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
USERNAME = "zelda.quartermain"
TICKET = "TCK-77781-unique"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PSEUDONYM = re.compile(r"^support agent #[0-9a-f]{4}$")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@dataclass
class World:
    vault: Vault
    clock: Clock
    api: TestClient
    shop_key: str
    number: str
    canaries: Canaries
    seed: str
    signer: Signer

    def staff_client(self) -> TestClient:
        return TestClient(create_app(vault=self.vault))

    def sign_in(self, client: TestClient) -> None:
        self.clock.advance(seconds=staff.TOTP_STEP_SECONDS)
        form = {
            "csrf": csrf_of(client.get("/staff/login").text),
            "username": USERNAME,
            "password": PASSWORD,
            "code": pyotp.TOTP(self.seed).at(self.clock.now),
        }
        done = client.post("/staff/login", data=form, follow_redirects=False)
        assert done.status_code == 303, done.text

    def reveal(self, client: TestClient, field: str, reason: str) -> None:
        page = client.get(f"/staff/shipments/{self.number}")
        form = {"csrf": csrf_of(page.text), "field": field, "reason": reason, "reference": TICKET}
        done = client.post(
            f"/staff/shipments/{self.number}/reveal", data=form, follow_redirects=False
        )
        assert done.status_code == 303, done.text

    def recipient_cookie(self, number: str | None = None, postcode: str | None = None) -> str:
        verified = self.api.post(
            f"/api/v1/track/{number or self.number}/verify",
            json={"postcode": postcode or self.canaries.postcode},
        )
        assert verified.status_code == 200, verified.text
        self.api.cookies.clear()
        (header,) = verified.headers.get_list("set-cookie")
        return header.split(";", 1)[0]

    def access_log(self, cookie: str | None, number: str | None = None) -> httpx.Response:
        headers = {"Cookie": cookie} if cookie else {}
        return self.api.get(f"/api/v1/track/{number or self.number}/access-log", headers=headers)

    def sequence_and_sign(self) -> None:
        log.sequence(self.vault.engine, now=self.clock())
        log.checkpoint(self.vault.engine, signer=self.signer, now=self.clock())


def create(api: TestClient, key: str, canaries: Canaries) -> str:
    created = api.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    assert created.status_code == 201, created.text
    number: str = created.json()["tracking_number"]
    return number


@pytest.fixture
def world(vault: Vault, key_dir: Path, canaries: Canaries) -> Iterator[World]:
    clock = Clock(START)
    vault.clock = clock
    create_signer(key_dir, "access-log.test/ledger")
    key = tenants.create_tenant(vault=vault, name="shop-a")
    enrolment = staff.create_staff(
        vault=vault, username=USERNAME, role="support", password=PASSWORD
    )
    assert enrolment.totp_secret is not None
    with TestClient(create_app(vault=vault)) as api:
        number = create(api, key, canaries)
        yield World(
            vault, clock, api, key, number, canaries, enrolment.totp_secret, load_signer(key_dir)
        )


@pytest.fixture
def merchant_and_support(world: World) -> World:
    """The shop reads the shipment, then a support agent opens it and reveals the name."""
    world.clock.advance(minutes=5)
    read = world.api.get(f"/api/v1/shipments/{world.number}", headers=bearer(world.shop_key))
    assert read.status_code == 200
    world.clock.advance(minutes=5)
    with world.staff_client() as agent:
        world.sign_in(agent)
        world.reveal(agent, "recipient.name", "delivery_problem")
    return world


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = schemas.AccessLogOut.model_validate(response.json())
    assert body.truncated is False
    accesses: list[dict[str, Any]] = response.json()["accesses"]
    return accesses


# --- the API -------------------------------------------------------------------------------


def test_the_access_log_lists_a_merchant_read_and_a_support_reveal_newest_first(
    merchant_and_support: World,
) -> None:
    world = merchant_and_support
    found = lines(world.access_log(world.recipient_cookie()))
    assert [line["at"] for line in found] == sorted((line["at"] for line in found), reverse=True)
    reveal = next(line for line in found if line["reason"] is not None)
    assert reveal == {
        **reveal,
        "tier": "support",
        "fields": ["recipient.name"],
        "field_labels": ["Your name"],
        "purpose": "support",
        "reason": "delivery_problem",
        "reason_label": staff.REASONS["delivery_problem"],
        "ledger_index": None,
        "entry_url": None,
        "proof_url": None,
    }
    assert PSEUDONYM.match(reveal["actor"]), reveal["actor"]
    merchant_reads = [line for line in found if line["tier"] == "merchant"]
    assert len(merchant_reads) == 2  # the shop's answer to the create, and its read
    assert {line["actor"] for line in merchant_reads} == {"shop-a"}
    assert found.index(reveal) < found.index(merchant_reads[0])
    assert "recipient.email" in merchant_reads[0]["fields"]
    assert "Your e-mail address" in merchant_reads[0]["field_labels"]
    # the agent's masked view before the reveal is an access of its own, same pseudonym
    support = [line for line in found if line["tier"] == "support"]
    assert len(support) >= 2
    assert {line["actor"] for line in support} == {reveal["actor"]}


def test_once_sequenced_every_access_has_a_ledger_entry_with_a_proof_against_the_checkpoint(
    merchant_and_support: World,
) -> None:
    world = merchant_and_support
    cookie = world.recipient_cookie()
    world.sequence_and_sign()
    checkpoint_note = world.api.get("/ledger/checkpoint").text
    text, _ = open_note(checkpoint_note, [world.signer.verifier])
    checkpoint = parse_checkpoint(text)
    found = lines(world.access_log(cookie))
    with world.vault.engine.connect() as connection:
        recorded = connection.execute(
            select(access_records.c.ledger_index).where(access_records.c.ledger_index.is_not(None))
        ).scalars()
        indexes = set(recorded)
    assert {line["ledger_index"] for line in found} == indexes
    for line in found:
        index = line["ledger_index"]
        assert line["entry_url"] == f"/api/v1/ledger/entries/{index}"
        assert line["proof_url"] == (
            f"/api/v1/ledger/proof/inclusion?index={index}&size={checkpoint.size}"
        )
        entry = world.api.get(line["entry_url"], headers={"Cookie": cookie}).json()
        assert entry["kind"] == "access"
        assert entry["body"]["tier"] == line["tier"]
        assert entry["body"]["fields"] == line["fields"]
        proof = world.api.get(line["proof_url"]).json()
        merkle.verify_inclusion(
            b64(entry["leaf_hash"]),
            index,
            checkpoint.size,
            [b64(p) for p in proof["proof"]],
            checkpoint.root,
        )


def test_an_access_sequenced_after_the_checkpoint_has_an_entry_but_no_proof_yet(
    merchant_and_support: World,
) -> None:
    world = merchant_and_support
    cookie = world.recipient_cookie()
    world.sequence_and_sign()
    world.clock.advance(minutes=1)
    world.api.get(f"/api/v1/shipments/{world.number}", headers=bearer(world.shop_key))
    log.sequence(world.vault.engine, now=world.clock())
    newest = lines(world.access_log(cookie))[0]
    assert newest["ledger_index"] is not None
    assert newest["entry_url"] is not None
    assert newest["proof_url"] is None


def test_a_courier_is_named_by_the_route_it_drives(world: World) -> None:
    route = world.api.post(
        "/api/v1/routes",
        json={
            "date": "2031-03-10",
            "starts_at": "2031-03-10T08:00:00+00:00",
            "stops": [world.number],
        },
        headers=bearer(world.shop_key),
    )
    assert route.status_code == 201, route.text
    stops = world.api.get("/api/v1/courier/stops", headers=bearer(route.json()["token"]))
    assert stops.status_code == 200
    found = lines(world.access_log(world.recipient_cookie()))
    (courier,) = [line for line in found if line["tier"] == "courier"]
    assert courier["actor"] == "courier on route of 10 Mar 2031 for shop-a"
    assert "Your street address" in courier["field_labels"]


def test_without_a_valid_recipient_cookie_the_access_log_is_the_404_of_an_unknown_number(
    merchant_and_support: World,
) -> None:
    world = merchant_and_support
    other = Canaries()
    other_number = create(world.api, world.shop_key, other)
    other_cookie = world.recipient_cookie(other_number, other.postcode)
    cookie = world.recipient_cookie()
    name, _, token = cookie.partition("=")
    unknown = world.access_log(None, "G2J53JDWE0F7X90SN")
    assert unknown.status_code == 404
    answers = [
        world.access_log(None),
        world.access_log(other_cookie),
        world.access_log(f"{name}={token[:-2]}xx"),
        world.access_log(f"{name}={token}", number="not-a-number"),
    ]
    world.clock.advance(seconds=world.vault.settings.recipient_session_seconds + 1)
    answers.append(world.access_log(cookie))
    for answer in answers:
        assert answer.status_code == 404
        assert answer.json() == unknown.json()
        assert answer.headers["content-type"] == unknown.headers["content-type"]


def test_the_access_log_names_no_staff_member_and_shows_no_personal_value(
    merchant_and_support: World,
) -> None:
    world = merchant_and_support
    cookie = world.recipient_cookie()
    world.sequence_and_sign()
    response = world.access_log(cookie)
    assert world.canaries.found_in(response.content) == []
    assert USERNAME not in response.text
    assert "zelda" not in response.text.lower()
    assert TICKET not in response.text
    assert response.headers["cache-control"] == "private, no-store"


def test_a_staff_pseudonym_is_stable_and_does_not_depend_on_the_shipment(world: World) -> None:
    other = Canaries()
    other_number = create(world.api, world.shop_key, other)
    with world.staff_client() as agent:
        world.sign_in(agent)
        assert agent.get(f"/staff/shipments/{world.number}").status_code == 200
        assert agent.get(f"/staff/shipments/{other_number}").status_code == 200
    first = lines(world.access_log(world.recipient_cookie()))
    other_cookie = world.recipient_cookie(other_number, other.postcode)
    second = lines(world.access_log(other_cookie, other_number))
    (mine,) = [line["actor"] for line in first if line["tier"] == "support"]
    (theirs,) = [line["actor"] for line in second if line["tier"] == "support"]
    assert PSEUDONYM.match(mine)
    assert mine == theirs


# --- the tracking page -----------------------------------------------------------------------


def section(html: str) -> str:
    start = html.index('data-testid="access-log"')
    return html[start : html.index("</section>", start)]


def test_the_tracking_page_shows_who_has_seen_your_details_to_the_recipient(
    merchant_and_support: World,
) -> None:
    world = merchant_and_support
    cookie = world.recipient_cookie()
    world.sequence_and_sign()
    page = world.api.get(f"/t/{world.number}", headers={"Cookie": cookie})
    assert page.status_code == 200
    assert "Who has seen your details" in page.text
    shown = section(page.text)
    found = lines(world.access_log(cookie))
    reveal = next(line for line in found if line["reason"])
    assert reveal["actor"] in shown
    assert "shop-a" in shown
    assert "Your name" in shown
    assert staff.REASONS["delivery_problem"] in shown
    assert 'href="/transparency"' in shown
    assert f'href="{reveal["proof_url"]}"'.replace("&", "&amp;") in shown
    assert "<script" not in page.text
    assert world.canaries.found_in(shown) == []
    assert USERNAME not in page.text
    assert page.headers["cache-control"] == "private, no-store"


def test_the_tracking_page_says_so_when_nobody_else_has_seen_the_details(
    vault: Vault, canaries: Canaries
) -> None:
    key = tenants.create_tenant(vault=vault, name="shop-a")
    with TestClient(create_app(vault=vault)) as api:
        number = create(api, key, canaries)
        with vault.engine.begin() as connection:
            connection.execute(access_records.delete())
        verified = api.post(f"/api/v1/track/{number}/verify", json={"postcode": canaries.postcode})
        assert verified.status_code == 200, verified.text
        page = api.get(f"/t/{number}")
    assert 'data-testid="no-accesses"' in section(page.text)


def test_the_public_tracking_page_has_no_access_log(merchant_and_support: World) -> None:
    world = merchant_and_support
    page = world.api.get(f"/t/{world.number}")
    assert page.status_code == 200
    assert 'data-testid="access-log"' not in page.text
    assert "Who has seen your details" not in page.text
