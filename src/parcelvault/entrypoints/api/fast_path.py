"""A cache front for the hottest request: `GET /api/v1/track/{tn}` at the public tier.

It answers from the versioned cache of public views (see `public_cache`) without
going through routing and parameter parsing, after the same resolve step as the
route: one indexed query for the shipment's id and version, and the cookie check.
Everything else passes through to the application unchanged: requests with a query
string, recipients with a valid cookie, unknown numbers (so errors keep their one
shape), and cache misses, which the route fills.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from parcelvault.domain.errors import DomainError
from parcelvault.entrypoints.api.public_cache import VersionedCache, matches
from parcelvault.services import tracking
from parcelvault.services.vault import Vault

PREFIX = "/api/v1/track/"


def _cookies(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's cookies, parsed exactly as the application parses them."""
    value = _header(headers, b"cookie")
    return cookie_parser(value) if value else {}


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


class PublicLookupFastPath:
    def __init__(
        self, app: ASGIApp, vault: Vault, cache: VersionedCache[tuple[bytes, str]]
    ) -> None:
        self.app = app
        self.vault = vault
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not path.startswith(PREFIX)
            or scope.get("query_string")
        ):
            await self.app(scope, receive, send)
            return
        number = unquote(path[len(PREFIX) :])
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if "/" in number or not number:
            await self.app(scope, receive, send)
            return
        try:
            resolved = tracking.resolve(
                vault=self.vault, raw_number=number, cookies=_cookies(headers)
            )
        except DomainError:
            await self.app(scope, receive, send)
            return
        cached = (
            self.cache.get("json", resolved.shipment_id, resolved.version)
            if resolved.viewer.tier == "public"
            else None
        )
        if cached is None:
            await self.app(scope, receive, send)
            return
        body, etag = cached
        if_none_match = _header(headers, b"if-none-match")
        not_modified = if_none_match is not None and matches(etag, if_none_match)
        response_headers = [
            (b"etag", etag.encode()),
            (b"cache-control", b"public, max-age=30"),
            (b"vary", b"Cookie"),
        ]
        if not_modified:
            await send({"type": "http.response.start", "status": 304, "headers": response_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        response_headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
