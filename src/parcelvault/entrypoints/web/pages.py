"""Server-rendered pages (Jinja2): they work without JavaScript and on a phone.

The tracking page renders the same disclosed TrackingView as the API; the postcode
form posts to /t/{tn}/verify, which sets the recipient cookie and redirects back. A
refused postcode redirects back too (post/redirect/get), to `/t/{tn}?verify=failed`,
whose page reads where the check stands (attempts left, lock, erased) from the
database: reloading it shows the same message and never submits the form again. Only
the client whose attempt was refused sees that message (a cookie the redirect sets
says so); anyone else following the address gets the plain page.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, Query, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from parcelvault.domain import tracking_numbers
from parcelvault.domain.errors import Gone, Locked, NotFound
from parcelvault.entrypoints.api.routes import set_recipient_cookie, vault_of
from parcelvault.entrypoints.api.views_json import nest
from parcelvault.services import corrections, ledger_views, tracking

WEB = Path(str(resources.files("parcelvault.entrypoints.web")))
PAGE_HEADERS_PUBLIC = {"Cache-Control": "public, max-age=30", "Vary": "Cookie"}
PAGE_HEADERS_PRIVATE = {"Cache-Control": "private, no-store", "Vary": "Cookie"}
PAGE_HEADERS_TRANSPARENCY = {"Cache-Control": "public, max-age=5"}
TIER_LABELS = {
    "public": "Anyone with the number",
    "recipient": "You, after proving it",
    "merchant": "The shop that sent it",
}
EXPOSURE_LABELS = {
    "full": "yes",
    "masked": "partly (e.g. initials)",
    "generalized": "roughly",
    "hidden": "no",
}


def install(app: FastAPI) -> None:
    templates = Jinja2Templates(directory=str(WEB / "templates"))
    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")

    def render(
        request: Request,
        name: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: object,
    ) -> Response:
        return templates.TemplateResponse(
            request, name, context, status_code=status, headers=headers or PAGE_HEADERS_PRIVATE
        )

    def tracking_page(
        request: Request,
        view: tracking.TrackingView,
        *,
        status: int = 200,
        error: str | None = None,
        tenant: str | None = None,
        accesses: ledger_views.AccessLog | None = None,
    ) -> Response:
        headers = (
            PAGE_HEADERS_PUBLIC if view.tier == "public" and not error else PAGE_HEADERS_PRIVATE
        )
        return render(
            request,
            "track.html",
            status,
            headers,
            view=view,
            personal=nest(view.personal),
            error=error,
            tenant=tenant,
            accesses=accesses,
            address_problem=view.tier == "recipient" and reports_address_problem(view),
            session_minutes=vault_of(request).settings.recipient_session_seconds // 60,
            verify_action=f"/t/{quote(view.tracking_number)}/verify"
            + (f"?tenant={quote(tenant)}" if tenant else ""),
        )

    def not_found_page(request: Request, number: str) -> Response:
        return render(request, "not_found.html", 404, number=number[:60])

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        return render(request, "home.html", headers=PAGE_HEADERS_PUBLIC)

    @app.get("/privacy", include_in_schema=False)
    async def privacy(request: Request) -> Response:
        return render(
            request,
            "privacy.html",
            headers=PAGE_HEADERS_PUBLIC,
            policy=vault_of(request).policy,
            tier_labels=TIER_LABELS,
            exposure_labels=EXPOSURE_LABELS,
        )

    @app.get("/t", include_in_schema=False)
    async def find(request: Request, number: Annotated[str, Query(max_length=80)] = "") -> Response:
        canonical = tracking_numbers.for_lookup(number)
        if canonical is None:
            return not_found_page(request, number)
        return RedirectResponse(f"/t/{quote(canonical)}", status_code=303)

    @app.get("/t/{tracking_number}", include_in_schema=False)
    async def track_page(
        request: Request,
        tracking_number: str,
        tenant: Annotated[str | None, Query(max_length=64)] = None,
        verify: Annotated[str | None, Query(max_length=16)] = None,
    ) -> Response:
        vault = vault_of(request)
        try:
            resolved = tracking.resolve(
                vault=vault, raw_number=tracking_number, cookies=request.cookies, tenant=tenant
            )
            view = tracking.view_of(vault=vault, resolved=resolved)
        except NotFound:
            return not_found_page(request, tracking_number)
        if (
            verify == VERIFY_FAILED
            and view.tier == "public"
            and tracking.refused_here(vault=vault, resolved=resolved, cookies=request.cookies)
        ):
            state = await run_in_threadpool(
                tracking.verification_state,
                vault=vault,
                raw_number=tracking_number,
                tenant=tenant,
            )
            refused = refusal(state)
            if refused is not None:
                status, message, retry_after = refused
                response = tracking_page(request, view, status=status, error=message, tenant=tenant)
                if retry_after is not None:
                    response.headers["Retry-After"] = str(retry_after)
                return response
        accesses = (
            ledger_views.access_log(vault=vault, resolved=resolved)
            if view.tier == "recipient"
            else None
        )
        return tracking_page(request, view, tenant=tenant, accesses=accesses)

    @app.get("/transparency", include_in_schema=False)
    async def transparency(request: Request) -> Response:
        found = await run_in_threadpool(ledger_views.transparency, vault=vault_of(request))
        return render(
            request,
            "transparency.html",
            headers=PAGE_HEADERS_TRANSPARENCY,
            checkpoint=found.checkpoint,
            verifier_key=found.verifier_key,
            retired_keys=found.retired_keys,
            tree_size=found.tree_size,
        )

    @app.post("/t/{tracking_number}/verify", include_in_schema=False)
    async def verify_form(
        request: Request,
        tracking_number: str,
        postcode: Annotated[str, Form(max_length=16)] = "",
        tenant: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        vault = vault_of(request)
        try:
            grant = await run_in_threadpool(
                tracking.verify_postcode,
                vault=vault,
                raw_number=tracking_number,
                postcode=postcode,
                tenant=tenant,
            )
        except NotFound:
            return not_found_page(request, tracking_number)
        except (Gone, Locked, tracking.WrongPostcode):
            return refused_redirect(request, tracking_number, tenant)
        response = RedirectResponse(page_address(tracking_number, tenant), status_code=303)
        set_recipient_cookie(response, request, grant, vault.settings.recipient_session_seconds)
        response.delete_cookie(
            tracking.cookie_name(grant.shipment_id, tracking.REFUSED_ATTEMPT), path="/t/"
        )
        return response


VERIFY_FAILED = "failed"


def reports_address_problem(view: tracking.TrackingView) -> bool:
    """Whether the latest scan says the courier could not deliver because of the
    address, so the recipient should be asked to correct it."""
    latest = view.timeline[0] if view.timeline else None
    return (
        latest is not None
        and latest.status is view.status
        and view.status in corrections.ADDRESS_PROBLEM_STATUSES
        and corrections.address_correctable(view.status, latest.reason and latest.reason.value)
    )


def refused_redirect(request: Request, raw_number: str, tenant: str | None) -> Response:
    """Back to the page after a refused postcode, with a cookie that lets this client,
    and only this client, see why (another visitor following the same address sees the
    plain page: whether anyone tried a postcode is nobody else's business)."""
    vault = vault_of(request)
    response = RedirectResponse(
        page_address(raw_number, tenant, verify=VERIFY_FAILED), status_code=303
    )
    try:
        resolved = tracking.resolve(vault=vault, raw_number=raw_number, cookies={}, tenant=tenant)
    except NotFound:
        return response
    response.set_cookie(
        tracking.cookie_name(resolved.shipment_id, tracking.REFUSED_ATTEMPT),
        tracking.refusal_token(vault=vault, shipment_id=resolved.shipment_id),
        max_age=vault.settings.verify_window_seconds,
        path="/t/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def page_address(raw_number: str, tenant: str | None, *, verify: str | None = None) -> str:
    number = tracking_numbers.for_lookup(raw_number) or raw_number
    query = urlencode(
        {name: value for name, value in (("tenant", tenant), ("verify", verify)) if value}
    )
    return f"/t/{quote(number)}" + (f"?{query}" if query else "")


def refusal(state: tracking.VerificationState) -> tuple[int, str, int | None] | None:
    """(status, message, Retry-After) of the page after a refused postcode; None when
    nothing stands in the way (no recent wrong postcode: the address was followed
    without an attempt, or the attempts have left the window)."""
    if state.erased:
        return 410, tracking.ERASED_NOTHING_TO_VERIFY, None
    if state.retry_after_seconds is not None:
        minutes = max(1, round(state.retry_after_seconds / 60))
        message = f"Too many wrong postcodes. Try again in about {minutes} minute(s)."
        return 429, message, state.retry_after_seconds
    if state.recent_failures:
        message = (
            "That postcode does not match this parcel. "
            f"{state.remaining_attempts} attempt(s) left before a pause."
        )
        return 403, message, None
    return None
