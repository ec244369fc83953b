"""RFC 9457 problem details: every error the HTTP layer returns, in one shape.

Domain errors are mapped to status codes here and nowhere else. Problem bodies never
echo submitted values (they could be personal); they name the place and the rule.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from parcelvault.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidInput,
    Locked,
    NotFound,
    Unauthenticated,
)
from parcelvault.services.tracking import WrongPostcode

PROBLEM_BASE = "/problems/"
MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("parcelvault.api")


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return Response(
        orjson.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=all_headers
    )


def not_found() -> Response:
    return problem(404, "not-found", "Not found", "Nothing is known under this address.")


LOC_PART_MAX = 64


def _loc(parts: tuple[Any, ...] | list[Any]) -> list[str | int]:
    trimmed = list(parts)
    if trimmed and trimmed[0] in ("body", "query", "path", "header", "cookie"):
        trimmed = trimmed[1:]
    return _place(trimmed)


def _place(parts: tuple[Any, ...] | list[Any]) -> list[str | int]:
    """Where a problem is. An unknown key is named so typos surface, but cut short: it
    is text the client sent, and a problem body stays small."""
    return [p if isinstance(p, int) else _shortened(str(p), LOC_PART_MAX) for p in parts]


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _not_json(error: Any) -> bool:
    """A body that reached validation as raw bytes: it was not sent as JSON."""
    return tuple(error.get("loc", ())) == ("body",) and isinstance(error.get("input"), bytes)


def _validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    return [{"loc": _loc(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in errors]


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        broken = [e for e in errors if e.get("type") == "json_invalid"]
        if broken:
            return problem(400, "malformed-json", "Malformed JSON", "The body is not valid JSON.")
        if any(_not_json(e) for e in errors):
            return problem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                "Send the body as JSON with `Content-Type: application/json`.",
            )
        return problem(
            422,
            "invalid-input",
            "Invalid input",
            f"{len(errors)} problem(s) with the request; see `errors`.",
            errors=_validation_errors(errors),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return not_found()
        return problem(
            exc.status_code,
            f"http-{exc.status_code}",
            str(exc.detail),
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> Response:
        return domain_problem(exc)

    @app.exception_handler(WrongPostcode)
    async def _wrong(_: Request, exc: WrongPostcode) -> Response:
        return problem(
            403,
            "postcode-mismatch",
            "Postcode does not match",
            "Check the destination postcode on your shipping notice.",
            remaining_attempts=exc.remaining_attempts,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # The type and traceback identify the bug; the message may quote input, so it
        # is left out of the log (database errors already hide their parameters).
        log.error(
            "unhandled error",
            extra={
                "path": request.url.path,
                "error": type(exc).__name__,
                "traceback": "".join(traceback.format_tb(exc.__traceback__)),
            },
        )
        return problem(500, "internal", "Internal error", "The error was logged.")


def domain_problem(exc: DomainError) -> Response:
    if isinstance(exc, InvalidInput):
        return problem(
            422,
            "invalid-input",
            "Invalid input",
            f"{len(exc.problems)} problem(s) with the request; see `errors`.",
            errors=[{"loc": _place(p.loc), "message": p.message} for p in exc.problems],
        )
    if isinstance(exc, NotFound):
        return not_found()
    if isinstance(exc, Conflict):
        return problem(409, "conflict", "Conflict", exc.detail)
    if isinstance(exc, Gone):
        return problem(410, "erased", "Erased", exc.detail)
    if isinstance(exc, Locked):
        return problem(
            429,
            "locked",
            "Too many attempts",
            "Verification is locked for a while after repeated wrong answers.",
            headers={"Retry-After": str(exc.retry_after_seconds)},
            retry_after=exc.retry_after_seconds,
        )
    if isinstance(exc, Unauthenticated):
        return problem(
            401,
            "unauthenticated",
            "Unauthenticated",
            "Send `Authorization: Bearer <API key>`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if isinstance(exc, Forbidden):
        return problem(403, "forbidden", "Forbidden", str(exc))
    return problem(400, "bad-request", "Bad request", str(exc))
