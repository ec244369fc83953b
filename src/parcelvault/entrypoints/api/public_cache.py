"""Rendered public views, keyed by (shipment id, version).

Every write that changes what a public view shows (an event, an erasure) advances
the shipment's `version` in the database, so a lookup that finds a cached entry for
the version it just read serves bytes that are still correct, in every process, with
no invalidation messages. Only the public tier is cached; anything personal to a
verified recipient or a tenant is built afresh and never kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class VersionedCache(Generic[T]):
    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, int], T] = OrderedDict()

    def get(self, kind: str, shipment_id: str, version: int) -> T | None:
        key = (kind, shipment_id, version)
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, kind: str, shipment_id: str, version: int, value: T) -> None:
        self._entries[(kind, shipment_id, version)] = value
        self._entries.move_to_end((kind, shipment_id, version))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def matches(etag: str, if_none_match: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110, 13.1.2): `W/` is ignored, so
    a proxy that weakens the ETag (gzip does) still gets 304s; `*` matches anything."""
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in [tag.removeprefix("W/") for tag in tags]
