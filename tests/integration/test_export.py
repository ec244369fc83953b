"""Export of a data subject's data (JSON and page), and the `subjects` commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from parcelvault.adapters.db.tables import access_records, consents, shipments
from parcelvault.domain.errors import NotFound
from parcelvault.entrypoints.api.app import create_app
from parcelvault.entrypoints.cli import app as cli
from parcelvault.ledger import log as ledger_log
from parcelvault.services import corrections, erasure, export, holds, tenants
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer, make_vault
from tests.integration.subject_helpers import give, plant
from tests.integration.test_erasure import _ship, _subject


def _count_access(vault: Vault) -> int:
    with vault.engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(access_records)).scalar_one()
        )


def test_the_export_holds_every_shipment_event_personal_field_consent_and_access(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    other_key = tenants.create_tenant(vault=any_vault, name="shop-b")
    first = _ship(any_client, any_shop_key, canaries)
    second = _ship(any_client, other_key, canaries, delivered=False)
    subject = _subject(any_vault, canaries)
    seen = any_client.get(f"/api/v1/shipments/{first}", headers=bearer(any_shop_key))
    assert seen.status_code == 200
    with any_vault.engine.begin() as connection:
        connection.execute(
            insert(consents).values(
                subject_id=subject,
                purpose="notify_email",
                granted=True,
                notice_version="abc123",
                source="recipient",
                at=datetime(2026, 1, 2, tzinfo=UTC),
            )
        )

    data = export.export_subject(vault=any_vault, subject_id=subject, requested_by="subject")

    assert data["schema"] == "parcelvault-export/1"
    assert data["erased"] is False
    by_number = {s["tracking_number"]: s for s in data["shipments"]}
    assert set(by_number) == {first, second}
    assert by_number[second]["tenant"] == "shop-b"
    personal = by_number[first]["personal_data"]
    assert personal["recipient.name"] == canaries.name
    assert personal["recipient.email"] == canaries.email
    assert personal["destination.postcode"] == canaries.postcode
    proof = by_number[first]["events"][0]["proof_of_delivery"]
    assert proof["proof.received_by"] == canaries.received_by
    assert data["consents"] == [
        {
            "purpose": "notify_email",
            "granted": True,
            "notice_version": "abc123",
            "source": "recipient",
            "at": "2026-01-02T00:00:00+00:00",
            "ledger_index": None,
        }
    ]
    # Creating each shipment showed it to its shop; then shop-a looked again.
    assert [a["who"] for a in data["access_records"]] == ["shop-a", "shop-b", "shop-a"]
    assert "recipient.name" in data["access_records"][0]["fields"]


def test_a_persons_own_export_is_not_an_access_but_an_operators_is_one_per_shipment(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    _ship(client, shop_key, canaries)
    _ship(client, shop_key, canaries)
    subject = _subject(vault, canaries)
    before = _count_access(vault)
    assert before == 2
    export.export_subject(vault=vault, subject_id=subject, requested_by="subject")
    assert _count_access(vault) == before
    export.export_subject(vault=vault, subject_id=subject, requested_by="operator:dpo")
    assert _count_access(vault) == before + 2
    with vault.engine.connect() as connection:
        rows = connection.execute(
            select(access_records).where(access_records.c.actor_kind == "operator")
        ).all()
    assert {(r.actor_id, r.purpose) for r in rows} == {("dpo", "subject_request")}


def test_the_export_page_escapes_what_people_typed(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    canaries.name = "<script>alert(1)</script> Zyx"
    _ship(client, shop_key, canaries)
    page = export.render_html(
        export.export_subject(
            vault=vault, subject_id=_subject(vault, canaries), requested_by="subject"
        )
    )
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Zyx" in page
    assert canaries.street in page


def test_the_export_lists_corrections_and_consents_with_their_ledger_entries(
    vault: Vault,
) -> None:
    _, shipment, subject = plant(vault)
    give(vault, subject, "notify_email")
    corrections.correct_address(
        vault=vault,
        shipment_id=shipment,
        changes={"destination.street": "3 Corrected Lane"},
        source="recipient_api",
    )
    before = export.export_subject(vault=vault, subject_id=subject, requested_by="subject")
    ledger_log.sequence(vault.engine, now=vault.clock())

    data = export.export_subject(vault=vault, subject_id=subject, requested_by="subject")

    [waiting] = before["shipments"][0]["address_corrections"]
    [placed] = data["shipments"][0]["address_corrections"]
    assert waiting["ledger_index"] is None
    assert placed["fields"] == ["destination.street"]
    assert placed["source"] == "recipient_api"
    assert isinstance(placed["ledger_index"], int)
    assert data["shipments"][0]["personal_data"]["destination.street"] == "3 Corrected Lane"
    [consent] = data["consents"]
    assert before["consents"][0]["ledger_index"] is None
    assert isinstance(consent["ledger_index"], int)
    assert consent["ledger_index"] != placed["ledger_index"]
    page = export.render_html(data)
    assert "Address corrections" in page
    assert f"#{placed['ledger_index']}" in page
    assert f"#{consent['ledger_index']}" in page


def test_after_erasure_there_is_nothing_personal_to_export(
    any_client: TestClient, any_vault: Vault, any_shop_key: str, canaries: Canaries
) -> None:
    _ship(any_client, any_shop_key, canaries)
    subject = _subject(any_vault, canaries)
    erasure.erase_subject(vault=any_vault, subject_id=subject, requested_by="subject")
    with pytest.raises(NotFound):
        export.export_subject(vault=any_vault, subject_id=subject, requested_by="subject")


def test_an_export_between_shredding_and_clean_up_shows_the_shipments_as_erased(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    _ship(client, shop_key, canaries)
    subject = _subject(vault, canaries)
    erasure.erase_subject(vault=vault, subject_id=subject, requested_by="x", clean_up=False)
    data = export.export_subject(vault=vault, subject_id=subject, requested_by="subject")
    assert data["erased"] is True
    assert data["shipments"][0]["erased"] is True
    assert canaries.found_in(json.dumps(data)) == []


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", f"sqlite:///{tmp_path / 'pv.db'}")
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["init"]).exit_code == 0
    return tmp_path


def _loaded(env: Path, canaries: Canaries) -> tuple[Vault, str]:
    vault = make_vault(f"sqlite:///{env / 'pv.db'}", env / "keys")
    key = tenants.create_tenant(vault=vault, name="shop-a")
    with TestClient(create_app(vault=vault)) as client:
        number = _ship(client, key, canaries)
    return vault, number


def test_subjects_export_prints_the_json_export_and_records_the_access(
    env: Path, canaries: Canaries
) -> None:
    vault, number = _loaded(env, canaries)
    before = _count_access(vault)
    result = CliRunner().invoke(
        cli, ["subjects", "export", "--email", canaries.email, "--by", "dpo"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["shipments"][0]["tracking_number"] == number
    assert data["shipments"][0]["personal_data"]["recipient.name"] == canaries.name
    assert _count_access(vault) == before + 1


def test_subjects_export_writes_a_private_page_file(env: Path, canaries: Canaries) -> None:
    _loaded(env, canaries)
    target = env / "export.html"
    result = CliRunner().invoke(
        cli,
        ["subjects", "export", "--email", canaries.email, "--format", "html", "-o", str(target)],
    )
    assert result.exit_code == 0, result.output
    assert canaries.name in target.read_text()
    assert target.stat().st_mode & 0o077 == 0


def test_subjects_erase_prints_a_receipt_and_refuses_a_second_time(
    env: Path, canaries: Canaries
) -> None:
    _loaded(env, canaries)
    runner = CliRunner()
    result = runner.invoke(cli, ["subjects", "erase", "--email", canaries.email, "--yes"])
    assert result.exit_code == 0, result.output
    assert "erased: receipt" in result.output
    assert "1 shipment(s)" in result.output
    again = runner.invoke(cli, ["subjects", "erase", "--email", canaries.email, "--yes"])
    assert again.exit_code == 1
    assert "no such person" in again.output
    receipt_id = result.output.split("receipt ", 1)[1].split(",", 1)[0]
    shown = runner.invoke(cli, ["subjects", "receipt", receipt_id])
    assert json.loads(shown.stdout)["shipments"] == 1


def test_subjects_erase_names_the_legal_hold_that_blocks_it(env: Path, canaries: Canaries) -> None:
    vault, number = _loaded(env, canaries)
    holds.place(vault=vault, raw_number=number, case_ref="CASE-77", placed_by="legal")
    result = CliRunner().invoke(cli, ["subjects", "erase", "--email", canaries.email, "--yes"])
    assert result.exit_code == 1
    assert "CASE-77" in result.output
    assert canaries.found_in(result.output) == []


def test_subjects_commands_want_exactly_one_contact(env: Path) -> None:
    runner = CliRunner()
    neither = runner.invoke(cli, ["subjects", "export"])
    assert neither.exit_code == 1
    assert "exactly one of --email or --phone" in neither.output
    both = runner.invoke(cli, ["subjects", "erase", "--email", "a@b.c", "--phone", "1", "--yes"])
    assert both.exit_code == 1
    unknown = runner.invoke(cli, ["subjects", "export", "--email", "nobody@example.org"])
    assert unknown.exit_code == 1
    assert "no shipments for this person" in unknown.output


def test_an_export_for_one_shipments_recipient_leaves_out_the_persons_other_shipments(
    client: TestClient, vault: Vault, shop_key: str, canaries: Canaries
) -> None:
    first = _ship(client, shop_key, canaries)
    _ship(client, shop_key, canaries)
    with vault.engine.connect() as connection:
        shipment_id = connection.execute(
            select(shipments.c.id).where(shipments.c.tracking_number == first)
        ).scalar_one()
    data = export.export_subject(
        vault=vault,
        subject_id=_subject(vault, canaries),
        requested_by="subject",
        only_shipment=shipment_id,
    )
    assert [s["tracking_number"] for s in data["shipments"]] == [first]
    assert len(data["access_records"]) == 1


def test_keys_reconcile_reports_what_it_found_and_changes_nothing_when_in_line(
    env: Path, canaries: Canaries
) -> None:
    vault, _ = _loaded(env, canaries)
    result = CliRunner().invoke(cli, ["keys", "reconcile"])
    assert result.exit_code == 0, result.output
    assert "keys destroyed again: 0" in result.output
    assert "erasures recovered from the key store: 0" in result.output
    assert vault.keystore.get_one(_subject(vault, canaries)) is not None
