"""The tracking pages in headless Chromium, against the real service in a subprocess.

Every test creates its own shipment through the HTTP API, with unique personal
values (Canaries), so the tests can run in any order against one server. Set
E2E_SCREENSHOTS to a folder to keep screenshots of the pages.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Response,
    expect,
    sync_playwright,
)

from parcelvault.domain import tracking_numbers
from tests.conftest import Canaries
from tests.e2e.server import LiveService, running_service

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
WRONG_POSTCODE = "ZZ99 1ZZ"
MAX_FAILURES = 5


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    folder = tmp_path_factory.mktemp("service")
    with running_service(folder, PARCELVAULT_VERIFY_MAX_FAILURES=str(MAX_FAILURES)) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


NewContext = Callable[..., BrowserContext]


@pytest.fixture
def new_context(browser: Browser, service: LiveService) -> Iterator[NewContext]:
    """Opens browser contexts (separate cookie jars) on the service; all close afterwards."""
    opened: list[BrowserContext] = []

    def open_context(**options: Any) -> BrowserContext:
        context = browser.new_context(base_url=service.base_url, **options)
        context.set_default_timeout(5_000)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        context.close()


@pytest.fixture
def page(new_context: NewContext) -> Page:
    return new_context().new_page()


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("E2E_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@dataclass(frozen=True)
class Parcel:
    number: str
    canaries: Canaries

    @property
    def url(self) -> str:
        return f"/t/{self.number}"

    @property
    def initials(self) -> str:
        first, *_, last = self.canaries.name.split()
        return f"{first[0].upper()}. {last[0].upper()}."

    @property
    def postcode_typed_loosely(self) -> str:
        """The right postcode as a person might type it: lower case, no space."""
        return self.canaries.postcode.replace(" ", "").lower()


def event(status: str, when: datetime, city: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"scan-{secrets.token_hex(8)}",
        "time": when.isoformat(),
        "status": status,
        "location": {"country": "GB", "city": city},
        **extra,
    }


def delivered_history(canaries: Canaries) -> list[dict[str, Any]]:
    start = (datetime.now(UTC) - timedelta(days=3)).replace(
        hour=8, minute=5, second=0, microsecond=0
    )
    return [
        event("info_received", start, "London"),
        event("in_transit", start + timedelta(hours=9), "Manchester"),
        event("out_for_delivery", start + timedelta(days=1), "Leeds"),
        event(
            "failed_attempt",
            start + timedelta(days=1, hours=6),
            "Leeds",
            reason="recipient_absent",
            description="Card left at the door",
        ),
        event("out_for_delivery", start + timedelta(days=2), "Leeds"),
        event(
            "delivered",
            start + timedelta(days=2, hours=3),
            "Leeds",
            proof={"received_by": canaries.received_by, "signature": canaries.signature},
        ),
    ]


@pytest.fixture
def make_parcel(service: LiveService) -> Iterator[Callable[..., Parcel]]:
    """Creates a delivered parcel with unique personal values; afterwards the server log
    must hold none of them."""
    made: list[Parcel] = []

    def make(*, history: bool = True, **shipment_overrides: Any) -> Parcel:
        canaries = Canaries()
        payload = canaries.shipment(
            reference=f"order-{secrets.token_hex(4)}",
            promised_date=(datetime.now(UTC) + timedelta(days=2)).date().isoformat(),
        )
        for group, fields in shipment_overrides.items():
            payload[group] = {**payload[group], **fields}
        number = service.create_shipment(payload)
        if history:
            service.add_events(number, *delivered_history(canaries))
        parcel = Parcel(number=number, canaries=canaries)
        made.append(parcel)
        return parcel

    yield make
    log = service.log_text()
    for parcel in made:
        assert parcel.canaries.found_in(log) == [], "a personal value reached the server log"


@pytest.fixture
def parcel(make_parcel: Callable[..., Parcel]) -> Parcel:
    return make_parcel()


def submit_postcode(page: Page, postcode: str) -> Response:
    """Fills in the recipient form and submits it; the response the browser ends on."""
    with page.expect_navigation() as navigation:
        page.get_by_label("Enter the destination postcode").fill(postcode)
        page.get_by_role("button", name="Show my details").click()
    response = navigation.value
    assert response is not None
    return response


def fits_phone_width(page: Page) -> bool:
    document_width, body_width, viewport_width = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    return bool(max(document_width, body_width) <= min(viewport_width, PHONE["width"]))


# --- the public view ------------------------------------------------------------------


def test_the_public_page_shows_status_progress_and_history_but_no_personal_data(
    page: Page, parcel: Parcel
) -> None:
    response = page.goto(parcel.url)

    assert response is not None
    assert response.status == 200
    expect(page.get_by_test_id("status")).to_have_text("Delivered")
    progress = page.get_by_role("list", name="Progress")
    expect(progress.get_by_role("listitem")).to_have_count(4)
    expect(progress.locator("[aria-current=step]")).to_have_count(1)
    expect(progress.locator("[aria-current=step]")).to_contain_text("Delivered")
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_be_visible()
    expect(timeline.get_by_role("listitem")).to_have_count(6)
    expect(timeline).to_contain_text("nobody was available")
    expect(timeline).to_contain_text("Manchester")
    expect(page.get_by_test_id("initials")).to_have_text(parcel.initials)
    expect(page.get_by_test_id("proof")).to_have_count(0)
    assert parcel.canaries.found_in(page.content()) == []
    screenshot(page, "public")


def test_a_failed_delivery_is_shown_as_the_current_problem_with_its_reason(
    page: Page, service: LiveService, make_parcel: Callable[..., Parcel]
) -> None:
    parcel = make_parcel(history=False)
    start = datetime.now(UTC) - timedelta(days=1)
    service.add_events(
        parcel.number,
        event("info_received", start, "London"),
        event("out_for_delivery", start + timedelta(hours=20), "Leeds"),
        event(
            "failed_attempt",
            start + timedelta(hours=22),
            "Leeds",
            reason="recipient_absent",
        ),
    )

    page.goto(parcel.url)

    expect(page.get_by_test_id("status")).to_have_text("Delivery attempted")
    expect(page.get_by_test_id("reason")).to_contain_text("nobody was available")
    expect(page.get_by_text("Expected by")).to_be_visible()
    current = page.get_by_role("list", name="Progress").locator("[aria-current=step]")
    expect(current).to_contain_text("Out for delivery")
    latest = page.get_by_test_id("timeline").get_by_role("listitem").first
    expect(latest).to_contain_text("Problem: Delivery attempted")
    assert parcel.canaries.found_in(page.content()) == []
    screenshot(page, "problem")


def test_after_an_address_problem_the_recipient_is_asked_to_correct_the_address(
    new_context: NewContext, service: LiveService, make_parcel: Callable[..., Parcel]
) -> None:
    page = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    parcel = make_parcel(history=False)
    start = datetime.now(UTC) - timedelta(days=1)
    service.add_events(
        parcel.number,
        event("out_for_delivery", start, "Leeds"),
        event("failed_attempt", start + timedelta(hours=2), "Leeds", reason="address_problem"),
    )

    page.goto(parcel.url)
    expect(page.get_by_test_id("reason")).to_contain_text("problem with the address")
    expect(page.get_by_test_id("address-problem")).to_have_count(0)  # not for strangers

    submit_postcode(page, parcel.postcode_typed_loosely)

    prompt = page.get_by_test_id("address-problem")
    expect(prompt).to_contain_text("Correct your address")
    link = prompt.get_by_role("link", name="Correct your address")
    assert link.get_attribute("href") == f"/privacy/centre/for/{parcel.number}"
    assert fits_phone_width(page)
    screenshot(page, "address-problem")


def test_the_page_is_server_rendered_and_works_without_javascript(
    new_context: NewContext, parcel: Parcel
) -> None:
    page = new_context(java_script_enabled=False).new_page()

    page.goto(parcel.url)
    expect(page.get_by_test_id("status")).to_have_text("Delivered")
    expect(page.get_by_test_id("timeline").get_by_role("listitem")).to_have_count(6)
    submit_postcode(page, parcel.postcode_typed_loosely)

    expect(page.get_by_test_id("address")).to_contain_text(parcel.canaries.street)


# --- proving to be the recipient -------------------------------------------------------


def only_a_refusal_was_remembered(context: BrowserContext) -> None:
    """The one cookie a refused postcode leaves: it lets this browser see why it was
    refused, opens nothing, and goes only to the tracking pages."""
    (cookie,) = context.cookies()
    assert cookie["name"].startswith("pvf_")
    assert (cookie["path"], cookie["httpOnly"], cookie["sameSite"]) == ("/t/", True, "Strict")


def test_a_wrong_postcode_is_announced_and_the_right_one_in_any_spacing_shows_the_details(
    new_context: NewContext, parcel: Parcel
) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(parcel.url)

    submit_postcode(page, WRONG_POSTCODE)

    expect(page.get_by_role("alert")).to_contain_text("does not match")
    expect(page.get_by_label("Enter the destination postcode")).to_have_attribute(
        "aria-invalid", "true"
    )
    assert parcel.canaries.found_in(page.content()) == []
    only_a_refusal_was_remembered(context)

    response = submit_postcode(page, parcel.postcode_typed_loosely)

    assert response.url.endswith(parcel.url)
    assert "no-store" in response.headers["cache-control"]
    expect(page.get_by_test_id("recipient-details")).to_contain_text(parcel.canaries.name)
    expect(page.get_by_test_id("address")).to_contain_text(parcel.canaries.street)
    expect(page.get_by_test_id("address")).to_contain_text(parcel.canaries.postcode)
    expect(page.get_by_test_id("proof")).to_contain_text(parcel.canaries.received_by)
    expect(page.get_by_role("alert")).to_have_count(0)
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["value"] not in page.content()
    screenshot(page, "recipient")


def test_a_fresh_browser_without_the_cookie_sees_the_public_page_again(
    new_context: NewContext, parcel: Parcel
) -> None:
    recipient = new_context().new_page()
    recipient.goto(parcel.url)
    submit_postcode(recipient, parcel.canaries.postcode)
    expect(recipient.get_by_test_id("address")).to_contain_text(parcel.canaries.street)

    stranger = new_context().new_page()
    stranger.goto(parcel.url)

    expect(stranger.get_by_test_id("verify-form")).to_be_visible()
    expect(stranger.get_by_test_id("initials")).to_have_text(parcel.initials)
    assert parcel.canaries.found_in(stranger.content()) == []


def test_the_recipient_cookie_of_one_parcel_does_not_open_another(
    page: Page, make_parcel: Callable[..., Parcel]
) -> None:
    mine, other = make_parcel(), make_parcel()
    page.goto(mine.url)
    submit_postcode(page, mine.canaries.postcode)
    expect(page.get_by_test_id("address")).to_contain_text(mine.canaries.street)

    page.goto(other.url)

    expect(page.get_by_test_id("verify-form")).to_be_visible()
    assert other.canaries.found_in(page.content()) == []


def test_five_wrong_postcodes_lock_verification_even_for_the_right_postcode(
    new_context: NewContext, parcel: Parcel
) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(parcel.url)

    for attempt in range(1, MAX_FAILURES):
        assert submit_postcode(page, WRONG_POSTCODE).status == 403
        left = MAX_FAILURES - attempt
        expect(page.get_by_role("alert")).to_contain_text(f"{left} attempt(s) left")
    assert submit_postcode(page, WRONG_POSTCODE).status == 429
    expect(page.get_by_role("alert")).to_contain_text("Too many wrong postcodes")

    right = submit_postcode(page, parcel.canaries.postcode)

    assert right.status == 429
    expect(page.get_by_role("alert")).to_contain_text("Too many wrong postcodes")
    expect(page.get_by_test_id("recipient-details")).to_have_count(0)
    assert parcel.canaries.found_in(page.content()) == []
    only_a_refusal_was_remembered(context)
    screenshot(page, "locked")


def test_reloading_the_page_after_a_wrong_postcode_does_not_count_as_another_attempt(
    new_context: NewContext, parcel: Parcel, service: LiveService
) -> None:
    page = new_context().new_page()
    page.goto(parcel.url)
    refused = submit_postcode(page, WRONG_POSTCODE)
    assert refused.status == 403
    assert refused.request.method == "GET"  # redirected after the post
    assert refused.url == f"{service.base_url}{parcel.url}?verify=failed"
    expect(page.get_by_role("alert")).to_contain_text(f"{MAX_FAILURES - 1} attempt(s) left")

    for _ in range(3):
        reloaded = page.reload()
        assert reloaded is not None
        assert reloaded.request.method == "GET"
        expect(page.get_by_role("alert")).to_contain_text(f"{MAX_FAILURES - 1} attempt(s) left")

    submit_postcode(page, parcel.canaries.postcode)
    expect(page.get_by_test_id("address")).to_contain_text(parcel.canaries.street)
    expect(page.get_by_role("alert")).to_have_count(0)


def test_someone_else_following_the_address_of_a_refusal_is_not_told_about_it(
    new_context: NewContext, parcel: Parcel
) -> None:
    tried = new_context().new_page()
    tried.goto(parcel.url)
    refused = submit_postcode(tried, WRONG_POSTCODE)
    assert refused.status == 403

    other = new_context().new_page()
    response = other.goto(refused.url)

    assert response is not None
    assert response.status == 200
    expect(other.get_by_role("alert")).to_have_count(0)
    expect(other.get_by_test_id("verify-form")).to_be_visible()
    expect(tried.get_by_role("alert")).to_contain_text(f"{MAX_FAILURES - 1} attempt(s) left")


def test_the_address_of_a_refusal_followed_without_an_attempt_shows_the_plain_page(
    page: Page, parcel: Parcel
) -> None:
    response = page.goto(f"{parcel.url}?verify=failed")

    assert response is not None
    assert response.status == 200
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_test_id("verify-form")).to_be_visible()


# --- finding a parcel -------------------------------------------------------------------


def test_the_home_page_finds_a_parcel_typed_with_spaces_and_in_lower_case(
    page: Page, service: LiveService, parcel: Parcel
) -> None:
    typed = tracking_numbers.grouped(parcel.number).replace("-", " ").lower()
    page.goto("/")

    page.get_by_label("Tracking number").fill(f"  {typed} ")
    page.get_by_role("button", name="Track").click()

    expect(page).to_have_url(f"{service.base_url}{parcel.url}")
    expect(page.get_by_test_id("status")).to_have_text("Delivered")
    expect(page.get_by_test_id("number")).to_have_text(tracking_numbers.grouped(parcel.number))


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(tracking_numbers.issue(secrets.randbits), id="well-formed-but-unknown"),
        pytest.param("not a number!", id="not-a-number"),
    ],
)
def test_an_unknown_number_shows_the_not_found_page_with_status_404(
    page: Page, service: LiveService, typed: str
) -> None:
    page.goto("/")

    with page.expect_navigation() as navigation:
        page.get_by_label("Tracking number").fill(typed)
        page.get_by_role("button", name="Track").click()

    assert navigation.value is not None
    assert navigation.value.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("We could not find that parcel")
    expect(page.get_by_label("Tracking number")).to_be_visible()


# --- layout ------------------------------------------------------------------------------


def test_no_page_overflows_a_phone_screen(
    new_context: NewContext, make_parcel: Callable[..., Parcel]
) -> None:
    parcel = make_parcel(
        recipient={"email": f"a.very.long.address.{secrets.token_hex(8)}@subdomain.example.org"},
        destination={"street": ["Flat 14, Longbuildingname-with-no-breaks House", "12 A Road"]},
    )
    page = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()

    for path in ("/", "/privacy", "/t/NOPE-NOPE-NOPE", parcel.url):
        page.goto(path)
        assert fits_phone_width(page), f"{path} is wider than the phone"
    screenshot(page, "phone-public")
    submit_postcode(page, parcel.canaries.postcode)
    expect(page.get_by_test_id("address")).to_contain_text("12 A Road")
    assert fits_phone_width(page), "the recipient view is wider than the phone"
    screenshot(page, "phone-recipient")


# --- logs ---------------------------------------------------------------------------------


def test_the_server_log_holds_none_of_the_personal_values(
    page: Page, service: LiveService, parcel: Parcel
) -> None:
    page.goto(parcel.url)
    submit_postcode(page, WRONG_POSTCODE)
    submit_postcode(page, parcel.postcode_typed_loosely)
    expect(page.get_by_test_id("address")).to_contain_text(parcel.canaries.street)
    with service.api() as api:
        assert api.get(f"/api/v1/shipments/{parcel.number}").status_code == 200
    assert httpx.get(f"{service.base_url}/t/{parcel.number}", timeout=5).status_code == 200
    page.goto("/")
    page.get_by_label("Tracking number").fill(parcel.canaries.postcode)
    page.get_by_role("button", name="Track").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("We could not find that parcel")

    log = service.log_text()

    assert "Application startup complete" in log, "the server log was not captured"
    assert parcel.canaries.found_in(log) == []
