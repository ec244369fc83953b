"""The privacy centre in headless Chromium with JavaScript off, against the real
service in a subprocess that sends its codes to a real SMTP server on loopback.

Set E2E_SCREENSHOTS to a folder to keep screenshots of the pages.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import Canaries
from tests.e2e.server import LiveService, running_service
from tests.e2e.test_tracking_page_browser import CHROMIUM, PHONE, screenshot
from tests.mailbox import Mailbox, running_mailbox

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    with running_mailbox() as box:
        yield box


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox) -> Iterator[LiveService]:
    folder = tmp_path_factory.mktemp("centre")
    with running_service(
        folder,
        PARCELVAULT_SMTP_HOST=mailbox.host,
        PARCELVAULT_SMTP_PORT=str(mailbox.port),
        PARCELVAULT_SMTP_STARTTLS="false",
        PARCELVAULT_MAIL_FROM="parcelvault <codes@parcelvault.test>",
        PARCELVAULT_CHECKPOINT_INTERVAL_SECONDS="1",
    ) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser, service: LiveService) -> Iterator[BrowserContext]:
    opened = browser.new_context(
        base_url=service.base_url, java_script_enabled=False, viewport=PHONE, accept_downloads=True
    )
    opened.set_default_timeout(5_000)
    yield opened
    opened.close()


def sign_in_by_code(page: Page, mailbox: Mailbox, email: str) -> str:
    before = len(mailbox.received)
    page.goto("/privacy/centre")
    expect(page).to_have_url(re.compile(r"/privacy/centre/sign-in$"))
    page.get_by_label("Your e-mail address").fill(email)
    page.get_by_role("button", name="Send me a code").click()
    expect(page).to_have_url(re.compile(r"/privacy/centre/sign-in/code$"))
    screenshot(page, "centre-code")
    code = mailbox.wait_for(before + 1)[-1].code()
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/privacy/centre$"))
    return code


def test_a_person_signs_in_by_code_manages_downloads_and_erases_their_data(
    context: BrowserContext, service: LiveService, mailbox: Mailbox, canaries: Canaries
) -> None:
    first = service.create_shipment(canaries.shipment())
    second = service.create_shipment(canaries.shipment(reference="order-2"))
    page = context.new_page()
    code = sign_in_by_code(page, mailbox, canaries.email)
    parcels = page.get_by_test_id("shipments")
    expect(parcels).to_contain_text(re.sub(r"(.{4})(?!$)", r"\1 ", first)[:4])
    assert {a.get_attribute("href") for a in parcels.get_by_role("link").all()} >= {
        f"/t/{first}",
        f"/t/{second}",
    }
    expect(page.get_by_test_id("scope")).to_contain_text("every parcel")
    screenshot(page, "centre-signed-in")

    analytics = page.get_by_test_id("consent-analytics")
    expect(analytics.get_by_test_id("consent-state")).to_have_text("no")
    analytics.get_by_role("button", name=re.compile("^Turn on")).click()
    expect(page.get_by_test_id("saved")).to_have_text("Your choice was saved.")
    analytics = page.get_by_test_id("consent-analytics")
    expect(analytics.get_by_test_id("consent-state")).to_have_text("yes")
    version = page.get_by_test_id("notice-version").inner_text()
    expect(analytics).to_contain_text(f"under notice version {version}")

    page.get_by_test_id("correct-address").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Correct the delivery address")
    expect(page.get_by_label("Postcode")).to_have_value(canaries.postcode)
    page.get_by_label("Street address").fill("7 Corrected Road\nFlat 2")
    page.get_by_label("Notes for the courier").fill("Leave with the neighbour at 9")
    screenshot(page, "centre-address")
    page.get_by_role("button", name="Save the address").click()
    expect(page.get_by_test_id("saved")).to_contain_text("Your address was corrected")

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download JSON").click()
    download = download_info.value
    assert re.fullmatch(r"my-data-\d{4}-\d{2}-\d{2}\.json", download.suggested_filename)
    exported = json.loads(Path(download.path()).read_text())
    assert {s["tracking_number"] for s in exported["shipments"]} == {first, second}
    dumped = json.dumps(exported)
    assert "7 Corrected Road" in dumped
    assert "Leave with the neighbour at 9" in dumped
    assert canaries.street in dumped, "the other parcel keeps its address"

    page.get_by_test_id("erase-link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Erase your data?")
    screenshot(page, "centre-erase-confirm")
    page.get_by_test_id("erase-confirm").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your data was erased")
    receipt_id = page.get_by_test_id("receipt-id").inner_text()
    assert re.fullmatch(r"[0-9a-f]{32}", receipt_id)
    deadline = time.monotonic() + 20
    while "Not yet covered" in page.get_by_test_id("receipt-checkpoint").inner_text():
        assert time.monotonic() < deadline, "the erasure never reached a signed checkpoint"
        time.sleep(0.5)
        page.reload()
    expect(page.get_by_test_id("receipt-ledger")).to_contain_text(re.compile(r"#\d+"))
    screenshot(page, "centre-receipt")

    page.goto("/privacy/centre")
    expect(page).to_have_url(re.compile(r"/privacy/centre/sign-in$"))
    page.goto(f"/t/{first}")
    expect(page.get_by_text("erased at their request")).to_be_visible()

    log = service.log_text()
    assert canaries.found_in(log) == []
    assert code not in log
    assert canaries.found_in(page.content()) == []


def test_a_recipient_reaches_the_centre_for_one_parcel_with_its_postcode(
    context: BrowserContext, service: LiveService, canaries: Canaries
) -> None:
    number = service.create_shipment(canaries.shipment())
    other = service.create_shipment(canaries.shipment(reference="order-3"))
    page = context.new_page()
    page.goto(f"/t/{number}")
    page.get_by_label("Are you the recipient?").fill(canaries.postcode)
    page.get_by_role("button", name="Show my details").click()
    page.get_by_test_id("centre-link").click()
    expect(page).to_have_url(re.compile(r"/privacy/centre$"))
    expect(page.get_by_test_id("scope")).to_contain_text("that parcel only")
    links = {
        a.get_attribute("href") for a in page.get_by_test_id("shipments").get_by_role("link").all()
    }
    assert f"/t/{number}" in links
    assert f"/t/{other}" not in links
    expect(page.get_by_test_id("erase")).to_contain_text("sign in with a code")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download JSON").click()
    exported = json.loads(Path(download_info.value.path()).read_text())
    assert [s["tracking_number"] for s in exported["shipments"]] == [number]
    screenshot(page, "centre-postcode")


def test_a_stranger_gets_the_same_code_page_and_no_mail(
    context: BrowserContext, mailbox: Mailbox
) -> None:
    before = len(mailbox.received)
    page = context.new_page()
    page.goto("/privacy/centre/sign-in")
    page.get_by_label("Your e-mail address").fill("nobody-at-all@example.org")
    page.get_by_role("button", name="Send me a code").click()
    expect(page).to_have_url(re.compile(r"/privacy/centre/sign-in/code$"))
    page.get_by_label("Code").fill("123456")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("error")).to_contain_text("That code did not work")
    assert mailbox.settle() == before
