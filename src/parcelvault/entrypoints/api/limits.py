"""Pure-ASGI guards that run before routing: request body size and per-address rate
limits on public endpoints. They answer with problem+json themselves."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parcelvault.entrypoints.api.problems import MEDIA_TYPE, PROBLEM_BASE


async def _send_problem(
    send: Send,
    status: int,
    kind: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    body = orjson.dumps(
        {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail}
    )
    raw_headers = [
        (b"content-type", MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole streamed body, or None as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class BodyLimit:
    """413 for bodies over `max_bytes`, whether declared by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._too_large(send)
                    return
                break
        else:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await _read_body(receive, self.max_bytes)
                if body is None:
                    await self._too_large(send)
                    return
                await self.app(scope, replaying(body, receive), send)
                return
        await self.app(scope, receive, send)

    async def _too_large(self, send: Send) -> None:
        await _send_problem(
            send,
            413,
            "too-large",
            "Body too large",
            f"Bodies are limited to {self.max_bytes} bytes.",
        )


class TokenBuckets:
    """Per-key token buckets: `rate` requests a minute, bursts up to `rate`."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 if allowed, else seconds until the next token."""
        now = self.clock()
        per_second = self.rate / 60.0
        tokens, last = self._buckets.get(key, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / per_second

    def _prune(self, now: float) -> None:
        if len(self._buckets) > 50_000:
            full_after = 60.0
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


PUBLIC_PREFIXES = ("/api/v1/track/", "/t/", "/t?", "/staff/login")


class PublicRateLimit:
    """Rate limit per client address on the public lookup paths (per process)."""

    def __init__(self, app: ASGIApp, rate: int, trust_forwarded_for: bool) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate) if rate > 0 else None
        self.trust_forwarded_for = trust_forwarded_for

    def _client(self, scope: Scope) -> str:
        if self.trust_forwarded_for:
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    forwarded: bytes = value
                    return forwarded.decode("latin-1").split(",")[0].strip()
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(PUBLIC_PREFIXES) or path == "/t":
            wait = self.buckets.take(self._client(scope))
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                await _send_problem(
                    send,
                    429,
                    "rate-limited",
                    "Too many requests",
                    "Public lookups are rate limited per address; try again shortly.",
                    {"Retry-After": retry},
                )
                return
        await self.app(scope, receive, send)
