"""The staff console in headless Chromium, against the real service in a subprocess:
an account made with the CLI signs in with a TOTP code, finds a shipment, sees it
masked, reveals two fields with a reason, and the reveal is on record."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import create_engine, select

from parcelvault.adapters.db.tables import access_records, reveals
from tests.conftest import Canaries
from tests.e2e.server import PARCELVAULT, LiveService, running_service, service_env

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a long and private passphrase"
REFERENCE = "HELPDESK-90210-browser"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with running_service(tmp_path_factory.mktemp("service")) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, service: LiveService) -> Iterator[Page]:
    context = browser.new_context(base_url=service.base_url)
    context.set_default_timeout(5_000)
    yield context.new_page()
    context.close()


def create_staff(service: LiveService, username: str, role: str) -> str:
    """`parcelvault staff create` with the password on stdin; returns the TOTP secret."""
    done = subprocess.run(
        [PARCELVAULT, "staff", "create", username, "--role", role, "--password-stdin"],
        input=PASSWORD + "\n",
        env=service_env(service.folder),
        cwd=service.folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    uri = re.search(r"^otpauth://totp/\S+$", done.stdout, re.MULTILINE)
    secret = re.search(r"^secret: ([A-Z2-7]+)$", done.stdout, re.MULTILINE)
    assert uri, done.stdout
    assert secret, done.stdout
    assert f"secret={secret.group(1)}" in uri.group(0)
    return secret.group(1)


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("E2E_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_support_signs_in_with_totp_sees_masked_data_and_reveals_with_a_reason(
    service: LiveService, page: Page
) -> None:
    canaries = Canaries()
    number = service.create_shipment(canaries.shipment())
    secret = create_staff(service, "browser-agent", "support")

    page.goto("/staff/shipments/" + number)
    expect(page).to_have_url(re.compile(r"/staff/login$"))
    page.get_by_label("Username").fill("browser-agent")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Authenticator code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/staff$"))
    expect(page.get_by_test_id("signed-in-as")).to_contain_text("browser-agent · support")

    page.get_by_label("Tracking number").fill(number.lower())
    page.get_by_role("button", name="Find").click()
    expect(page).to_have_url(re.compile(rf"/staff/shipments/{number}$"))
    first, *_, last = canaries.name.split()
    name_field = page.locator('dd[data-field="recipient.name"]')
    expect(name_field).to_have_text(f"{first[0]}. {last[0]}.")
    expect(page.locator('dd[data-field="destination.street"]')).to_have_text(
        "not shown to your role"
    )
    assert canaries.found_in(page.content()) == []
    screenshot(page, "staff-masked")

    form = page.get_by_test_id("reveal-form")
    form.get_by_label("Name").check()
    form.get_by_label("Street address").check()
    form.get_by_label("Reason").select_option("customer_request")
    form.get_by_label("Ticket or case reference").fill(REFERENCE)
    form.get_by_role("button", name=re.compile("^Reveal")).click()

    expect(page).to_have_url(re.compile(rf"/staff/shipments/{number}$"))
    expect(page.get_by_test_id("revealed-note")).to_be_visible()
    expect(name_field).to_contain_text(canaries.name)
    expect(page.locator('dd[data-field="destination.street"]')).to_contain_text(canaries.street)
    expect(page.locator('dd[data-field="recipient.email"]')).not_to_contain_text(canaries.email)
    screenshot(page, "staff-revealed")

    engine = create_engine(f"sqlite:///{service.folder / 'parcelvault.db'}")
    try:
        with engine.connect() as connection:
            (grant,) = connection.execute(select(reveals)).all()
            record = connection.execute(
                select(access_records).where(access_records.c.id == grant.access_record_id)
            ).one()
    finally:
        engine.dispose()
    assert record.fields == "destination.street,recipient.name"
    assert (record.tier, record.actor_kind, record.purpose) == ("support", "staff", "support")
    assert record.reason == "customer_request"
    assert record.reference is not None
    assert REFERENCE.encode() not in record.reference
    assert (grant.expires_at - grant.created_at).total_seconds() == 15 * 60

    log = service.log_text()
    assert "personal fields revealed" in log
    assert canaries.found_in(log) == []
    assert REFERENCE not in log
