"""The staff console: sign-in, shipment search, masked views and justified reveals.

Server-rendered, no JavaScript. Every response under /staff is `private, no-store`
and may not be framed. Every POST carries a CSRF token in a hidden field: before
sign-in it is bound to a random pre-session cookie, afterwards to the session; a
missing or wrong token is refused with 403 before anything else happens.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from parcelvault.domain import tracking_numbers
from parcelvault.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from parcelvault.entrypoints.api.routes import vault_of
from parcelvault.entrypoints.web.pages import WEB
from parcelvault.privacy.policy import Policy
from parcelvault.services import staff

SESSION_COOKIE = "pv_staff"
LOGIN_COOKIE = "pv_staff_login"
COOKIE_PATH = "/staff"
LOGIN_COOKIE_SECONDS = 60 * 60
STAFF_HEADERS = {
    "Cache-Control": "private, no-store",
    "Vary": "Cookie",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}
SIGN_IN_FAILED = (
    "Sign-in failed. Check your username, password and authenticator code. "
    "After 5 failed attempts sign-in is paused for 15 minutes."
)
StaffHandler = Callable[[Request, staff.SignedIn], Awaitable[Response]]


def _text(form: FormData, name: str, limit: int = 2000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _texts(form: FormData, name: str) -> list[str]:
    return [value[:64] for value in form.getlist(name) if isinstance(value, str)][:64]


def _labels(policy: Policy) -> dict[str, str]:
    """The notice's labels, worded for staff: "Your name" -> "Name"."""
    labels = {}
    for name, rule in policy.fields.items():
        label = rule.label.removeprefix("Your ").removeprefix("The ")
        labels[name] = label[:1].upper() + label[1:]
    return labels


def _shipment_path(number: str, tenant: str | None, suffix: str = "") -> str:
    path = f"/staff/shipments/{quote(number, safe='')}{suffix}"
    return path + (f"?{urlencode({'tenant': tenant})}" if tenant else "")


