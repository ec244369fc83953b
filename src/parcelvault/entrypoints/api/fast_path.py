"""A front for the hottest request, `GET /api/v1/track/{tn}`, ahead of routing and
parameter parsing.

After the same resolve step as the route (one indexed query for the shipment's id
and version, and the cookie check) it answers the public tier from the versioned
cache of rendered public views, and a verified recipient with a view assembled from
the cached sealed snapshot (opened per request, never kept in readable form).
Everything else passes through to the application unchanged: requests with a query
string, unknown numbers (so errors keep their one shape), and public cache misses,
which the route fills.
"""

from __future__ import annotations

from urllib.parse import unquote

import orjson
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from parcelvault.domain.errors import DomainError
from parcelvault.entrypoints.api.public_cache import VersionedCache, matches
from parcelvault.entrypoints.api.views_json import view_to_json
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


PRIVATE_HEADERS = [
    (b"cache-control", b"private, no-store"),
    (b"vary", b"Cookie, Authorization"),
    (b"content-type", b"application/json"),
]


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
        if resolved.viewer.tier != "public":
            try:
                view = tracking.view_of(vault=self.vault, resolved=resolved)
            except Exception:  # the route answers again, with its error handling
                await self.app(scope, receive, send)
                return
            await self._private(send, view)
            return
        cached = self.cache.get("json", resolved.shipment_id, resolved.version)
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

    async def _private(self, send: Send, view: tracking.TrackingView) -> None:
        """The recipient's own view, built afresh from the sealed snapshot; never kept."""
        body = orjson.dumps(view_to_json(view))
        headers = [*PRIVATE_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
