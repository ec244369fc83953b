"""Caches keyed by (kind, shipment id, version).

Every write that changes what a view of a shipment shows (an event, and later a
correction, an erasure or a key rotation) advances the shipment's `version` in the
database. A reader that has just read the version and finds an entry for it holds
data that is still correct, in every process, with no invalidation messages.
Entries may also carry a maximum age, which bounds how long anything stays in
memory after it stopped being served.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class VersionedCache(Generic[T]):
    def __init__(
        self,
        max_entries: int = 20_000,
        max_age_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str, int], tuple[float, T]] = OrderedDict()

    def get(self, kind: str, shipment_id: str, version: int) -> T | None:
        key = (kind, shipment_id, version)
        found = self._entries.get(key)
        if found is None:
            return None
        stored_at, value = found
        if self.max_age_seconds is not None and self.clock() - stored_at > self.max_age_seconds:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def put(self, kind: str, shipment_id: str, version: int, value: T) -> None:
        key = (kind, shipment_id, version)
        self._entries[key] = (self.clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
