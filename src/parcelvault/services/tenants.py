"""Tenants and their API keys. A key is shown once; only its SHA-256 is stored (the
key carries 256 random bits, so a fast hash is enough to make the stored form useless)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from parcelvault.adapters.db import store
from parcelvault.domain.errors import (
    Conflict,
    FieldProblem,
    Forbidden,
    InvalidInput,
    Unauthenticated,
)
from parcelvault.services.vault import Vault

SCOPES = ("shipments:write", "events:write", "shipments:read")
KEY_PREFIX = "pv_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}$")


@dataclass(frozen=True)
class Principal:
    tenant_id: int
    tenant_name: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the scope {scope}")


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _check_scopes(scopes: tuple[str, ...]) -> None:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput(
            [FieldProblem(("scopes",), f"choose from {', '.join(SCOPES)}; got {unknown or 'none'}")]
        )


def create_tenant(*, vault: Vault, name: str, scopes: tuple[str, ...] = SCOPES) -> str:
    """Create a tenant and its first API key; returns the key (shown once)."""
    if not _NAME.match(name):
        raise InvalidInput(
            [FieldProblem(("name",), "2-64 characters: lower-case letters, digits, '-' and '_'")]
        )
    _check_scopes(scopes)
    now = vault.clock()
    try:
        with vault.engine.begin() as connection:
            tenant_id = store.insert_tenant(connection, name, now)
            return _issue_key(connection, tenant_id, scopes, now)
    except IntegrityError as exc:
        raise Conflict(f"a tenant named {name!r} exists already") from exc


def issue_key(*, vault: Vault, name: str, scopes: tuple[str, ...] = SCOPES) -> str:
    _check_scopes(scopes)
    with vault.engine.begin() as connection:
        tenant = store.tenant_by_name(connection, name)
        if tenant is None:
            raise InvalidInput([FieldProblem(("name",), f"no tenant named {name!r}")])
        return _issue_key(connection, tenant.id, scopes, vault.clock())


def _issue_key(
    connection: Connection, tenant_id: int, scopes: tuple[str, ...], now: datetime
) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    store.insert_api_key(
        connection,
        tenant_id=tenant_id,
        key_hash=hash_key(key),
        prefix=key[:10],
        scopes=" ".join(scopes),
        now=now,
    )
    return key


def authenticate(*, vault: Vault, key: str) -> Principal:
    with vault.engine.connect() as connection:
        row = store.api_key_owner(connection, hash_key(key))
    if row is None:
        raise Unauthenticated("unknown or revoked API key")
    return Principal(
        tenant_id=row.tenant_id, tenant_name=row.name, scopes=frozenset(row.scopes.split())
    )


def tenant_principal(*, vault: Vault, name: str) -> Principal:
    """All scopes of a tenant, for operator commands run on the server itself."""
    with vault.engine.connect() as connection:
        row = store.tenant_by_name(connection, name)
    if row is None:
        raise InvalidInput([FieldProblem(("tenant",), f"no tenant named {name!r}")])
    return Principal(tenant_id=row.id, tenant_name=row.name, scopes=frozenset(SCOPES))
