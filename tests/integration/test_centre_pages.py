"""The privacy centre's pages over HTTP (TestClient), with a real SMTP server on
loopback: sign-in by code, CSRF, no enumeration, export and erasure."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from parcelvault.adapters.db import migrate
from parcelvault.adapters.db.tables import shipments
from parcelvault.entrypoints.api.app import create_app
from parcelvault.ledger import log as ledger_log
from parcelvault.services import holds, tenants
from parcelvault.services.vault import Vault, build
from parcelvault.settings import Settings
from tests.conftest import Canaries, bearer, shipment_payload
from tests.mailbox import Mailbox, running_mailbox

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with running_mailbox() as box:
        yield box


@pytest.fixture
def centre_vault(database_url: str, key_dir: Path, mailbox: Mailbox) -> Iterator[Vault]:
    settings = Settings(
        database_url=database_url, key_dir=key_dir, public_rate_limit=0, **mailbox.settings()
    )
    vault = build(settings)
    migrate.upgrade(vault.engine)
    yield vault
    vault.engine.dispose()


@pytest.fixture
def web(centre_vault: Vault) -> Iterator[TestClient]:
    with TestClient(create_app(vault=centre_vault), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def key(centre_vault: Vault) -> str:
    return tenants.create_tenant(vault=centre_vault, name="shop-a")


def ship(web: TestClient, key: str, **overrides: Any) -> str:
    created = web.post("/api/v1/shipments", json=shipment_payload(**overrides), headers=bearer(key))
    assert created.status_code == 201, created.text
    number: str = created.json()["tracking_number"]
    return number


def words(page: str) -> str:
    """The page's text as one line, entities decoded."""
    return " ".join(html.unescape(page).split())


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def sign_in(web: TestClient, mailbox: Mailbox, email: str) -> None:
    before = len(mailbox.received)
    form = web.get("/privacy/centre/sign-in")
    sent = web.post(
        "/privacy/centre/sign-in",
        data={"csrf": csrf_of(form.text), "email": email},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    code_page = web.get(sent.headers["location"])
    mail = mailbox.wait_for(before + 1)[-1]
    done = web.post(
        "/privacy/centre/sign-in/code",
        data={"csrf": csrf_of(code_page.text), "code": mail.code()},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/privacy/centre"


def test_the_centre_sends_strangers_to_the_sign_in_page(web: TestClient) -> None:
    response = web.get("/privacy/centre", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/privacy/centre/sign-in"
    page = web.get("/privacy/centre/sign-in")
    assert "cannot send codes by text message" in words(page.text)
    assert page.headers["cache-control"] == "private, no-store"


def test_signing_in_by_code_lists_every_parcel_of_the_person(
    web: TestClient, key: str, mailbox: Mailbox
) -> None:
    first = ship(web, key)
    second = ship(web, key, reference="order-1002")
    ship(web, key, recipient={"name": "Someone Else", "email": "else@example.org"})
    sign_in(web, mailbox, "jane@example.org")
    cookie = next(c for c in web.cookies.jar if c.name == "pv_subject")
    assert cookie.has_nonstandard_attr("HttpOnly")
    page = web.get("/privacy/centre")
    assert page.status_code == 200
    assert "covers every parcel sent to it" in words(page.text)
    found = set(re.findall(r'href="/t/([A-Z0-9]+)"', page.text))
    assert found == {first, second}


def test_the_session_cookie_is_httponly_and_samesite_strict(
    web: TestClient, key: str, mailbox: Mailbox
) -> None:
    ship(web, key)
    form = web.get("/privacy/centre/sign-in")
    sent = web.post(
        "/privacy/centre/sign-in",
        data={"csrf": csrf_of(form.text), "email": "jane@example.org"},
        follow_redirects=False,
    )
    code_page = web.get("/privacy/centre/sign-in/code")
    done = web.post(
        "/privacy/centre/sign-in/code",
        data={"csrf": csrf_of(code_page.text), "code": mailbox.wait_for(1)[0].code()},
        follow_redirects=False,
    )
    for response in (form, sent, done):
        for header in response.headers.get_list("set-cookie"):
            assert "HttpOnly" in header
            assert "SameSite=strict" in header


def test_a_known_and_an_unknown_address_get_the_same_pages(
    web: TestClient, key: str, mailbox: Mailbox
) -> None:
    ship(web, key)
    pages = []
    for email in ("jane@example.org", "nobody@example.org"):
        with TestClient(web.app, base_url="http://127.0.0.1") as fresh:
            form = fresh.get("/privacy/centre/sign-in")
            sent = fresh.post(
                "/privacy/centre/sign-in",
                data={"csrf": csrf_of(form.text), "email": email},
                follow_redirects=False,
            )
            code_page = fresh.get(sent.headers["location"])
            wrong = fresh.post(
                "/privacy/centre/sign-in/code",
                data={"csrf": csrf_of(code_page.text), "code": "000000"},
            )
            pages.append(
                (
                    sent.status_code,
                    sent.headers["location"],
                    CSRF.sub("", code_page.text),
                    wrong.status_code,
                    CSRF.sub("", wrong.text),
                )
            )
    assert pages[0] == pages[1]
    assert pages[0][3] == 401
    assert mailbox.settle() == 1


def test_a_post_without_the_right_csrf_token_is_refused(
    web: TestClient, key: str, mailbox: Mailbox
) -> None:
    ship(web, key)
    refused = web.post("/privacy/centre/sign-in", data={"email": "jane@example.org"})
    assert refused.status_code == 403
    assert mailbox.settle(0.3) == 0
    sign_in(web, mailbox, "jane@example.org")
    for path, data in (
        ("/privacy/centre/export", {"format": "json"}),
        ("/privacy/centre/erase", {}),
        ("/privacy/centre/consents", {"purpose": "analytics", "granted": "yes"}),
        ("/privacy/centre/sign-out", {}),
    ):
        for token in ({}, {"csrf": "0" * 64}):
            response = web.post(path, data={**data, **token}, follow_redirects=False)
            assert response.status_code == 403, path
    assert web.get("/privacy/centre", follow_redirects=False).status_code == 200


def test_a_form_from_another_session_is_refused(
    web: TestClient, key: str, mailbox: Mailbox
) -> None:
    ship(web, key)
    sign_in(web, mailbox, "jane@example.org")
    stale = csrf_of(web.get("/privacy/centre").text)
    web.post("/privacy/centre/sign-out", data={"csrf": stale})
    sign_in(web, mailbox, "jane@example.org")
    response = web.post("/privacy/centre/export", data={"csrf": stale, "format": "json"})
    assert response.status_code == 403


def test_too_many_code_requests_from_one_address_are_refused_with_429(
    database_url: str, key_dir: Path, mailbox: Mailbox
) -> None:
    settings = Settings(
        database_url=database_url,
        key_dir=key_dir,
        public_rate_limit=0,
        codes_per_client_per_hour=2,
        **mailbox.settings(),
    )
    vault = build(settings)
    migrate.upgrade(vault.engine)
    try:
        with TestClient(create_app(vault=vault)) as web:
            token = csrf_of(web.get("/privacy/centre/sign-in").text)
            statuses = [
                web.post(
                    "/privacy/centre/sign-in",
                    data={"csrf": token, "email": f"p{n}@example.org"},
                    follow_redirects=False,
                ).status_code
                for n in range(3)
            ]
            limited = web.post(
                "/privacy/centre/sign-in", data={"csrf": token, "email": "p9@example.org"}
            )
    finally:
        vault.engine.dispose()
    assert statuses == [303, 303, 429]
    assert int(limited.headers["retry-after"]) > 0
    assert "Too many codes" in words(limited.text)


def test_a_phone_number_typed_as_the_address_explains_the_postcode_way(
    web: TestClient,
) -> None:
    token = csrf_of(web.get("/privacy/centre/sign-in").text)
    response = web.post("/privacy/centre/sign-in", data={"csrf": token, "email": "+447700900123"})
    assert response.status_code == 422
    assert "use the postcode on your parcel's tracking page" in words(response.text)


def test_without_a_mail_server_the_sign_in_page_says_so(sqlite_url: str, key_dir: Path) -> None:
    vault = build(Settings(database_url=sqlite_url, key_dir=key_dir, public_rate_limit=0))
    migrate.upgrade(vault.engine)
    with TestClient(create_app(vault=vault)) as web:
        page = web.get("/privacy/centre/sign-in")
    vault.engine.dispose()
    assert "cannot send e-mail" in words(page.text)
    assert 'name="email"' not in page.text


def test_the_postcode_way_in_covers_that_parcel_and_exports_only_it(
    web: TestClient, key: str
) -> None:
    first = ship(web, key)
    ship(web, key, reference="order-2")
    assert (
        web.get(f"/privacy/centre/for/{first}", follow_redirects=False).headers["location"]
        == f"/t/{first}"
    )
    web.post(f"/t/{first}/verify", data={"postcode": "LS1 4AP"})
    entered = web.get(f"/privacy/centre/for/{first}", follow_redirects=False)
    assert entered.headers["location"] == "/privacy/centre"
    page = web.get("/privacy/centre")
    assert "covers that parcel only" in words(page.text)
    assert set(re.findall(r'href="/t/([A-Z0-9]+)"', page.text)) == {first}
    exported = web.post(
        "/privacy/centre/export", data={"csrf": csrf_of(page.text), "format": "json"}
    )
    assert exported.status_code == 200
    assert [s["tracking_number"] for s in exported.json()["shipments"]] == [first]
    refused = web.post("/privacy/centre/erase", data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 403
    assert "code sent to your e-mail" in words(refused.text)


def test_export_downloads_json_and_a_readable_page(
    web: TestClient, key: str, mailbox: Mailbox, canaries: Canaries
) -> None:
    created = web.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    number = created.json()["tracking_number"]
    sign_in(web, mailbox, canaries.email)
    token = csrf_of(web.get("/privacy/centre").text)
    as_json = web.post("/privacy/centre/export", data={"csrf": token, "format": "json"})
    assert as_json.status_code == 200
    assert as_json.headers["content-disposition"].startswith("attachment;")
    data = as_json.json()
    assert data["shipments"][0]["tracking_number"] == number
    assert canaries.street in as_json.text
    as_html = web.post("/privacy/centre/export", data={"csrf": token, "format": "html"})
    assert as_html.headers["content-type"].startswith("text/html")
    assert canaries.name in as_html.text


def test_erasure_shows_a_receipt_and_ends_the_session(
    web: TestClient, key: str, mailbox: Mailbox, canaries: Canaries
) -> None:
    created = web.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    number = created.json()["tracking_number"]
    sign_in(web, mailbox, canaries.email)
    confirm = web.get("/privacy/centre/erase")
    assert confirm.status_code == 200
    assert "cannot be undone" in words(confirm.text)
    erased = web.post(
        "/privacy/centre/erase", data={"csrf": csrf_of(confirm.text)}, follow_redirects=False
    )
    assert erased.status_code == 303
    receipt = web.get(erased.headers["location"])
    assert receipt.status_code == 200
    assert "Your data was erased" in words(receipt.text)
    ledger = re.search(r'data-testid="receipt-ledger">(.*?)</dd>', receipt.text)
    assert ledger is not None
    assert re.search(r">#\d+<|Being added to the ledger", ledger.group(1))
    assert canaries.found_in(receipt.text) == []
    assert web.get("/privacy/centre", follow_redirects=False).headers["location"] == (
        "/privacy/centre/sign-in"
    )
    tracked = web.get(f"/t/{number}")
    assert "erased at their request" in words(tracked.text)
    assert canaries.found_in(tracked.text) == []


def test_a_legal_hold_stops_erasure_with_a_message_naming_it(
    web: TestClient, key: str, mailbox: Mailbox, centre_vault: Vault
) -> None:
    number = ship(web, key)
    holds.place(vault=centre_vault, raw_number=number, case_ref="CLAIM-2041", placed_by="legal")
    sign_in(web, mailbox, "jane@example.org")
    confirm = web.get("/privacy/centre/erase")
    refused = web.post("/privacy/centre/erase", data={"csrf": csrf_of(confirm.text)})
    assert refused.status_code == 409
    assert "CLAIM-2041" in words(refused.text)
    assert "legal hold" in words(refused.text)
    assert web.get("/privacy/centre", follow_redirects=False).status_code == 200


def test_the_json_api_needs_a_code_session(web: TestClient, key: str) -> None:
    number = ship(web, key)
    web.post(f"/t/{number}/verify", data={"postcode": "LS1 4AP"})
    for path in ("/api/v1/me", "/api/v1/me/access-log", "/api/v1/me/export"):
        response = web.get(path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == "application/problem+json"
    assert web.post("/api/v1/me/erasure", json={"confirm": True}).status_code == 401


def test_the_json_api_lists_exports_and_erases(
    web: TestClient, key: str, mailbox: Mailbox, canaries: Canaries
) -> None:
    created = web.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    number = created.json()["tracking_number"]
    web.get(f"/api/v1/shipments/{number}", headers=bearer(key))
    sign_in(web, mailbox, canaries.email)
    mine = web.get("/api/v1/me")
    assert mine.headers["cache-control"] == "private, no-store"
    assert [s["tracking_number"] for s in mine.json()["shipments"]] == [number]
    assert mine.json()["shipments"][0]["address_correctable"] is True
    logs = web.get("/api/v1/me/access-log").json()["shipments"]
    assert logs[0]["tracking_number"] == number
    assert {a["actor"] for a in logs[0]["accesses"]} == {"shop-a"}
    exported = web.get("/api/v1/me/export").json()
    assert exported["shipments"][0]["tracking_number"] == number
    not_confirmed = web.post("/api/v1/me/erasure", json={"confirm": False})
    assert not_confirmed.status_code == 422
    as_form = web.post("/api/v1/me/erasure", data={"confirm": "true"})
    assert as_form.status_code in (415, 422)
    erased = web.post("/api/v1/me/erasure", json={"confirm": True})
    assert erased.status_code == 201
    assert erased.json()["shipments"] == 1
    receipt = web.get(f"/api/v1/me/erasures/{erased.json()['receipt']}")
    assert receipt.json()["receipt"] == erased.json()["receipt"]
    assert web.get("/api/v1/me").status_code == 401


def test_a_postcode_visitor_can_still_reach_the_code_sign_in(web: TestClient, key: str) -> None:
    number = ship(web, key)
    web.post(f"/t/{number}/verify", data={"postcode": "LS1 4AP"})
    web.get(f"/privacy/centre/for/{number}")
    page = web.get("/privacy/centre/sign-in", follow_redirects=False)
    assert page.status_code == 200
    assert 'name="email"' in page.text


def test_the_address_form_shows_the_current_address_and_checks_what_is_typed(
    web: TestClient, key: str, mailbox: Mailbox, canaries: Canaries
) -> None:
    web.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    sign_in(web, mailbox, canaries.email)
    vault: Vault = web.app.state.vault  # type: ignore[attr-defined]
    with vault.engine.connect() as connection:
        shipment_id = connection.execute(select(shipments.c.id)).scalar_one()
    path = f"/privacy/centre/shipments/{shipment_id}/address"
    form = web.get(path)
    assert form.status_code == 200
    assert canaries.street in form.text
    assert canaries.postcode in form.text
    token = csrf_of(form.text)
    unchanged = web.post(
        path,
        data={"csrf": token, "street": canaries.street, "postcode": canaries.postcode},
        follow_redirects=False,
    )
    assert unchanged.headers["location"] == "/privacy/centre?saved=unchanged#shipments"
    bad = web.post(
        path, data={"csrf": token, "street": "", "postcode": "X" * 20, "notes": "n" * 301}
    )
    assert bad.status_code == 422
    text = words(bad.text)
    assert "1 to 4 lines." in text
    assert "2 to 12 characters." in text
    assert "At most 300 characters." in text
    assert web.post(path, data={"street": "1 New Road", "postcode": "LS1 1AA"}).status_code == 403
    stranger = web.get("/privacy/centre/shipments/not-mine/address")
    assert stranger.status_code == 404


def test_a_consent_toggles_on_and_off_and_shows_the_notice_version(
    web: TestClient, key: str, mailbox: Mailbox, centre_vault: Vault
) -> None:
    from parcelvault.services import consent

    ship(web, key)
    sign_in(web, mailbox, "jane@example.org")
    page = web.get("/privacy/centre")
    version = consent.current_notice_version(centre_vault.policy)
    assert f'data-testid="notice-version">{version}<' in page.text
    token = csrf_of(page.text)
    turned_on = web.post(
        "/privacy/centre/consents",
        data={"csrf": token, "purpose": "analytics", "granted": "yes"},
        follow_redirects=False,
    )
    assert turned_on.headers["location"] == "/privacy/centre?saved=consents#consents"
    with centre_vault.engine.connect() as connection:
        from parcelvault.crypto.keyed_hash import subject_id

        subject = subject_id(centre_vault.keyring.lookup_key, email="jane@example.org", phone=None)
        assert subject is not None
        now = consent.current(connection, subject)
    assert now["analytics"].granted
    assert now["analytics"].notice_version == version
    assert now["analytics"].source == "privacy_centre"
    shown = words(web.get("/privacy/centre").text)
    assert f"under notice version {version}" in shown
    web.post(
        "/privacy/centre/consents", data={"csrf": token, "purpose": "analytics", "granted": "no"}
    )
    with centre_vault.engine.connect() as connection:
        history = consent.history(connection, subject)
    oldest_first = sorted(history, key=lambda c: c.id)
    assert [c.granted for c in oldest_first if c.purpose == "analytics"] == [True, False]
    unknown = web.post(
        "/privacy/centre/consents", data={"csrf": token, "purpose": "marketing", "granted": "yes"}
    )
    assert unknown.status_code == 422


def test_an_address_correction_is_saved_until_out_for_delivery_and_after_an_address_problem(
    web: TestClient, key: str, mailbox: Mailbox, centre_vault: Vault
) -> None:
    number = ship(web, key)
    sign_in(web, mailbox, "jane@example.org")
    with centre_vault.engine.connect() as connection:
        shipment_id = connection.execute(select(shipments.c.id)).scalar_one()
    path = f"/privacy/centre/shipments/{shipment_id}/address"
    assert f'href="{path}"' in web.get("/privacy/centre").text
    token = csrf_of(web.get(path).text)
    saved = web.post(
        path,
        data={"csrf": token, "street": "7 New Road\nFlat 2", "postcode": "LS2 9JT", "notes": ""},
        follow_redirects=False,
    )
    assert saved.headers["location"] == "/privacy/centre?saved=address#shipments"
    form = web.get(path)
    assert "7 New Road\nFlat 2" in html.unescape(form.text)
    assert 'value="LS2 9JT"' in form.text
    waiting = words(web.get("/privacy/centre").text)
    ledger_log.sequence(centre_vault.engine, now=centre_vault.clock())
    [listed] = web.get("/api/v1/me").json()["shipments"][0]["address_corrections"]
    assert "Address corrected" in waiting
    assert "postcode, street" in waiting
    assert "being added to the ledger" in waiting
    assert listed["fields"] == ["destination.postcode", "destination.street"]
    assert (
        f'href="/api/v1/ledger/entries/{listed["ledger_index"]}"' in web.get("/privacy/centre").text
    )
    event = {"event_id": "ofd-1", "time": "2026-11-02T08:00:00+00:00", "status": "out_for_delivery"}
    posted = web.post(f"/api/v1/shipments/{number}/events", json=event, headers=bearer(key))
    assert posted.status_code == 201, posted.text
    centre = web.get("/privacy/centre")
    assert f'href="{path}"' not in centre.text
    assert "can no longer be changed" in words(centre.text)
    late = web.post(
        path, data={"csrf": token, "street": "8 Other Road", "postcode": "LS2 9JT", "notes": ""}
    )
    assert late.status_code == 409
    assert "before the parcel is out for delivery" in words(late.text)
    problem = {
        "event_id": "fa-1",
        "time": "2026-11-02T11:00:00+00:00",
        "status": "failed_attempt",
        "reason": "address_problem",
    }
    posted = web.post(f"/api/v1/shipments/{number}/events", json=problem, headers=bearer(key))
    assert posted.status_code == 201, posted.text
    assert f'href="{path}"' in web.get("/privacy/centre").text  # the courier needs it right
    fixed = web.post(
        path,
        data={"csrf": token, "street": "8 Other Road", "postcode": "LS2 9JT", "notes": ""},
        follow_redirects=False,
    )
    assert fixed.headers["location"] == "/privacy/centre?saved=address#shipments"
