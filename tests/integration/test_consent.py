"""Consent per data subject and purpose, on SQLite and PostgreSQL: opt-in by default,
giving and withdrawing, an append-only history, one ledger entry per change and none
for a resubmission, and refusals of unknown purposes, subjects and stale notices."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import select

from parcelvault.adapters.db.tables import consents, ledger_entries, ledger_queue, shipments
from parcelvault.domain.errors import Conflict, Gone, InvalidInput, NotFound
from parcelvault.ledger import log as ledger_log
from parcelvault.services import consent, erasure
from parcelvault.services.vault import Vault
from tests.conftest import Canaries
from tests.integration.subject_helpers import give, plant


def queued_consents(vault: Vault) -> list[dict[str, object]]:
    with vault.engine.connect() as connection:
        rows = connection.execute(
            select(ledger_queue.c.body).where(ledger_queue.c.kind == "consent")
        ).scalars()
        return [orjson.loads(body) for body in rows]


def test_a_subject_has_consented_to_nothing_until_they_opt_in(any_vault: Vault) -> None:
    _, _, subject = plant(any_vault)

    with any_vault.engine.connect() as connection:
        assert consent.current(connection, subject) == {}
        assert consent.history(connection, subject) == []
        assert not any(consent.has_consent(connection, subject, p) for p in consent.PURPOSES)


def test_giving_and_withdrawing_are_recorded_newest_first(any_vault: Vault) -> None:
    _, shipment, subject = plant(any_vault)

    given = consent.set_consent(
        vault=any_vault,
        subject_id=subject,
        purpose="notify_email",
        granted=True,
        notice_version=consent.current_notice_version(any_vault.policy),
        source="recipient_api",
        shipment_id=shipment,
    )
    with any_vault.engine.connect() as connection:
        assert consent.has_consent(connection, subject, "notify_email")
        assert not consent.has_consent(connection, subject, "notify_sms")
    withdrawn = give(any_vault, subject, "notify_email", granted=False)

    assert given.changed
    assert given.granted
    assert withdrawn.changed
    assert not withdrawn.granted
    with any_vault.engine.connect() as connection:
        assert not consent.has_consent(connection, subject, "notify_email")
        latest = consent.current(connection, subject)
        history = consent.history(connection, subject)
    assert set(latest) == {"notify_email"}
    assert latest["notify_email"].granted is False
    assert [(c.purpose, c.granted) for c in history] == [
        ("notify_email", False),
        ("notify_email", True),
    ]
    assert history[1].shipment_id == shipment
    assert history[0].shipment_id is None
    assert history[1].notice_version == any_vault.policy.digest[:12]
    assert history[1].at.tzinfo is not None


def test_a_resubmission_changes_nothing_and_queues_no_entry(any_vault: Vault) -> None:
    _, _, subject = plant(any_vault)

    first = give(any_vault, subject, "analytics")
    again = give(any_vault, subject, "analytics")
    never_given = give(any_vault, subject, "notify_sms", granted=False)

    assert first.changed
    assert not again.changed
    assert again.consent == first.consent
    assert not never_given.changed
    assert never_given.consent is None
    assert not never_given.granted
    with any_vault.engine.connect() as connection:
        assert len(consent.history(connection, subject)) == 1
    assert len(queued_consents(any_vault)) == 1


def test_concurrent_double_submits_record_one_change(any_vault: Vault) -> None:
    _, _, subject = plant(any_vault)
    results: list[bool] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            results.append(give(any_vault, subject, "share_live_location").changed)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(results) == [False] * 5 + [True]
    with any_vault.engine.connect() as connection:
        assert len(consent.history(connection, subject)) == 1


def test_consent_belongs_to_the_person_not_the_parcel(any_vault: Vault) -> None:
    _, _, subject = plant(any_vault)
    _, _, same_person = plant(any_vault)
    other_person = shipment_for_other_person(any_vault)

    give(any_vault, subject, "notify_email")

    assert same_person == subject
    with any_vault.engine.connect() as connection:
        assert consent.has_consent(connection, same_person, "notify_email")
        assert not consent.has_consent(connection, other_person, "notify_email")


def shipment_for_other_person(vault: Vault) -> str:
    _, _, subject = plant(
        vault,
        recipient={"name": "Someone Else", "email": "else@example.org"},
    )
    return subject


def test_giving_again_under_a_newer_notice_is_a_change(any_vault: Vault) -> None:
    _, _, subject = plant(any_vault)
    give(any_vault, subject, "notify_email")

    any_vault.policy = dataclasses.replace(any_vault.policy, digest="ab" * 32)
    stale = consent.current_notice_version(any_vault.policy)
    regiven = give(any_vault, subject, "notify_email")

    assert regiven.changed
    assert stale == "ab" * 6
    with any_vault.engine.connect() as connection:
        versions = [c.notice_version for c in consent.history(connection, subject)]
    assert versions[0] == "ab" * 6
    assert versions[1] != versions[0]


def test_consent_against_an_outdated_notice_is_refused_but_withdrawal_is_not(
    any_vault: Vault,
) -> None:
    _, _, subject = plant(any_vault)
    shown = consent.current_notice_version(any_vault.policy)
    give(any_vault, subject, "analytics")
    any_vault.policy = dataclasses.replace(any_vault.policy, digest="cd" * 32)

    with pytest.raises(Conflict, match="notice has changed"):
        consent.set_consent(
            vault=any_vault,
            subject_id=subject,
            purpose="notify_sms",
            granted=True,
            notice_version=shown,
            source="recipient_api",
        )
    withdrawn = consent.set_consent(
        vault=any_vault,
        subject_id=subject,
        purpose="analytics",
        granted=False,
        notice_version=shown,
        source="recipient_api",
    )

    assert withdrawn.changed
    assert not withdrawn.granted
    with any_vault.engine.connect() as connection:
        assert [c.purpose for c in consent.history(connection, subject)] == [
            "analytics",
            "analytics",
        ]


@pytest.mark.parametrize("purpose", ["marketing", "", "notify_email ", "ANALYTICS"])
def test_an_unknown_purpose_is_invalid_input_naming_the_field(
    any_vault: Vault, purpose: str
) -> None:
    _, _, subject = plant(any_vault)

    with pytest.raises(InvalidInput) as raised:
        give(any_vault, subject, purpose)
    with any_vault.engine.connect() as connection, pytest.raises(InvalidInput) as asked:
        consent.has_consent(connection, subject, purpose)

    assert [p.loc for p in raised.value.problems] == [("purpose",)]
    assert [p.loc for p in asked.value.problems] == [("purpose",)]
    assert queued_consents(any_vault) == []


def test_a_malformed_notice_version_or_granted_flag_is_invalid_input(any_vault: Vault) -> None:
    _, _, subject = plant(any_vault)

    with pytest.raises(InvalidInput) as raised:
        consent.set_consent(
            vault=any_vault,
            subject_id=subject,
            purpose="analytics",
            granted="yes",  # type: ignore[arg-type]
            notice_version="not a version!",
            source="recipient_api",
        )

    assert [p.loc for p in raised.value.problems] == [("granted",), ("notice_version",)]


def test_an_unknown_subject_or_someone_elses_shipment_is_not_found(any_vault: Vault) -> None:
    _, _, subject = plant(any_vault)
    _, others_shipment, _ = plant(
        any_vault, recipient={"name": "Other Person", "email": "other@example.org"}
    )

    with pytest.raises(NotFound):
        give(any_vault, "f" * 64, "analytics")
    with pytest.raises(NotFound):
        consent.set_consent(
            vault=any_vault,
            subject_id=subject,
            purpose="analytics",
            granted=True,
            notice_version=consent.current_notice_version(any_vault.policy),
            source="recipient_api",
            shipment_id=others_shipment,
        )
    assert queued_consents(any_vault) == []


def test_history_rows_are_never_rewritten(any_vault: Vault) -> None:
    _, _, subject = plant(any_vault)
    give(any_vault, subject, "notify_sms")
    with any_vault.engine.connect() as connection:
        before = [tuple(r) for r in connection.execute(select(consents).order_by(consents.c.id))]

    give(any_vault, subject, "notify_sms", granted=False)
    give(any_vault, subject, "notify_sms")
    with any_vault.engine.connect() as connection:
        after = [tuple(r) for r in connection.execute(select(consents).order_by(consents.c.id))]

    assert after[: len(before)] == before
    assert [row[3] for row in after] == [True, False, True]


def test_every_change_becomes_a_sequenced_ledger_entry_naming_no_one(
    any_vault: Vault, canaries: Canaries
) -> None:
    _, _, subject = plant(
        any_vault,
        destination={
            "country": "GB",
            "city": "Leeds",
            "postcode": canaries.postcode,
            "street": [canaries.street],
        },
        recipient={"name": canaries.name, "email": canaries.email, "phone": canaries.phone},
    )
    give(any_vault, subject, "notify_email")
    give(any_vault, subject, "notify_email")
    give(any_vault, subject, "notify_sms")
    give(any_vault, subject, "notify_email", granted=False)

    placed = ledger_log.sequence(any_vault.engine, now=datetime.now(UTC))

    with any_vault.engine.connect() as connection:
        entries = connection.execute(
            select(ledger_entries)
            .where(ledger_entries.c.kind == "consent")
            .order_by(ledger_entries.c.idx)
        ).all()
        history = list(reversed(consent.history(connection, subject)))
        left = connection.execute(select(ledger_queue).where(ledger_queue.c.kind == "consent"))
        assert left.all() == []
    assert placed >= 3
    assert len(entries) == 3
    assert [e.idx for e in entries] == list(range(entries[0].idx, entries[0].idx + 3))
    bodies = [orjson.loads(e.body) for e in entries]
    assert [(b["purpose"], b["granted"]) for b in bodies] == [
        ("notify_email", True),
        ("notify_sms", True),
        ("notify_email", False),
    ]
    assert [b["consent"] for b in bodies] == [c.id for c in history]
    assert {b["subject"] for b in bodies} == {subject}
    assert [c.id for c in history] == [b["consent"] for b in bodies]
    with any_vault.engine.connect() as connection:
        placed_at = dict(connection.execute(select(consents.c.id, consents.c.ledger_index)).all())
    assert [placed_at[c.id] for c in history] == [e.idx for e in entries]
    for entry, body in zip(entries, bodies, strict=True):
        assert set(body) == {
            "consent",
            "subject",
            "purpose",
            "granted",
            "notice_version",
            "source",
            "at",
        }
        assert body["subject"] == subject
        assert canaries.found_in(entry.body) == []
        assert entry.leaf_hash == ledger_log.entry_leaf_hash("consent", entry.salt, entry.body)


def test_an_erased_subject_can_no_longer_give_consents_and_keeps_none(any_vault: Vault) -> None:
    _, shipment, subject = plant(any_vault)
    give(any_vault, subject, "notify_email")
    erasure.erase_subject(
        vault=any_vault, subject_id=subject, requested_by="operator", clean_up=False
    )

    with pytest.raises(Gone):
        give(any_vault, subject, "analytics")
    erasure.reconcile(vault=any_vault)
    with any_vault.engine.connect() as connection:
        tombstone = connection.execute(
            select(shipments.c.subject_id).where(shipments.c.id == shipment)
        ).scalar_one()
        assert consent.history(connection, subject) == []
    with pytest.raises(Gone):
        give(any_vault, tombstone, "analytics")
    with pytest.raises(NotFound):
        give(any_vault, subject, "analytics")
