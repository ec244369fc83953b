"""The staff console over HTTP (TestClient): sign-in, CSRF, cookies, masked views and
justified reveals."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from parcelvault.adapters.db.tables import access_records, reveals, shipments, staff_sessions
from parcelvault.entrypoints.api.app import create_app
from parcelvault.ledger import log as ledger_log
from parcelvault.logging_setup import JsonLines
from parcelvault.services import corrections, staff
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer

PASSWORD = "correct horse battery staple"
START = datetime(2026, 12, 1, 9, 0, 7, tzinfo=UTC)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass(frozen=True)
class Console:
    vault: Vault
    clock: Clock
    number: str
    canaries: Canaries
    seeds: dict[str, str | None]

    def client(self, base_url: str = "http://testserver") -> TestClient:
        return TestClient(create_app(vault=self.vault), base_url=base_url)

    def login_form(self, client: TestClient) -> str:
        page = client.get("/staff/login")
        assert page.status_code == 200
        return csrf_of(page.text)

    def sign_in(
        self, client: TestClient, username: str = "agent", password: str = PASSWORD
    ) -> httpx.Response:
        """Sign in with the current code; the clock moves on a TOTP step first, so each
        sign-in uses a code that was not used before."""
        self.clock.advance(seconds=staff.TOTP_STEP_SECONDS)
        seed = self.seeds[username]
        code = pyotp.TOTP(seed).at(self.clock.now) if seed else ""
        form = {"csrf": self.login_form(client), "username": username, "password": password}
        return client.post("/staff/login", data={**form, "code": code}, follow_redirects=False)

    def shipment_page(self, client: TestClient) -> httpx.Response:
        return client.get(f"/staff/shipments/{self.number}")

    def reveal(self, client: TestClient, **form: Any) -> httpx.Response:
        page = self.shipment_page(client)
        body = {"csrf": csrf_of(page.text), **form}
        return client.post(
            f"/staff/shipments/{self.number}/reveal", data=body, follow_redirects=False
        )


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def cookie_attributes(response: httpx.Response, name: str) -> dict[str, str]:
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie()
        parsed.load(header)
        if name in parsed:
            morsel = parsed[name]
            found = {key: str(value) for key, value in morsel.items() if value}
            found["value"] = morsel.value
            return found
    raise AssertionError(f"no Set-Cookie for {name}")


def rows(vault: Vault, table: Any) -> list[Any]:
    with vault.engine.connect() as connection:
        return list(connection.execute(select(table)).all())


@pytest.fixture
def console(vault: Vault, canaries: Canaries) -> Console:
    from parcelvault.services import tenants

    clock = Clock(START)
    vault.clock = clock
    key = tenants.create_tenant(vault=vault, name="shop-a")
    with TestClient(create_app(vault=vault)) as api:
        created = api.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    assert created.status_code == 201, created.text
    seeds = {}
    for username, role in (("agent", "support"), ("audit", "auditor"), ("boss", "admin")):
        enrolment = staff.create_staff(vault=vault, username=username, role=role, password=PASSWORD)
        seeds[username] = enrolment.totp_secret
    return Console(vault, clock, created.json()["tracking_number"], canaries, seeds)


@pytest.fixture
def agent(console: Console) -> Iterator[TestClient]:
    with console.client() as client:
        assert console.sign_in(client).status_code == 303
        yield client


# --- CSRF -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token", "A" * 43])
def test_a_sign_in_without_the_right_csrf_token_is_refused(
    console: Console, token: str | None
) -> None:
    with console.client() as client:
        console.login_form(client)
        form = {"username": "agent", "password": PASSWORD, "code": "000000"}
        if token is not None:
            form["csrf"] = token
        refused = client.post("/staff/login", data=form, follow_redirects=False)
    assert refused.status_code == 403
    assert rows(console.vault, staff_sessions) == []


def test_a_sign_in_token_without_its_pre_session_cookie_is_refused(console: Console) -> None:
    with console.client() as first:
        token = console.login_form(first)
    with console.client() as other:
        refused = other.post(
            "/staff/login",
            data={"csrf": token, "username": "agent", "password": PASSWORD, "code": ""},
            follow_redirects=False,
        )
    assert refused.status_code == 403


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_reveal_without_the_right_csrf_token_is_refused_and_records_nothing(
    console: Console, agent: TestClient, token: str | None
) -> None:
    before = len(rows(console.vault, access_records))
    form = {"field": "recipient.name", "reason": "customer_request", "reference": "T-1"}
    if token is not None:
        form["csrf"] = token
    refused = agent.post(
        f"/staff/shipments/{console.number}/reveal", data=form, follow_redirects=False
    )
    assert refused.status_code == 403
    assert refused.headers["cache-control"] == "private, no-store"
    assert rows(console.vault, reveals) == []
    assert len(rows(console.vault, access_records)) == before


def test_a_session_token_of_another_session_is_refused(console: Console) -> None:
    with console.client() as one, console.client() as two:
        console.sign_in(one)
        console.sign_in(two)
        foreign = csrf_of(console.shipment_page(one).text)
        refused = two.post(
            f"/staff/shipments/{console.number}/reveal",
            data={
                "csrf": foreign,
                "field": "recipient.name",
                "reason": "customer_request",
                "reference": "T-1",
            },
            follow_redirects=False,
        )
    assert refused.status_code == 403


def test_a_sign_out_without_the_csrf_token_is_refused_and_keeps_the_session(
    console: Console, agent: TestClient
) -> None:
    refused = agent.post("/staff/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert agent.get("/staff", follow_redirects=False).status_code == 200


# --- sign-in, cookies, sessions ----------------------------------------------------


def test_the_session_cookie_is_httponly_strict_limited_to_staff_and_lasts_8_hours(
    console: Console,
) -> None:
    with console.client() as client:
        signed_in = console.sign_in(client)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/staff"
    cookie = cookie_attributes(signed_in, "pv_staff")
    assert cookie["httponly"]
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/staff"
    assert cookie["max-age"] == str(8 * 60 * 60)
    assert "secure" not in cookie
    stored = rows(console.vault, staff_sessions)
    assert [row.id for row in stored] == [staff.session_id_of(cookie["value"])]
    assert len(cookie["value"]) == 43
    assert stored[0].id == hashlib.sha256(base64.urlsafe_b64decode(cookie["value"] + "=")).digest()


def test_over_https_the_staff_cookies_are_secure(console: Console) -> None:
    with console.client(base_url="https://testserver") as client:
        form = client.get("/staff/login")
        assert cookie_attributes(form, "pv_staff_login")["secure"]
        signed_in = console.sign_in(client)
    assert cookie_attributes(signed_in, "pv_staff")["secure"]


def test_the_pre_session_cookie_is_httponly_strict_and_limited_to_staff(
    console: Console,
) -> None:
    with console.client() as client:
        form = client.get("/staff/login")
    cookie = cookie_attributes(form, "pv_staff_login")
    assert cookie["httponly"]
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/staff"


def test_a_wrong_password_wrong_code_and_unknown_user_get_the_same_answer(
    console: Console,
) -> None:
    answers = []
    with console.client() as client:
        for username, password, code in (
            ("agent", "wrong password!", None),
            ("agent", PASSWORD, "000000"),
            ("nobody", PASSWORD, None),
        ):
            console.clock.advance(seconds=staff.TOTP_STEP_SECONDS)
            seed = console.seeds.get(username)
            form = {
                "csrf": console.login_form(client),
                "username": username,
                "password": password,
                "code": code or (pyotp.TOTP(seed).at(console.clock.now) if seed else "123456"),
            }
            answer = client.post("/staff/login", data=form)
            error = re.search(r'data-testid="error">([^<]+)<', answer.text)
            assert error
            answers.append((answer.status_code, error.group(1)))
    assert answers[0][0] == 401
    assert len(set(answers)) == 1
    assert rows(console.vault, staff_sessions) == []


def test_the_sixth_attempt_after_five_failures_is_refused_even_with_the_right_factors(
    console: Console,
) -> None:
    with console.client() as client:
        for _ in range(staff.MAX_FAILED_LOGINS):
            assert console.sign_in(client, password="wrong password!").status_code == 401
        assert console.sign_in(client).status_code == 401
        console.clock.advance(minutes=15)
        assert console.sign_in(client).status_code == 303


def test_an_anonymous_visitor_is_sent_to_sign_in(console: Console) -> None:
    with console.client() as client:
        for path in ("/staff", f"/staff/shipments/{console.number}"):
            answer = client.get(path, follow_redirects=False)
            assert answer.status_code == 303
            assert answer.headers["location"] == "/staff/login"
        posted = client.post(
            f"/staff/shipments/{console.number}/reveal", data={}, follow_redirects=False
        )
        assert posted.status_code == 303
    assert rows(console.vault, reveals) == []


def test_signing_out_ends_the_session_on_the_server(console: Console, agent: TestClient) -> None:
    token = agent.cookies.get("pv_staff")
    assert token
    signed_out = agent.post(
        "/staff/logout", data={"csrf": csrf_of(agent.get("/staff").text)}, follow_redirects=False
    )
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/staff/login"
    with console.client() as replay:
        replay.cookies.set("pv_staff", token, path="/staff")
        assert replay.get("/staff", follow_redirects=False).status_code == 303
    assert rows(console.vault, staff_sessions)[0].ended_at == console.clock.now


def test_a_session_ends_after_8_hours(console: Console, agent: TestClient) -> None:
    console.clock.advance(hours=8, seconds=-1)
    assert agent.get("/staff", follow_redirects=False).status_code == 200
    console.clock.advance(seconds=1)
    answer = agent.get("/staff", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/staff/login"


def test_every_staff_response_is_private_and_not_stored(
    console: Console, agent: TestClient
) -> None:
    answers = [
        agent.get("/staff"),
        agent.get("/staff", params={"number": console.number}, follow_redirects=False),
        agent.get("/staff", params={"number": "!!"}),
        console.shipment_page(agent),
        agent.get("/staff/shipments/NOPE0000000000000"),
        console.reveal(agent, reason="customer_request", reference="T-1"),
        console.reveal(agent, field="recipient.name", reason="customer_request", reference="T-1"),
        agent.post(f"/staff/shipments/{console.number}/reveal", data={}),
    ]
    with console.client() as anonymous:
        answers += [
            anonymous.get("/staff/login"),
            anonymous.get("/staff", follow_redirects=False),
            anonymous.post("/staff/login", data={}),
        ]
        answers.append(console.sign_in(anonymous, password="wrong password!"))
        answers.append(console.sign_in(anonymous))
    statuses = {answer.status_code for answer in answers}
    assert {200, 303, 401, 403, 404, 422} <= statuses
    for answer in answers:
        assert answer.headers["cache-control"] == "private, no-store", answer.request.url
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


# --- masked views and reveals --------------------------------------------------------


def test_support_sees_masked_details_by_default_and_the_view_is_recorded(
    console: Console, agent: TestClient
) -> None:
    page = console.shipment_page(agent)
    assert page.status_code == 200
    first, *_, last = console.canaries.name.split()
    assert f"{first[0]}. {last[0]}." in page.text
    assert console.canaries.found_in(page.text) == []
    assert 'data-testid="reveal-form"' in page.text
    latest = rows(console.vault, access_records)[-1]
    assert (latest.tier, latest.actor_kind, latest.purpose) == ("support", "staff", "support")
    assert latest.reason is None


def test_support_sees_when_the_recipient_corrected_the_address_but_not_what_to(
    console: Console, agent: TestClient
) -> None:
    with console.vault.engine.connect() as connection:
        shipment_id = connection.execute(select(shipments.c.id)).scalar_one()
    moved = Canaries()
    corrections.correct_address(
        vault=console.vault,
        shipment_id=shipment_id,
        changes={"destination.street": moved.street},
        source="recipient_api",
    )
    ledger_log.sequence(console.vault.engine, now=console.vault.clock())

    page = console.shipment_page(agent)

    listed = page.text.split('data-testid="corrections"', 1)[1].split("</ul>", 1)[0]
    assert "Street address" in listed
    assert "ledger entry #" in listed
    assert moved.street not in page.text
    assert console.canaries.found_in(page.text) == []


def test_the_search_form_leads_to_the_shipment(console: Console, agent: TestClient) -> None:
    typed = console.number.lower()
    found = agent.get("/staff", params={"number": typed}, follow_redirects=False)
    assert found.status_code == 303
    assert found.headers["location"] == f"/staff/shipments/{console.number}"


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({"reason": "customer_request", "reference": "T-1"}, "choose at least one field"),
        ({"field": "recipient.name", "reference": "T-1"}, "choose a reason"),
        ({"field": "recipient.name", "reason": "customer_request"}, "ticket or case reference"),
        (
            {"field": "recipient.name", "reason": "customer_request", "reference": "x" * 101},
            "at most 100 characters",
        ),
    ],
)
def test_a_reveal_needs_fields_a_reason_and_a_reference(
    console: Console, agent: TestClient, form: dict[str, str], problem: str
) -> None:
    refused = console.reveal(agent, **form)
    assert refused.status_code == 422
    assert problem in refused.text
    assert rows(console.vault, reveals) == []
    assert console.canaries.found_in(refused.text) == []


def test_a_reveal_shows_the_fields_in_full_for_15_minutes(
    console: Console, agent: TestClient
) -> None:
    done = console.reveal(
        agent,
        field=["recipient.name", "destination.street"],
        reason="delivery_problem",
        reference="TCK-100",
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/staff/shipments/{console.number}"
    console.clock.advance(minutes=14, seconds=59)
    shown = console.shipment_page(agent).text
    assert sorted(console.canaries.found_in(shown)) == ["name", "street"]
    assert 'data-testid="revealed-note"' in shown
    console.clock.advance(seconds=1)
    expired = console.shipment_page(agent).text
    assert console.canaries.found_in(expired) == []


def test_the_reveal_record_holds_the_sealed_reference_and_the_file_no_plaintext(
    console: Console, agent: TestClient
) -> None:
    reference = "ZENDESK-4812-unique-reference"
    assert (
        console.reveal(
            agent, field="recipient.email", reason="legal_request", reference=reference
        ).status_code
        == 303
    )
    (grant,) = rows(console.vault, reveals)
    record = next(r for r in rows(console.vault, access_records) if r.id == grant.access_record_id)
    assert (record.tier, record.actor_kind, record.fields) == (
        "support",
        "staff",
        "recipient.email",
    )
    assert (record.purpose, record.reason) == ("support", "legal_request")
    assert record.reference is not None
    assert reference.encode() not in record.reference
    assert staff.open_reference(vault=console.vault, access_record_id=record.id) == reference
    url = console.vault.settings.database_url
    path = Path(url.removeprefix("sqlite:///"))
    raw = b"".join(f.read_bytes() for f in (path, path.with_name(path.name + "-wal")) if f.exists())
    assert reference.encode() not in raw
    assert reference.lower().encode() not in raw.lower()


def test_an_auditor_sees_no_personal_data_and_cannot_reveal(console: Console) -> None:
    with console.client() as auditor:
        assert console.sign_in(auditor, "audit").status_code == 303
        before = len(rows(console.vault, access_records))
        page = console.shipment_page(auditor)
        assert page.status_code == 200
        assert 'data-testid="reveal-form"' not in page.text
        assert 'data-testid="no-reveal"' in page.text
        first, *_, last = console.canaries.name.split()
        assert f"{first[0]}. {last[0]}." not in page.text
        refused = auditor.post(
            f"/staff/shipments/{console.number}/reveal",
            data={
                "csrf": csrf_of(page.text),
                "field": "recipient.name",
                "reason": "customer_request",
                "reference": "T-1",
            },
        )
    assert refused.status_code == 403
    assert rows(console.vault, reveals) == []
    assert len(rows(console.vault, access_records)) == before


def test_an_admin_may_not_reveal_a_field_kept_from_admins(console: Console) -> None:
    with console.client() as admin:
        assert console.sign_in(admin, "boss").status_code == 303
        refused = console.reveal(
            admin, field="origin.postcode", reason="customer_request", reference="T-1"
        )
    assert refused.status_code == 403
    assert rows(console.vault, reveals) == []


def test_no_personal_value_or_reference_reaches_the_logs(
    console: Console, agent: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reference = "LOGCHECK-0042"
    console.shipment_page(agent)
    console.reveal(agent, field="recipient.name", reason="customer_request", reference="")
    console.reveal(
        agent,
        field=["recipient.name", "recipient.phone"],
        reason="customer_request",
        reference=reference,
    )
    shown = console.shipment_page(agent).text
    assert "name" in console.canaries.found_in(shown)
    with console.client() as other:
        console.sign_in(other, password="wrong password!")
    formatter = JsonLines()
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert "personal fields revealed" in logged
    assert console.canaries.found_in(logged) == []
    assert reference not in logged
    assert PASSWORD not in logged
