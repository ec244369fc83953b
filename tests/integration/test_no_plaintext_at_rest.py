"""Canary scans of what is at rest: the raw SQLite file and its WAL, and a pg_dump."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer


def _load_canaries(client: TestClient, key: str, canaries: Canaries) -> str:
    created = client.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    assert created.status_code == 201, created.text
    number = created.json()["tracking_number"]
    delivered = {
        "event_id": f"pod-{number}",
        "time": "2026-01-05T14:02:00+01:00",
        "status": "delivered",
        "proof": {
            "received_by": canaries.received_by,
            "signature": canaries.signature,
            "geo": {"lat": 53.801, "lon": -1.549},
        },
    }
    posted = client.post(f"/api/v1/shipments/{number}/events", json=delivered, headers=bearer(key))
    assert posted.status_code == 201, posted.text
    return number


def _raw_bytes(database_file: Path) -> bytes:
    return b"".join(
        path.read_bytes()
        for path in database_file.parent.iterdir()
        if path.name.startswith(database_file.name)
    )


def test_the_raw_sqlite_file_and_its_wal_hold_no_canary(
    client: TestClient, shop_key: str, vault: Vault, canaries: Canaries
) -> None:
    number = _load_canaries(client, shop_key, canaries)
    merchant = client.get(f"/api/v1/shipments/{number}", headers=bearer(shop_key)).json()
    assert merchant["recipient"]["name"] == canaries.name, "the canaries must be stored"
    database = Path(make_url(vault.settings.database_url).database or "")
    assert Path(f"{database}-wal").exists()
    assert canaries.found_in(_raw_bytes(database)) == []


def test_a_postgresql_dump_holds_no_canary(
    postgres_url: str, key_dir: Path, canaries: Canaries
) -> None:
    from parcelvault.entrypoints.api.app import create_app
    from parcelvault.services import tenants
    from tests.conftest import make_vault

    vault = make_vault(postgres_url, key_dir)
    key = tenants.create_tenant(vault=vault, name="shop-pg")
    with TestClient(create_app(vault=vault)) as client:
        number = _load_canaries(client, key, canaries)
        merchant = client.get(f"/api/v1/shipments/{number}", headers=bearer(key)).json()
    assert merchant["destination"]["street"] == [canaries.street]
    vault.engine.dispose()
    url = make_url(postgres_url)
    dump = subprocess.run(
        ["pg_dump", "-h", url.host or "127.0.0.1", "-U", "postgres", url.database or ""],
        check=True,
        capture_output=True,
    ).stdout
    assert number.encode() in dump, "the dump must contain the shipment"
    assert canaries.found_in(dump) == []


def test_the_canary_scan_finds_a_planted_value_in_any_spelling(canaries: Canaries) -> None:
    blob = f"xx{canaries.name.upper()}yy{canaries.postcode.replace(' ', '')}".encode()
    assert canaries.found_in(blob) == ["name", "postcode"]
