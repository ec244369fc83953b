"""Shared fixtures: a fresh key folder and database per test, on SQLite or PostgreSQL.

PostgreSQL tests use the server on 127.0.0.1:5432 (trust auth) and create and drop a
database of their own. If that server is not reachable they fail, not skip: the
suite is only green when both databases were really exercised.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from parcelvault.adapters.db import migrate
from parcelvault.crypto.keyring import create_key_folder
from parcelvault.entrypoints.api.app import create_app
from parcelvault.services import tenants
from parcelvault.services.vault import Vault, build
from parcelvault.settings import Settings

PG_ADMIN_DSN = os.environ.get("PARCELVAULT_TEST_PG", "host=127.0.0.1 port=5432 dbname=postgres")
PG_URL_BASE = "postgresql+psycopg://127.0.0.1:5432/"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    create_key_folder(folder)
    return folder


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'parcelvault.db'}"


def _pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            PG_ADMIN_DSN, autocommit=True, user=os.environ.get("PGUSER", "postgres")
        )
    except psycopg.OperationalError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"pv_test_{secrets.token_hex(6)}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL_BASE}{name}?user=postgres"
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


def make_vault(database_url: str, key_dir: Path, **overrides: Any) -> Vault:
    settings = Settings(
        database_url=database_url, key_dir=key_dir, public_rate_limit=0, **overrides
    )
    vault = build(settings)
    migrate.upgrade(vault.engine)
    return vault


@pytest.fixture
def vault(sqlite_url: str, key_dir: Path) -> Iterator[Vault]:
    """A vault on SQLite, for tests whose subject is not the database."""
    built = make_vault(sqlite_url, key_dir)
    yield built
    built.engine.dispose()


@pytest.fixture
def any_vault(database_url: str, key_dir: Path) -> Iterator[Vault]:
    """The same test on SQLite and on PostgreSQL."""
    built = make_vault(database_url, key_dir)
    yield built
    built.engine.dispose()


@pytest.fixture
def client(vault: Vault) -> Iterator[TestClient]:
    with TestClient(create_app(vault=vault)) as test_client:
        yield test_client


@pytest.fixture
def any_client(any_vault: Vault) -> Iterator[TestClient]:
    with TestClient(create_app(vault=any_vault)) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def shop_key(vault: Vault) -> str:
    return tenants.create_tenant(vault=vault, name="shop-a")


@pytest.fixture
def any_shop_key(any_vault: Vault) -> str:
    return tenants.create_tenant(vault=any_vault, name="shop-a")


def shipment_payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "reference": "order-1001",
        "origin": {"country": "GB", "city": "London", "postcode": "E1 6AN"},
        "destination": {
            "country": "GB",
            "region": "West Yorkshire",
            "city": "Leeds",
            "postcode": "LS1 4AP",
            "street": ["12 Example Street"],
        },
        "recipient": {"name": "Jane Doe", "email": "jane@example.org", "phone": "+44 7700 900123"},
        "promised_date": "2026-12-02",
    }
    body.update(overrides)
    return body


class Canaries:
    """Unique strings planted as personal values; none may ever appear where the
    policy does not show them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(4).upper()
        self.name = f"Zyx{tag} Canaryname"
        self.street = f"{tag} Canarystreet Road"
        self.email = f"canary{tag.lower()}@canary-mail.example"
        self.phone = f"+44 7700 9{int(tag, 16) % 100000:05d}"
        self.postcode = f"CN{int(tag, 16) % 90 + 10} 9ZZ"
        self.received_by = f"Receiver{tag}"
        self.signature = f"sig-{tag}-canary"

    def values(self) -> dict[str, str]:
        return {
            "name": self.name,
            "street": self.street,
            "email": self.email,
            "phone": self.phone,
            "postcode": self.postcode,
            "received_by": self.received_by,
            "signature": self.signature,
        }

    def shipment(self, **overrides: Any) -> dict[str, Any]:
        return shipment_payload(
            destination={
                "country": "GB",
                "city": "Leeds",
                "postcode": self.postcode,
                "street": [self.street],
            },
            recipient={"name": self.name, "email": self.email, "phone": self.phone},
            **overrides,
        )

    def found_in(self, blob: bytes | str) -> list[str]:
        data = blob if isinstance(blob, bytes) else blob.encode()
        variants = {
            key: {value.encode(), value.lower().encode(), value.upper().encode()}
            for key, value in self.values().items()
        }
        variants["postcode"].add(self.postcode.replace(" ", "").encode())
        variants["phone"].add("".join(c for c in self.phone if c.isdigit()).encode())
        return [key for key, forms in variants.items() if any(form in data for form in forms)]


@pytest.fixture
def canaries() -> Canaries:
    return Canaries()