def install(app: FastAPI) -> None:
    templates = Jinja2Templates(directory=str(WEB / "templates"))

    def secure(request: Request) -> bool:
        return request.url.scheme == "https"

    def clear_cookie(response: Response, request: Request, name: str) -> None:
        response.delete_cookie(
            name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure(request)
        )

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(
            request,
            f"staff/{name}",
            {"reasons": staff.REASONS, **context},
            status_code=status,
            headers=STAFF_HEADERS,
        )

    def redirect(target: str) -> Response:
        return RedirectResponse(target, status_code=303, headers=STAFF_HEADERS)

    def forbidden(request: Request, message: str, who: staff.SignedIn | None = None) -> Response:
        return render(
            request, "error.html", 403, who=who, message=message, csrf=csrf_of(request, who)
        )

    def csrf_of(request: Request, who: staff.SignedIn | None) -> str | None:
        if who is None:
            return None
        return staff.csrf_token(vault_of(request).keyring.session_key, "session", who.session_id)

    async def signed_in(request: Request) -> staff.SignedIn | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        return await run_in_threadpool(staff.session_of, vault=vault_of(request), token=token)

    def session_csrf_ok(request: Request, who: staff.SignedIn, form: FormData) -> bool:
        key = vault_of(request).keyring.session_key
        return staff.csrf_valid(key, "session", who.session_id, _text(form, "csrf", 200))

    async def as_staff(request: Request, handler: StaffHandler) -> Response:
        who = await signed_in(request)
        if who is None:
            response = redirect("/staff/login")
            if request.cookies.get(SESSION_COOKIE):
                clear_cookie(response, request, SESSION_COOKIE)
            return response
        return await handler(request, who)

    # --- sign-in ------------------------------------------------------------------

    def login_page(
        request: Request,
        *,
        nonce: str,
        status: int = 200,
        error: str | None = None,
        username: str = "",
    ) -> Response:
        key = vault_of(request).keyring.session_key
        return render(
            request,
            "login.html",
            status,
            who=None,
            login_csrf=staff.csrf_token(key, "login", nonce.encode()),
            error=error,
            username=username,
        )

    def set_login_cookie(response: Response, request: Request, nonce: str) -> None:
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=LOGIN_COOKIE_SECONDS,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )

    @app.get("/staff/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if await signed_in(request) is not None:
            return redirect("/staff")
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        fresh = len(nonce) < 32
        if fresh:
            nonce = secrets.token_urlsafe(32)
        response = login_page(request, nonce=nonce)
        if fresh:
            set_login_cookie(response, request, nonce)
        return response

    @app.post("/staff/login", include_in_schema=False)
    async def login_submit(request: Request) -> Response:
        vault = vault_of(request)
        form = await request.form()
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        token = _text(form, "csrf", 200)
        if len(nonce) < 32 or not staff.csrf_valid(
            vault.keyring.session_key, "login", nonce.encode(), token
        ):
            return forbidden(
                request, "The sign-in form expired or did not come from this site. Reload it."
            )
        username = _text(form, "username", 64)
        try:
            session = await run_in_threadpool(
                staff.sign_in,
                vault=vault,
                username=username,
                password=_text(form, "password", staff.MAX_PASSWORD_LENGTH + 1),
                code=_text(form, "code", 16),
            )
        except staff.SignInFailed:
            return login_page(
                request, nonce=nonce, status=401, error=SIGN_IN_FAILED, username=username
            )
        response = redirect("/staff")
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            max_age=int(staff.SESSION_DURATION.total_seconds()),
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )
        clear_cookie(response, request, LOGIN_COOKIE)
        return response

    @app.post("/staff/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        async def handle(request: Request, who: staff.SignedIn) -> Response:
            if not session_csrf_ok(request, who, await request.form()):
                return forbidden(request, "The form did not come from this site.", who)
            await run_in_threadpool(
                staff.sign_out, vault=vault_of(request), session_id=who.session_id
            )
            response = redirect("/staff/login")
            clear_cookie(response, request, SESSION_COOKIE)
            return response

        return await as_staff(request, handle)

    # --- console ------------------------------------------------------------------

    @app.get("/staff", include_in_schema=False)
    async def console(request: Request) -> Response:
        async def handle(request: Request, who: staff.SignedIn) -> Response:
            number = request.query_params.get("number", "")[:80]
            if not number:
                return render(
                    request, "console.html", who=who, csrf=csrf_of(request, who), number=""
                )
            canonical = tracking_numbers.for_lookup(number)
            if canonical is None:
                return render(
                    request,
                    "console.html",
                    404,
                    who=who,
                    csrf=csrf_of(request, who),
                    number=number,
                    error="That is not a tracking number.",
                )
            return redirect(_shipment_path(canonical, None))

        return await as_staff(request, handle)

    def shipment_page(
        request: Request,
        who: staff.SignedIn,
        seen: staff.ConsoleView,
        *,
        tenant: str | None,
        status: int = 200,
        problems: dict[str, str] | None = None,
        form: dict[str, Any] | None = None,
    ) -> Response:
        revealed_until = max(seen.revealed.values()) if seen.revealed else None
        return render(
            request,
            "shipment.html",
            status,
            who=who,
            csrf=csrf_of(request, who),
            seen=seen,
            view=seen.view,
            policy=vault_of(request).policy,
            labels=_labels(vault_of(request).policy),
            revealed_until=revealed_until,
            reveal_minutes=int(staff.REVEAL_DURATION.total_seconds() // 60),
            reference_max=staff.REFERENCE_MAX_LENGTH,
            reveal_action=_shipment_path(seen.view.tracking_number, tenant, "/reveal"),
            problems=problems or {},
            form=form or {},
        )

    def not_found_page(request: Request, who: staff.SignedIn, number: str) -> Response:
        return render(
            request,
            "console.html",
            404,
            who=who,
            csrf=csrf_of(request, who),
            number=number[:80],
            error="No shipment is known under that number (or it is shared by two tenants; "
            "add ?tenant=NAME to the address).",
        )

    @app.get("/staff/shipments/{tracking_number}", include_in_schema=False)
    async def shipment(request: Request, tracking_number: str) -> Response:
        tenant = request.query_params.get("tenant") or None

        async def handle(request: Request, who: staff.SignedIn) -> Response:
            try:
                seen = await run_in_threadpool(
                    staff.console_view,
                    vault=vault_of(request),
                    who=who,
                    raw_number=tracking_number,
                    tenant=tenant,
                )
            except NotFound:
                return not_found_page(request, who, tracking_number)
            return shipment_page(request, who, seen, tenant=tenant)

        return await as_staff(request, handle)

    @app.post("/staff/shipments/{tracking_number}/reveal", include_in_schema=False)
    async def reveal(request: Request, tracking_number: str) -> Response:
        tenant = request.query_params.get("tenant") or None

        async def handle(request: Request, who: staff.SignedIn) -> Response:
            vault = vault_of(request)
            form = await request.form()
            if not session_csrf_ok(request, who, form):
                return forbidden(request, "The form did not come from this site.", who)
            fields = _texts(form, "field")
            reason = _text(form, "reason", 64)
            reference = _text(form, "reference", 1000)
            try:
                await run_in_threadpool(
                    staff.reveal,
                    vault=vault,
                    who=who,
                    raw_number=tracking_number,
                    fields=fields,
                    reason=reason,
                    reference=reference,
                    tenant=tenant,
                )
            except Forbidden:
                return forbidden(request, "Your role cannot reveal these details.", who)
            except NotFound:
                return not_found_page(request, who, tracking_number)
            except (InvalidInput, Conflict) as exc:
                problems = (
                    {str(p.loc[0]): p.message for p in exc.problems}
                    if isinstance(exc, InvalidInput)
                    else {"fields": str(exc)}
                )
                seen = await run_in_threadpool(
                    staff.console_view,
                    vault=vault,
                    who=who,
                    raw_number=tracking_number,
                    tenant=tenant,
                )
                return shipment_page(
                    request,
                    who,
                    seen,
                    tenant=tenant,
                    status=422 if isinstance(exc, InvalidInput) else 409,
                    problems=problems,
                    form={"fields": fields, "reason": reason, "reference": reference[:100]},
                )
            number = tracking_numbers.for_lookup(tracking_number) or tracking_number
            return redirect(_shipment_path(number, tenant))

        return await as_staff(request, handle)
