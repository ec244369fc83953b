"""Revision 0008 stores every sealed value under the shipment it belongs to: an
existing database (values keyed by record only, as revision 0007 left them) moves over
with every ciphertext intact and each proof under its shipment, on SQLite and
PostgreSQL, and the move can be undone."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select, text

from parcelvault.adapters.db import migrate
from parcelvault.adapters.db.tables import events, sealed_fields
from parcelvault.services import erasure, export
from parcelvault.services.ingest import event_row_id
from parcelvault.services.vault import Vault
from tests.conftest import Canaries
from tests.integration.test_erasure import _ship, _subject


def _downgrade(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _stored(engine: Engine) -> set[tuple[Any, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(select(sealed_fields)).all()
    return {tuple(row) for row in rows}


def _columns(engine: Engine) -> list[str]:
    return [column["name"] for column in inspect(engine).get_columns("sealed_fields")]


def _export(vault: Vault, subject: str) -> dict[str, Any]:
    data = export.export_subject(vault=vault, subject_id=subject, requested_by="subject")
    return {s["tracking_number"]: s for s in data["shipments"]}


def test_upgrading_puts_every_value_under_its_shipment_and_keeps_every_ciphertext(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    delivered = [_ship(any_client, any_shop_key, canaries) for _ in range(3)]
    under_way = _ship(any_client, any_shop_key, canaries, delivered=False)
    subject = _subject(any_vault, canaries)
    before = _stored(any_vault.engine)
    exported = _export(any_vault, subject)

    _downgrade(any_vault.engine, "0007")
    assert _columns(any_vault.engine) == ["record_id", "field", "subject_id", "value"]
    with any_vault.engine.connect() as connection:
        old_rows = connection.execute(
            text("SELECT record_id, field, subject_id, value FROM sealed_fields")
        ).all()
    assert {tuple(row) for row in old_rows} == {row[1:] for row in before}

    migrate.upgrade(any_vault.engine)

    assert _columns(any_vault.engine)[:3] == ["shipment_id", "record_id", "field"]
    assert _stored(any_vault.engine) == before
    with any_vault.engine.connect() as connection:
        proofs = connection.execute(
            select(events.c.shipment_id, events.c.tenant_id, events.c.event_id).where(
                events.c.has_proof.is_(True)
            )
        ).all()
    assert len(proofs) == len(delivered)
    owners = {record: shipment for shipment, record, *_ in before}
    for shipment_id, tenant_id, event_id in proofs:
        assert owners[event_row_id(tenant_id, event_id)] == shipment_id
    after = _export(any_vault, subject)
    assert after == exported
    for number in delivered:
        proof = after[number]["events"][0]["proof_of_delivery"]
        assert proof["proof.received_by"] == canaries.received_by
    assert after[under_way]["personal_data"]["recipient.name"] == canaries.name


def test_after_the_upgrade_erasure_finds_every_value_through_the_shipments(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    _ship(any_client, any_shop_key, canaries)
    _ship(any_client, any_shop_key, canaries, delivered=False)
    _downgrade(any_vault.engine, "0007")
    migrate.upgrade(any_vault.engine)

    erasure.erase_subject(
        vault=any_vault, subject_id=_subject(any_vault, canaries), requested_by="subject"
    )

    assert _stored(any_vault.engine) == set()


def test_a_value_no_shipment_claims_is_kept_under_its_own_record_id(any_vault: Vault) -> None:
    _downgrade(any_vault.engine, "0007")
    with any_vault.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sealed_fields (record_id, field, subject_id, value) "
                "VALUES ('f' || 'f', 'recipient.name', 's', :value)"
            ),
            {"value": b"\x01sealed"},
        )
    migrate.upgrade(any_vault.engine)
    assert _stored(any_vault.engine) == {("ff", "ff", "recipient.name", "s", b"\x01sealed")}


def test_on_sqlite_the_table_has_no_rowid_and_no_other_index(vault: Vault) -> None:
    _downgrade(vault.engine, "0007")
    migrate.upgrade(vault.engine)
    with vault.engine.connect() as connection:
        ddl = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'sealed_fields'"
        ).scalar_one()
        indexes = connection.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sealed_fields'"
            " AND sql IS NOT NULL"
        ).scalar_one()
    assert "WITHOUT ROWID" in ddl
    assert "PRIMARY KEY (shipment_id, record_id, field)" in ddl
    assert indexes == 0
