"""HTTP caching of public views: rendered bytes and ETags are kept per (shipment,
version) in a `VersionedCache` (see `services.view_cache`). Only the public tier is
kept as rendered bytes; nothing personal is ever cached in readable form."""

from __future__ import annotations

from parcelvault.services.view_cache import VersionedCache

__all__ = ["VersionedCache", "matches"]


def matches(etag: str, if_none_match: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110, 13.1.2): `W/` is ignored, so
    a proxy that weakens the ETag (gzip does) still gets 304s; `*` matches anything."""
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in [tag.removeprefix("W/") for tag in tags]
