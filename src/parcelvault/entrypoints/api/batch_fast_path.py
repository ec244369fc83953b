"""A front for `POST /api/v1/events/batch` that takes the clean case, a batch that
is stored whole, in one step: the raw body is validated once by pydantic's own JSON
parser (no `json.loads`, no second pass over every item), and authentication,
validation, checks and the write happen in a single worker-thread hop.

Anything else passes through to the route with the body replayed: a body that is not
JSON, a missing or bad key, any wire or rule problem. The route then answers exactly
as it always has, so every error keeps its one shape and lists every bad item.
Nothing is written before the route runs: a refused batch is rolled back whole.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parcelvault.adapters.wire import BatchEventIn
from parcelvault.domain.errors import DomainError
from parcelvault.entrypoints.api.limits import replaying
from parcelvault.services import ingest, operations
from parcelvault.services.tenants import authenticate
from parcelvault.services.vault import Vault

PATH = "/api/v1/events/batch"


class _WholeBatch(BaseModel):
    """The envelope of `routes.EventBatch`, with its items validated in the same pass."""

    model_config = ConfigDict(extra="forbid")
    events: Annotated[list[BatchEventIn], Field(min_length=1, max_length=1000)]


WHOLE_BATCH: TypeAdapter[_WholeBatch] = TypeAdapter(_WholeBatch)

RESPONSE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"private, no-store"),
    (b"vary", b"Cookie, Authorization"),
]


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


def is_json(content_type: str | None) -> bool:
    """Whether the route would read the body as JSON (application/json or */*+json)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and False if the client went away before sending it."""
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


class BatchFastPath:
    def __init__(self, app: ASGIApp, vault: Vault) -> None:
        self.app = app
        self.vault = vault
        self.text_stamps = vault.engine.dialect.name == "sqlite"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("path") != PATH:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        scheme, _, key = (_header(headers, b"authorization") or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or not is_json(_header(headers, b"content-type")):
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        if not complete:
            return  # the client went away before sending its batch: nobody to answer
        answer = await run_in_threadpool(self._store, key, body)
        if answer is None:
            await self.app(scope, replaying(body, receive), send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*RESPONSE_HEADERS, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    def _store(self, key: str, body: bytes) -> bytes | None:
        """The response body of a batch stored whole, or None for the route to answer."""
        try:
            caller = authenticate(vault=self.vault, key=key)
            caller.require("events:write")
            batch = WHOLE_BATCH.validate_json(body)
            # Flattened straight from the wire models, as the importer does: no domain
            # objects for events without a proof, and none of it in the write turn.
            flat_event, text_stamps = ingest.flat_event, self.text_stamps
            events = [
                flat_event(
                    index,
                    item.tracking_number,
                    item,
                    item.proof.to_domain() if item.proof is not None else None,
                    text_stamps=text_stamps,
                )
                for index, item in enumerate(batch.events)
            ]
            result = operations.ingest_flat_events(
                vault=self.vault, principal=caller, events=events
            )
        except (DomainError, ValidationError):
            return None
        return orjson.dumps({"accepted": result.accepted, "duplicates": result.duplicates})
