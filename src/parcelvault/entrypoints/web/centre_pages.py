"""The privacy centre (/privacy/centre): a person's own data, without JavaScript.

Two ways in. After a one-time code e-mailed to the address on file, the centre acts
for the person on all their shipments (cookie `pv_subject`, a server-side session).
After the postcode of one parcel (the tracking page links to /privacy/centre/for/{tn}),
it acts on the parcels verified that way; downloading or erasing everything about a
person needs the code, since whoever sent a parcel knows its postcode too.

Every POST carries a CSRF token bound to the credential in use (before sign-in, to a
random cookie); a missing or wrong one is refused with 403 before anything happens.
Cookies are HttpOnly and SameSite=Strict; pages are `private, no-store`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import FastAPI, Request
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from parcelvault.adapters.mail import MailNotConfigured, SmtpSender
from parcelvault.domain.errors import Conflict, InvalidInput, Locked, NotFound
from parcelvault.entrypoints.api.routes import vault_of
from parcelvault.entrypoints.web import centre_services as rights
from parcelvault.entrypoints.web.pages import WEB
from parcelvault.services import ledger_views, subject_access, tracking
from parcelvault.services.subject_access import Scope
from parcelvault.services.vault import Vault

SESSION_COOKIE = "pv_subject"
SIGN_IN_COOKIE = "pv_centre_signin"
CHALLENGE_COOKIE = "pv_centre_code"
FOR_COOKIE = "pv_centre_for"
CENTRE = "/privacy/centre"
SIGN_IN_COOKIE_SECONDS = 60 * 60
HEADERS = {
    "Cache-Control": "private, no-store",
    "Vary": "Cookie",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}
CODE_FAILED = (
    "That code did not work. A code works once, for a limited time, and stops working "
    "after too many wrong tries. Check the latest message we sent, or ask for a new code."
)
FOREIGN_FORM = "This form expired or did not come from this site. Go back, reload and try again."
STREET_LINES = 4


@dataclass(frozen=True)
class Visitor:
    scope: Scope
    binding: bytes
    """What CSRF tokens are bound to: the session, or the recipient cookie in use."""
    chosen: str | None = None
    """The shipment a postcode visitor came from."""


VisitorHandler = Callable[[Request, Visitor], Awaitable[Response]]


def _text(form: FormData, name: str, limit: int = 2000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def csrf_token(key: bytes, purpose: str, binding: bytes) -> str:
    mac = hmac.new(key, b"centre-csrf\x1f" + purpose.encode() + b"\x1f" + binding, "sha256")
    return mac.hexdigest()


def csrf_valid(key: bytes, purpose: str, binding: bytes, token: str) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(key, purpose, binding), token)


def client_address(request: Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


def _street_lines(raw: str) -> list[str]:
    return [line.strip() for line in raw.replace("\r", "").split("\n") if line.strip()]


def form_changes(street: str, postcode: str, notes: str) -> dict[str, str]:
    """The address form as corrections: street lines without blank ones, joined by
    newlines as ingest stores them; empty notes remove them. The corrections service
    checks the values and changes only those that differ."""
    lines = [line.strip() for line in street.replace("\r", "").split("\n") if line.strip()]
    return {
        "destination.street": "\n".join(lines),
        "destination.postcode": postcode.strip(),
        "destination.notes": notes.strip(),
    }


def install(app: FastAPI, mailer: SmtpSender) -> None:
    templates = Jinja2Templates(directory=str(WEB / "templates"))

    def limiter_of(request: Request) -> subject_access.ClientLimiter:
        state = request.app.state
        limiter: subject_access.ClientLimiter | None = getattr(state, "code_limiter", None)
        if limiter is None:
            vault = vault_of(request)
            limiter = subject_access.ClientLimiter(
                vault.settings.codes_per_client_per_hour, vault.clock
            )
            state.code_limiter = limiter
        return limiter

    def secure(request: Request) -> bool:
        return request.url.scheme == "https"

    def set_cookie(
        response: Response, request: Request, name: str, value: str, max_age: int, path: str
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )

    def clear_cookie(response: Response, request: Request, name: str, path: str) -> None:
        response.delete_cookie(
            name, path=path, httponly=True, samesite="strict", secure=secure(request)
        )

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(
            request,
            f"centre/{name}",
            {"centre": CENTRE, **context},
            status_code=status,
            headers=HEADERS,
        )

    def redirect(target: str) -> Response:
        return RedirectResponse(target, status_code=303, headers=HEADERS)

    def message_page(request: Request, status: int, title: str, message: str) -> Response:
        return render(request, "message.html", status, title=title, message=message)

    # --- who is asking ------------------------------------------------------------

    def identify(request: Request) -> Visitor | None:
        vault = vault_of(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        if token:
            subject_id = subject_access.subject_of(vault=vault, token=token)
            if subject_id is not None:
                return Visitor(
                    subject_access.code_scope(subject_id), subject_access.session_binding(token)
                )
        chosen = request.cookies.get(FOR_COOKIE, "")
        if not chosen:
            return None
        verified = ledger_views.verified_shipments(vault=vault, cookies=request.cookies)
        scope = subject_access.postcode_scope(vault=vault, verified=verified, chosen=chosen)
        if scope is None:
            return None
        recipient_token = request.cookies.get(tracking.cookie_name(chosen), "")
        binding = hashlib.sha256(recipient_token.encode()).digest()
        return Visitor(scope, binding, chosen)

    async def as_visitor(request: Request, handler: VisitorHandler) -> Response:
        visitor = await run_in_threadpool(identify, request)
        if visitor is None:
            response = redirect(f"{CENTRE}/sign-in")
            if request.cookies.get(SESSION_COOKIE):
                clear_cookie(response, request, SESSION_COOKIE, "/")
            return response
        return await handler(request, visitor)

    def csrf_of(request: Request, visitor: Visitor) -> str:
        return csrf_token(vault_of(request).keyring.session_key, "centre", visitor.binding)

    async def checked_form(request: Request, visitor: Visitor) -> FormData | None:
        form = await request.form()
        key = vault_of(request).keyring.session_key
        if not csrf_valid(key, "centre", visitor.binding, _text(form, "csrf", 200)):
            return None
        return form

    def refused(request: Request) -> Response:
        return message_page(request, 403, "Form refused", FOREIGN_FORM)

    # --- the centre ---------------------------------------------------------------

    def centre_context(vault: Vault, visitor: Visitor) -> dict[str, Any]:
        scope = visitor.scope
        lines = subject_access.shipments_in(vault=vault, scope=scope)
        logs = [(line, subject_access.access_log(vault=vault, line=line)) for line in lines]
        with vault.engine.connect() as connection:
            consents = rights.current_consents(connection, scope.subject_id)
        return {
            "scope": scope,
            "shipments": lines,
            "logs": logs,
            "purposes": rights.PURPOSES,
            "purpose_labels": rights.PURPOSE_LABELS,
            "consents": consents,
            "notice_version": rights.notice_version(vault),
        }

    @app.get(CENTRE, include_in_schema=False)
    async def centre(request: Request) -> Response:
        async def handle(request: Request, visitor: Visitor) -> Response:
            vault = vault_of(request)
            context = await run_in_threadpool(centre_context, vault, visitor)
            saved = request.query_params.get("saved", "")[:20]
            return render(
                request,
                "centre.html",
                csrf=csrf_of(request, visitor),
                saved=saved,
                session_minutes=vault.settings.subject_session_seconds // 60,
                **context,
            )

        return await as_visitor(request, handle)

    @app.get(CENTRE + "/for/{tracking_number}", include_in_schema=False)
    async def centre_for(request: Request, tracking_number: str) -> Response:
        """From the tracking page: the centre for this verified parcel."""
        vault = vault_of(request)
        tenant = request.query_params.get("tenant") or None
        back = f"/t/{quote(tracking_number, safe='')}" + (
            f"?tenant={quote(tenant, safe='')}" if tenant else ""
        )
        try:
            resolved = await run_in_threadpool(
                tracking.resolve,
                vault=vault,
                raw_number=tracking_number[:80],
                cookies=request.cookies,
                tenant=tenant,
            )
        except NotFound:
            return redirect(back)
        if resolved.viewer.tier != "recipient":
            return redirect(back)
        response = redirect(CENTRE)
        set_cookie(
            response,
            request,
            FOR_COOKIE,
            resolved.shipment_id,
            vault.settings.recipient_session_seconds,
            CENTRE,
        )
        return response

    # --- sign-in by code ----------------------------------------------------------

    def sign_in_nonce(request: Request) -> tuple[str, bool]:
        nonce = request.cookies.get(SIGN_IN_COOKIE) or ""
        if len(nonce) >= 32:
            return nonce, False
        return secrets.token_urlsafe(32), True

    def sign_in_csrf(request: Request, nonce: str) -> str:
        return csrf_token(vault_of(request).keyring.session_key, "sign-in", nonce.encode())

    def sign_in_page(
        request: Request,
        template: str,
        *,
        status: int = 200,
        error: str | None = None,
        email: str = "",
    ) -> Response:
        nonce, fresh = sign_in_nonce(request)
        vault = vault_of(request)
        response = render(
            request,
            template,
            status,
            csrf=sign_in_csrf(request, nonce),
            error=error,
            email=email,
            mail_configured=mailer.configured,
            code_minutes=vault.settings.code_ttl_seconds // 60,
            max_attempts=vault.settings.code_max_attempts,
        )
        if fresh:
            set_cookie(response, request, SIGN_IN_COOKIE, nonce, SIGN_IN_COOKIE_SECONDS, CENTRE)
        return response

    async def sign_in_form_ok(request: Request) -> FormData | None:
        form = await request.form()
        nonce = request.cookies.get(SIGN_IN_COOKIE) or ""
        key = vault_of(request).keyring.session_key
        if len(nonce) < 32 or not csrf_valid(
            key, "sign-in", nonce.encode(), _text(form, "csrf", 200)
        ):
            return None
        return form

    @app.get(CENTRE + "/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        visitor = await run_in_threadpool(identify, request)
        if visitor is not None and visitor.scope.whole_subject:
            return redirect(CENTRE)
        return sign_in_page(request, "sign_in.html")

    @app.post(CENTRE + "/sign-in", include_in_schema=False)
    async def sign_in_submit(request: Request) -> Response:
        form = await sign_in_form_ok(request)
        if form is None:
            return refused(request)
        vault = vault_of(request)
        email = _text(form, "email", 320)
        try:
            token = await run_in_threadpool(
                subject_access.request_code,
                vault=vault,
                mailer=mailer,
                limiter=limiter_of(request),
                email=email,
                client=client_address(request, vault.settings.trust_forwarded_for),
            )
        except MailNotConfigured:
            return sign_in_page(request, "sign_in.html", status=503)
        except InvalidInput:
            message = (
                "Enter the e-mail address your parcels were sent with, like name@example.org. "
                "We cannot send codes by text message: if we only have your phone number, "
                "use the postcode on your parcel's tracking page instead."
            )
            return sign_in_page(request, "sign_in.html", status=422, error=message, email=email)
        except Locked as exc:
            minutes = max(1, round(exc.retry_after_seconds / 60))
            message = f"Too many codes asked for from here. Try again in about {minutes} minutes."
            response = sign_in_page(request, "sign_in.html", status=429, error=message)
            response.headers["Retry-After"] = str(exc.retry_after_seconds)
            return response
        response = redirect(CENTRE + "/sign-in/code")
        set_cookie(
            response, request, CHALLENGE_COOKIE, token, vault.settings.code_ttl_seconds, CENTRE
        )
        return response

    @app.get(CENTRE + "/sign-in/code", include_in_schema=False)
    async def code_form(request: Request) -> Response:
        if not request.cookies.get(CHALLENGE_COOKIE):
            return redirect(CENTRE + "/sign-in")
        return sign_in_page(request, "code.html")

    @app.post(CENTRE + "/sign-in/code", include_in_schema=False)
    async def code_submit(request: Request) -> Response:
        form = await sign_in_form_ok(request)
        if form is None:
            return refused(request)
        vault = vault_of(request)
        challenge = request.cookies.get(CHALLENGE_COOKIE, "")
        try:
            session = await run_in_threadpool(
                subject_access.confirm,
                vault=vault,
                token=challenge,
                code=_text(form, "code", 16),
            )
        except subject_access.CodeRejected:
            return sign_in_page(request, "code.html", status=401, error=CODE_FAILED)
        response = redirect(CENTRE)
        set_cookie(
            response,
            request,
            SESSION_COOKIE,
            session.token,
            vault.settings.subject_session_seconds,
            "/",
        )
        clear_cookie(response, request, CHALLENGE_COOKIE, CENTRE)
        clear_cookie(response, request, SIGN_IN_COOKIE, CENTRE)
        return response

    @app.post(CENTRE + "/sign-out", include_in_schema=False)
    async def sign_out(request: Request) -> Response:
        async def handle(request: Request, visitor: Visitor) -> Response:
            if await checked_form(request, visitor) is None:
                return refused(request)
            token = request.cookies.get(SESSION_COOKIE, "")
            if token:
                await run_in_threadpool(
                    subject_access.end_session, vault=vault_of(request), token=token
                )
            response = redirect("/privacy")
            clear_cookie(response, request, SESSION_COOKIE, "/")
            clear_cookie(response, request, FOR_COOKIE, CENTRE)
            return response

        return await as_visitor(request, handle)

    # --- consents -----------------------------------------------------------------

    @app.post(CENTRE + "/consents", include_in_schema=False)
    async def consents(request: Request) -> Response:
        async def handle(request: Request, visitor: Visitor) -> Response:
            form = await checked_form(request, visitor)
            if form is None:
                return refused(request)
            purpose = _text(form, "purpose", 40)
            granted = _text(form, "granted", 8)
            if purpose not in rights.PURPOSES or granted not in ("yes", "no"):
                return message_page(
                    request, 422, "Not saved", "Choose one of the listed purposes and on or off."
                )
            try:
                await run_in_threadpool(
                    rights.set_consent,
                    vault=vault_of(request),
                    subject_id=visitor.scope.subject_id,
                    purpose=purpose,
                    granted=granted == "yes",
                    shipment_id=visitor.chosen,
                )
            except Conflict as exc:
                return message_page(request, 409, "Not saved", _conflict_text(exc))
            return redirect(f"{CENTRE}?saved=consents#consents")

        return await as_visitor(request, handle)

    def needs_code(request: Request) -> Response:
        return message_page(
            request,
            403,
            "Sign in with a code first",
            "This covers every parcel sent to you, so we ask for a code sent to your e-mail "
            "address first: whoever sent a parcel knows its postcode too. "
            "Sign in at /privacy/centre/sign-in.",
        )

    # --- download my data ---------------------------------------------------------

    @app.post(CENTRE + "/export", include_in_schema=False)
    async def export(request: Request) -> Response:
        async def handle(request: Request, visitor: Visitor) -> Response:
            form = await checked_form(request, visitor)
            if form is None:
                return refused(request)
            kind = _text(form, "format", 8)
            if kind not in ("json", "html"):
                return message_page(request, 422, "Choose a format", "Choose JSON or HTML.")
            vault = vault_of(request)
            try:
                data = await run_in_threadpool(
                    rights.export_subject,
                    vault=vault,
                    subject_id=visitor.scope.subject_id,
                    only_shipment=None if visitor.scope.whole_subject else visitor.chosen,
                )
            except NotFound:
                return message_page(request, 404, "Not found", "We hold no data about you.")
            body = (
                orjson.dumps(data, option=orjson.OPT_INDENT_2)
                if kind == "json"
                else (await run_in_threadpool(rights.render_export_html, data)).encode()
            )
            day = vault.clock().strftime("%Y-%m-%d")
            media = "application/json" if kind == "json" else "text/html; charset=utf-8"
            return Response(
                body,
                media_type=media,
                headers={
                    **HEADERS,
                    "Content-Disposition": f'attachment; filename="my-data-{day}.{kind}"',
                },
            )

        return await as_visitor(request, handle)

    # --- correct my address ---------------------------------------------------------

    def address_page(
        request: Request,
        visitor: Visitor,
        line: subject_access.ShipmentLine,
        *,
        status: int = 200,
        values: dict[str, str],
        problems: dict[str, str] | None = None,
        error: str | None = None,
    ) -> Response:
        return render(
            request,
            "address.html",
            status,
            csrf=csrf_of(request, visitor),
            line=line,
            values=values,
            problems=problems or {},
            error=error,
            street_lines=STREET_LINES,
        )

    def current_address(vault: Vault, line: subject_access.ShipmentLine) -> dict[str, str]:
        view = subject_access.recipient_view(vault=vault, line=line)
        return {
            name: view.personal.get(name, "")
            for name in ("destination.street", "destination.postcode", "destination.notes")
        }

    @app.get(CENTRE + "/shipments/{shipment_id}/address", include_in_schema=False)
    async def address_form(request: Request, shipment_id: str) -> Response:
        async def handle(request: Request, visitor: Visitor) -> Response:
            vault = vault_of(request)
            try:
                line = await run_in_threadpool(
                    subject_access.shipment_in,
                    vault=vault,
                    scope=visitor.scope,
                    shipment_id=shipment_id[:40],
                )
            except NotFound:
                return message_page(request, 404, "Not found", "No such parcel of yours.")
            current = await run_in_threadpool(current_address, vault, line)
            return address_page(request, visitor, line, values=current)

        return await as_visitor(request, handle)

    @app.post(CENTRE + "/shipments/{shipment_id}/address", include_in_schema=False)
    async def address_submit(request: Request, shipment_id: str) -> Response:
        async def handle(request: Request, visitor: Visitor) -> Response:
            form = await checked_form(request, visitor)
            if form is None:
                return refused(request)
            vault = vault_of(request)
            try:
                line = await run_in_threadpool(
                    subject_access.shipment_in,
                    vault=vault,
                    scope=visitor.scope,
                    shipment_id=shipment_id[:40],
                )
            except NotFound:
                return message_page(request, 404, "Not found", "No such parcel of yours.")
            street = _text(form, "street", 2000)
            postcode = _text(form, "postcode", 100)
            notes = _text(form, "notes", 1000)
            typed = {
                "destination.street": street,
                "destination.postcode": postcode,
                "destination.notes": notes,
            }
            try:
                done = await run_in_threadpool(
                    rights.correct_address,
                    vault=vault,
                    shipment_id=line.id,
                    changes=form_changes(street, postcode, notes),
                )
            except Conflict as exc:
                return address_page(
                    request, visitor, line, status=409, values=typed, error=_conflict_text(exc)
                )
            except InvalidInput as exc:
                found: dict[str, str] = {}
                for problem in exc.problems:
                    name = str(problem.loc[0]) if problem.loc else "street"
                    found.setdefault(name, problem.message[:1].upper() + problem.message[1:] + ".")
                return address_page(
                    request, visitor, line, status=422, values=typed, problems=found
                )
            if not done.fields:
                return redirect(f"{CENTRE}?saved=unchanged#shipments")
            return redirect(f"{CENTRE}?saved=address#shipments")

        return await as_visitor(request, handle)

    # --- erase my data ------------------------------------------------------------

    @app.get(CENTRE + "/erase", include_in_schema=False)
    async def erase_confirm(request: Request) -> Response:
        async def handle(request: Request, visitor: Visitor) -> Response:
            if not visitor.scope.whole_subject:
                return needs_code(request)
            lines = await run_in_threadpool(
                subject_access.shipments_in, vault=vault_of(request), scope=visitor.scope
            )
            return render(
                request, "erase.html", csrf=csrf_of(request, visitor), shipments=lines, error=None
            )

        return await as_visitor(request, handle)

    @app.post(CENTRE + "/erase", include_in_schema=False)
    async def erase(request: Request) -> Response:
        async def handle(request: Request, visitor: Visitor) -> Response:
            form = await checked_form(request, visitor)
            if form is None:
                return refused(request)
            if not visitor.scope.whole_subject:
                return needs_code(request)
            vault = vault_of(request)
            subject_id = visitor.scope.subject_id
            try:
                receipt = await run_in_threadpool(
                    rights.erase_subject, vault=vault, subject_id=subject_id
                )
            except NotFound:
                return message_page(request, 410, "Already erased", "Your data was erased.")
            except Conflict as exc:
                lines = await run_in_threadpool(
                    subject_access.shipments_in, vault=vault, scope=visitor.scope
                )
                return render(
                    request,
                    "erase.html",
                    409,
                    csrf=csrf_of(request, visitor),
                    shipments=lines,
                    error=_conflict_text(exc),
                )
            response = redirect(f"{CENTRE}/erased/{quote(str(receipt.id), safe='')}")
            clear_cookie(response, request, SESSION_COOKIE, "/")
            clear_cookie(response, request, FOR_COOKIE, CENTRE)
            return response

        return await as_visitor(request, handle)

    @app.get(CENTRE + "/erased/{receipt_id}", include_in_schema=False)
    async def erased(request: Request, receipt_id: str) -> Response:
        try:
            details = await run_in_threadpool(
                rights.receipt_details, vault=vault_of(request), receipt_id=receipt_id[:64]
            )
        except NotFound:
            return message_page(request, 404, "Not found", "No erasure receipt has that id.")
        return render(request, "receipt.html", receipt_id=receipt_id[:64], details=details)


def _conflict_text(exc: Conflict) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
