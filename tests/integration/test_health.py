"""`GET /healthz`: the database, and whether the ledger keeps up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from parcelvault.adapters.db.engine import make_engine
from parcelvault.ledger import log
from parcelvault.services.vault import Vault
from tests.conftest import bearer, shipment_payload

LEDGER_LAG_LIMIT_SECONDS = 60.0  # the default of PARCELVAULT_HEALTH_LEDGER_LAG_SECONDS


def scan(event_id: str) -> dict[str, object]:
    time = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    return {"event_id": event_id, "time": time, "status": "in_transit"}


def test_a_service_with_nothing_waiting_is_ok_and_never_cached(client: TestClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["ledger"]["oldest_waiting_seconds"] is None
    assert body["ledger"]["latest_checkpoint_age_seconds"] is None


def test_an_entry_waiting_past_the_limit_makes_the_service_degraded_until_appended(
    client: TestClient, vault: Vault, shop_key: str
) -> None:
    created = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(shop_key))
    number = created.json()["tracking_number"]
    posted = client.post(
        f"/api/v1/shipments/{number}/events", json=scan("ev-1"), headers=bearer(shop_key)
    )
    assert posted.status_code == 201
    fresh = client.get("/healthz").json()
    assert fresh["status"] == "ok"
    assert 0 <= fresh["ledger"]["oldest_waiting_seconds"] < LEDGER_LAG_LIMIT_SECONDS

    real_clock = vault.clock
    vault.clock = lambda: real_clock() + timedelta(seconds=LEDGER_LAG_LIMIT_SECONDS + 5)
    late = client.get("/healthz")
    assert late.status_code == 200  # still serving: degraded, not down
    assert late.json()["status"] == "degraded"
    assert late.json()["ledger"]["oldest_waiting_seconds"] > LEDGER_LAG_LIMIT_SECONDS

    log.sequence(vault.engine, now=vault.clock())
    caught_up = client.get("/healthz").json()
    assert caught_up["status"] == "ok"
    assert caught_up["ledger"]["oldest_waiting_seconds"] is None


def test_a_database_that_does_not_answer_is_a_503_problem(client: TestClient, vault: Vault) -> None:
    vault.engine.dispose()
    vault.engine = make_engine("sqlite:////nonexistent-folder/parcelvault.db")
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"] == "/problems/unavailable"


def test_the_lag_limit_is_a_setting_and_the_report_names_it(
    client: TestClient, vault: Vault, shop_key: str
) -> None:
    vault.settings = vault.settings.model_copy(update={"health_ledger_lag_seconds": 5.0})
    created = client.post("/api/v1/shipments", json=shipment_payload(), headers=bearer(shop_key))
    assert created.status_code == 201
    real_clock = vault.clock
    vault.clock = lambda: real_clock() + timedelta(seconds=10)
    body = client.get("/healthz").json()
    assert body["ledger"]["lag_limit_seconds"] == 5.0
    assert body["status"] == "degraded"
