"""The transparency ledger over HTTP: the signed checkpoint, entries, proofs checked the
way an outsider would, who may read entry bodies, bad ranges, /transparency, and the
sequencer that `serve` runs in the background."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from parcelvault.adapters.db.tables import access_records, ledger_entries, shipments
from parcelvault.entrypoints.api import schemas
from parcelvault.entrypoints.api.app import create_app
from parcelvault.ledger import log, merkle
from parcelvault.ledger.keys import create_signer, load_signer
from parcelvault.ledger.note import (
    Checkpoint,
    Signer,
    format_verifier_key,
    open_note,
    parse_checkpoint,
)
from parcelvault.services import tenants
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, bearer, make_vault

ORIGIN = "ledger.test/parcelvault"


def minutes_ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def scan(event_id: str, minutes: float, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "time": minutes_ago(minutes),
        "status": "in_transit",
        "location": {"country": "GB", "city": "Leeds"},
        **extra,
    }


def delivered(canaries: Canaries) -> dict[str, Any]:
    return {
        "event_id": "pod",
        "time": minutes_ago(5),
        "status": "delivered",
        "location": {"country": "GB", "city": "Leeds"},
        "proof": {
            "received_by": canaries.received_by,
            "signature": canaries.signature,
            "photo": "pod/1.jpg",
            "geo": {"lat": 53.8, "lon": -1.55},
        },
    }


def ship(client: TestClient, key: str, canaries: Canaries, scans: int = 2) -> str:
    created = client.post("/api/v1/shipments", json=canaries.shipment(), headers=bearer(key))
    assert created.status_code == 201, created.text
    number: str = created.json()["tracking_number"]
    for n in range(scans):
        body = scan(f"{number}-{n}", 60 - n)
        posted = client.post(f"/api/v1/shipments/{number}/events", json=body, headers=bearer(key))
        assert posted.status_code == 201, posted.text
    return number


def recipient_cookie(client: TestClient, number: str, postcode: str) -> dict[str, str]:
    verified = client.post(f"/api/v1/track/{number}/verify", json={"postcode": postcode})
    assert verified.status_code == 200, verified.text
    client.cookies.clear()
    (header,) = verified.headers.get_list("set-cookie")
    name, _, value = header.split(";", 1)[0].partition("=")
    return {"Cookie": f"{name}={value}"}


def signed(client: TestClient, signer: Signer) -> tuple[str, Checkpoint]:
    """The latest checkpoint over HTTP, opened with the verifier key as an outsider would."""
    response = client.get("/ledger/checkpoint")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    text, names = open_note(response.text, [signer.verifier])
    assert names == [ORIGIN]
    return response.text, parse_checkpoint(text)


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def is_problem(response: Any) -> bool:
    body = response.json()
    return response.headers["content-type"].startswith("application/problem+json") and (
        body["status"] == response.status_code
    )


@dataclass
class Ledger:
    vault: Vault
    client: TestClient
    key: str
    signer: Signer
    canaries: Canaries
    number: str

    def sequence_and_sign(self) -> Checkpoint:
        log.sequence(self.vault.engine, now=self.vault.clock())
        log.checkpoint(self.vault.engine, signer=self.signer, now=self.vault.clock())
        return signed(self.client, self.signer)[1]

    def shipment_id(self, number: str | None = None) -> str:
        with self.vault.engine.connect() as connection:
            found: str = connection.execute(
                select(shipments.c.id).where(shipments.c.tracking_number == (number or self.number))
            ).scalar_one()
        return found

    def indexes(self, kind: str) -> list[int]:
        with self.vault.engine.connect() as connection:
            rows = connection.execute(
                select(ledger_entries.c.idx)
                .where(ledger_entries.c.kind == kind)
                .order_by(ledger_entries.c.idx)
            ).all()
        return [row.idx for row in rows]


def seeded(vault: Vault, client: TestClient, key: str, key_dir: Path) -> Ledger:
    create_signer(key_dir, ORIGIN)
    canaries = Canaries()
    number = ship(client, key, canaries)
    posted = client.post(
        f"/api/v1/shipments/{number}/events", json=delivered(canaries), headers=bearer(key)
    )
    assert posted.status_code == 201, posted.text
    assert client.get(f"/api/v1/shipments/{number}", headers=bearer(key)).status_code == 200
    return Ledger(vault, client, key, load_signer(key_dir), canaries, number)


@pytest.fixture
def ledger(vault: Vault, client: TestClient, shop_key: str, key_dir: Path) -> Ledger:
    return seeded(vault, client, shop_key, key_dir)


@pytest.fixture
def any_ledger(
    any_vault: Vault, any_client: TestClient, any_shop_key: str, key_dir: Path
) -> Ledger:
    return seeded(any_vault, any_client, any_shop_key, key_dir)


# --- the checkpoint ----------------------------------------------------------------------


def test_before_the_first_checkpoint_the_checkpoint_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/ledger/checkpoint")
    assert response.status_code == 404
    assert is_problem(response)


def test_the_checkpoint_is_a_signed_note_of_the_whole_tree(any_ledger: Ledger) -> None:
    checkpoint = any_ledger.sequence_and_sign()
    with any_ledger.vault.engine.connect() as connection:
        leaves = [
            row.leaf_hash
            for row in connection.execute(
                select(ledger_entries.c.leaf_hash).order_by(ledger_entries.c.idx)
            )
        ]
    assert checkpoint.origin == ORIGIN
    assert checkpoint.size == len(leaves) > 0
    assert checkpoint.root == merkle.root_from_leaf_hashes(leaves)


# --- proofs, checked against the signed root ---------------------------------------------


def test_every_entry_is_proven_to_be_in_the_signed_tree(any_ledger: Ledger) -> None:
    checkpoint = any_ledger.sequence_and_sign()
    client = any_ledger.client
    for index in range(checkpoint.size):
        entry = client.get(f"/api/v1/ledger/entries/{index}")
        assert entry.status_code == 200, entry.text
        schemas.LedgerEntryOut.model_validate(entry.json())
        proof = client.get(f"/api/v1/ledger/proof/inclusion?index={index}&size={checkpoint.size}")
        assert proof.status_code == 200, proof.text
        body = schemas.InclusionProofOut.model_validate(proof.json())
        assert (body.index, body.size) == (index, checkpoint.size)
        assert body.leaf_hash == entry.json()["leaf_hash"]
        assert b64(body.root) == checkpoint.root
        merkle.verify_inclusion(
            b64(body.leaf_hash),
            index,
            checkpoint.size,
            [b64(item) for item in body.proof],
            checkpoint.root,
        )


def test_a_grown_ledger_is_proven_consistent_with_the_earlier_checkpoint(
    any_ledger: Ledger,
) -> None:
    first = any_ledger.sequence_and_sign()
    ship(any_ledger.client, any_ledger.key, Canaries(), scans=5)
    second = any_ledger.sequence_and_sign()
    assert second.size > first.size
    response = any_ledger.client.get(
        f"/api/v1/ledger/proof/consistency?from={first.size}&to={second.size}"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    schemas.ConsistencyProofOut.model_validate(body)
    assert (body["from"], body["to"]) == (first.size, second.size)
    assert (b64(body["root_from"]), b64(body["root_to"])) == (first.root, second.root)
    merkle.verify_consistency(
        first.size, second.size, [b64(p) for p in body["proof"]], first.root, second.root
    )


def test_an_entry_is_provable_in_an_older_tree_that_the_signed_root_vouches_for(
    ledger: Ledger,
) -> None:
    first = ledger.sequence_and_sign()
    ship(ledger.client, ledger.key, Canaries(), scans=3)
    second = ledger.sequence_and_sign()
    old = ledger.client.get(f"/api/v1/ledger/proof/consistency?from={first.size}&to={second.size}")
    old_root = b64(old.json()["root_from"])
    merkle.verify_consistency(
        first.size, second.size, [b64(p) for p in old.json()["proof"]], old_root, second.root
    )
    proof = ledger.client.get(f"/api/v1/ledger/proof/inclusion?index=0&size={first.size}").json()
    merkle.verify_inclusion(
        b64(proof["leaf_hash"]), 0, first.size, [b64(p) for p in proof["proof"]], old_root
    )


def test_a_consistency_proof_between_equal_sizes_is_empty(ledger: Ledger) -> None:
    checkpoint = ledger.sequence_and_sign()
    size = checkpoint.size
    body = ledger.client.get(f"/api/v1/ledger/proof/consistency?from={size}&to={size}").json()
    assert body["proof"] == []
    merkle.verify_consistency(size, size, [], b64(body["root_from"]), checkpoint.root)


def test_an_unknown_entry_is_a_404_problem(ledger: Ledger) -> None:
    checkpoint = ledger.sequence_and_sign()
    response = ledger.client.get(f"/api/v1/ledger/entries/{checkpoint.size + 5}")
    assert response.status_code == 404
    assert is_problem(response)


def bad_requests(size: int) -> list[str]:
    huge = str(2**63)
    return [
        "/api/v1/ledger/entries/-1",
        "/api/v1/ledger/entries/abc",
        "/api/v1/ledger/entries/1.5",
        f"/api/v1/ledger/entries/{huge}",
        f"/api/v1/ledger/entries/{10**40}",
        "/api/v1/ledger/proof/inclusion",
        "/api/v1/ledger/proof/inclusion?index=0",
        f"/api/v1/ledger/proof/inclusion?size={size}",
        f"/api/v1/ledger/proof/inclusion?index=-1&size={size}",
        f"/api/v1/ledger/proof/inclusion?index=x&size={size}",
        "/api/v1/ledger/proof/inclusion?index=0&size=1e3",
        f"/api/v1/ledger/proof/inclusion?index={size}&size={size}",
        f"/api/v1/ledger/proof/inclusion?index={size + 1}&size={size}",
        f"/api/v1/ledger/proof/inclusion?index=0&size={size + 1}",
        "/api/v1/ledger/proof/inclusion?index=0&size=0",
        f"/api/v1/ledger/proof/inclusion?index=0&size={huge}",
        f"/api/v1/ledger/proof/inclusion?index={huge}&size={size}",
        "/api/v1/ledger/proof/consistency",
        "/api/v1/ledger/proof/consistency?from=1",
        f"/api/v1/ledger/proof/consistency?to={size}",
        f"/api/v1/ledger/proof/consistency?from=0&to={size}",
        "/api/v1/ledger/proof/consistency?from=0&to=0",
        f"/api/v1/ledger/proof/consistency?from=-1&to={size}",
        f"/api/v1/ledger/proof/consistency?from={size}&to={size - 1}",
        f"/api/v1/ledger/proof/consistency?from=1&to={size + 1}",
        f"/api/v1/ledger/proof/consistency?from=one&to={size}",
        f"/api/v1/ledger/proof/consistency?from=1&to={huge}",
        f"/api/v1/ledger/proof/consistency?from=1&to={10**40}",
    ]


def test_every_bad_index_or_range_is_a_4xx_problem_never_a_500(any_ledger: Ledger) -> None:
    checkpoint = any_ledger.sequence_and_sign()
    assert checkpoint.size > 2
    for url in bad_requests(checkpoint.size):
        response = any_ledger.client.get(url)
        assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
        assert is_problem(response), url


def test_a_range_problem_names_the_parameter_and_the_signed_size(ledger: Ledger) -> None:
    size = ledger.sequence_and_sign().size
    beyond = ledger.client.get(f"/api/v1/ledger/proof/inclusion?index=0&size={size + 1}")
    assert beyond.status_code == 422
    assert beyond.json()["errors"] == [
        {
            "loc": ["size"],
            "message": f"must not exceed the size of the latest signed checkpoint ({size})",
        }
    ]
    backwards = ledger.client.get(f"/api/v1/ledger/proof/consistency?from={size}&to=1")
    assert [e["loc"] for e in backwards.json()["errors"]] == [["from"]]
    outside = ledger.client.get(f"/api/v1/ledger/proof/inclusion?index={size}&size={size}")
    assert outside.json()["errors"] == [{"loc": ["index"], "message": "must be smaller than size"}]


def test_entries_sequenced_after_the_checkpoint_have_no_proof_yet(ledger: Ledger) -> None:
    checkpoint = ledger.sequence_and_sign()
    ship(ledger.client, ledger.key, Canaries())
    log.sequence(ledger.vault.engine, now=ledger.vault.clock())
    newer = checkpoint.size
    assert ledger.client.get(f"/api/v1/ledger/entries/{newer}").status_code == 200
    response = ledger.client.get(f"/api/v1/ledger/proof/inclusion?index={newer}&size={newer + 1}")
    assert response.status_code == 422


def test_without_any_checkpoint_no_proof_is_given(ledger: Ledger) -> None:
    log.sequence(ledger.vault.engine, now=ledger.vault.clock())
    response = ledger.client.get("/api/v1/ledger/proof/inclusion?index=0&size=1")
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"] == "no checkpoint has been signed yet"


# --- who may read an entry's body ------------------------------------------------------


def leaf_of(entry: dict[str, Any]) -> bytes:
    """The leaf hash recomputed from a shown body and salt, as a verifier would."""
    body = json.dumps(entry["body"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    inner = hashlib.sha256(b64(entry["salt"]) + body.encode()).digest()
    return merkle.leaf_hash(log.LEAF_PREFIX + entry["kind"].encode() + b"\n" + inner)


def test_an_access_body_is_withheld_from_the_public_and_shown_to_the_verified_recipient(
    ledger: Ledger,
) -> None:
    ledger.sequence_and_sign()
    (index, *_) = ledger.indexes("access")
    public = ledger.client.get(f"/api/v1/ledger/entries/{index}")
    assert public.json()["body"] is None
    assert public.json()["salt"] is None
    assert (public.json()["withheld"], public.json()["erased"]) == (True, False)
    assert public.json()["kind"] == "access"

    cookie = recipient_cookie(ledger.client, ledger.number, ledger.canaries.postcode)
    shown = ledger.client.get(f"/api/v1/ledger/entries/{index}", headers=cookie)
    entry = shown.json()
    assert entry["withheld"] is False
    assert entry["body"]["shipment"] == ledger.shipment_id()
    assert entry["body"]["tier"] == "merchant"
    assert leaf_of(entry) == b64(entry["leaf_hash"]) == b64(public.json()["leaf_hash"])
    assert shown.headers["cache-control"] == "private, no-store"


def test_the_recipient_of_another_shipment_sees_no_body(ledger: Ledger) -> None:
    other = Canaries()
    number = ship(ledger.client, ledger.key, other)
    ledger.sequence_and_sign()
    cookie = recipient_cookie(ledger.client, number, other.postcode)
    shipment = ledger.shipment_id(number)
    shown = 0
    for index in ledger.indexes("access") + ledger.indexes("event"):
        entry = ledger.client.get(f"/api/v1/ledger/entries/{index}", headers=cookie).json()
        if entry["body"] is not None:
            shown += 1
            assert entry["body"]["shipment"] == shipment
        else:
            assert entry["withheld"] is True
    assert 0 < shown < len(ledger.indexes("access") + ledger.indexes("event"))


def test_a_forged_or_expired_recipient_cookie_shows_no_body(ledger: Ledger) -> None:
    ledger.sequence_and_sign()
    (index, *_) = ledger.indexes("access")
    cookie = recipient_cookie(ledger.client, ledger.number, ledger.canaries.postcode)
    name, _, token = cookie["Cookie"].partition("=")
    shipment_id, expires, mac = token.split(".")
    forged = {"Cookie": f"{name}={shipment_id}.{int(expires) + 3600}.{mac}"}
    assert ledger.client.get(f"/api/v1/ledger/entries/{index}", headers=forged).json()["withheld"]
    later = ledger.vault.clock() + timedelta(days=1)
    ledger.vault.clock = lambda: later
    expired = ledger.client.get(f"/api/v1/ledger/entries/{index}", headers=cookie)
    assert expired.json()["withheld"] is True


def test_event_bodies_are_withheld_from_the_public_because_they_carry_the_tracking_number(
    ledger: Ledger,
) -> None:
    ledger.sequence_and_sign()
    events = ledger.indexes("event")
    assert len(events) == 3
    cookie = recipient_cookie(ledger.client, ledger.number, ledger.canaries.postcode)
    for index in events:
        public = ledger.client.get(f"/api/v1/ledger/entries/{index}")
        assert public.json()["withheld"] is True
        assert ledger.number not in public.text
        entry = ledger.client.get(f"/api/v1/ledger/entries/{index}", headers=cookie).json()
        assert entry["body"]["tracking_number"] == ledger.number
        assert leaf_of(entry) == b64(entry["leaf_hash"])


def test_a_policy_change_body_is_public(ledger: Ledger) -> None:
    with ledger.vault.engine.begin() as connection:
        log.enqueue(
            connection,
            kind="policy_change",
            body={"policy": "sha256:0123"},
            subject_id=None,
            ref=None,
            now=ledger.vault.clock(),
        )
    ledger.sequence_and_sign()
    (index,) = ledger.indexes("policy_change")
    entry = ledger.client.get(f"/api/v1/ledger/entries/{index}").json()
    assert entry["body"] == {"policy": "sha256:0123"}
    assert entry["withheld"] is False
    assert leaf_of(entry) == b64(entry["leaf_hash"])


def test_a_consent_entry_is_shown_only_to_a_recipient_of_its_subject(ledger: Ledger) -> None:
    with ledger.vault.engine.connect() as connection:
        subject = connection.execute(
            select(shipments.c.subject_id).where(shipments.c.id == ledger.shipment_id())
        ).scalar_one()
    with ledger.vault.engine.begin() as connection:
        log.enqueue(
            connection,
            kind="consent",
            body={"subject": subject, "notifications": "email"},
            subject_id=subject,
            ref=None,
            now=ledger.vault.clock(),
        )
    ledger.sequence_and_sign()
    (index,) = ledger.indexes("consent")
    assert ledger.client.get(f"/api/v1/ledger/entries/{index}").json()["withheld"] is True
    cookie = recipient_cookie(ledger.client, ledger.number, ledger.canaries.postcode)
    shown = ledger.client.get(f"/api/v1/ledger/entries/{index}", headers=cookie).json()
    assert shown["body"]["notifications"] == "email"


def test_a_correction_entry_is_shown_only_to_the_recipient_of_its_shipment(
    ledger: Ledger,
) -> None:
    mover = Canaries()
    number = ship(ledger.client, ledger.key, mover)
    cookie = recipient_cookie(ledger.client, number, mover.postcode)
    corrected = ledger.client.post(
        f"/api/v1/track/{number}/address", json={"street": [mover.street, "Flat 9"]}, headers=cookie
    )
    assert corrected.status_code == 200, corrected.text
    ledger.sequence_and_sign()

    (index,) = ledger.indexes("correction")
    url = f"/api/v1/ledger/entries/{index}"
    other_recipient = recipient_cookie(ledger.client, ledger.number, ledger.canaries.postcode)
    assert ledger.client.get(url).json()["withheld"] is True
    assert ledger.client.get(url, headers=other_recipient).json()["withheld"] is True
    shown = ledger.client.get(url, headers=cookie)
    assert shown.json()["body"]["fields"] == ["destination.street"]
    assert shown.json()["body"]["shipment"] == ledger.shipment_id(number)
    assert mover.street not in shown.text


def test_an_erased_entry_shows_no_body_to_anyone_and_still_proves(ledger: Ledger) -> None:
    checkpoint = ledger.sequence_and_sign()
    (index, *_) = ledger.indexes("access")
    with ledger.vault.engine.begin() as connection:
        connection.execute(
            update(ledger_entries)
            .where(ledger_entries.c.idx == index)
            .values(body=None, salt=None, erased_at=ledger.vault.clock())
        )
    cookie = recipient_cookie(ledger.client, ledger.number, ledger.canaries.postcode)
    entry = ledger.client.get(f"/api/v1/ledger/entries/{index}", headers=cookie).json()
    assert (entry["body"], entry["salt"], entry["erased"], entry["withheld"]) == (
        None,
        None,
        True,
        False,
    )
    proof = ledger.client.get(
        f"/api/v1/ledger/proof/inclusion?index={index}&size={checkpoint.size}"
    ).json()
    merkle.verify_inclusion(
        b64(entry["leaf_hash"]),
        index,
        checkpoint.size,
        [b64(p) for p in proof["proof"]],
        checkpoint.root,
    )


def test_no_canary_appears_in_any_ledger_response_or_page(ledger: Ledger) -> None:
    checkpoint = ledger.sequence_and_sign()
    client = ledger.client
    cookie = recipient_cookie(client, ledger.number, ledger.canaries.postcode)
    size = checkpoint.size
    answers = [
        client.get("/ledger/checkpoint"),
        client.get("/transparency"),
        client.get("/transparency", headers=cookie),
        client.get(f"/api/v1/ledger/proof/consistency?from=1&to={size}"),
    ]
    for index in range(size):
        answers += [
            client.get(f"/api/v1/ledger/entries/{index}"),
            client.get(f"/api/v1/ledger/entries/{index}", headers=cookie),
            client.get(f"/api/v1/ledger/proof/inclusion?index={index}&size={size}"),
        ]
    answers += [client.get(url) for url in bad_requests(size)]
    assert any(a.json().get("body") for a in answers if "/entries/" in str(a.request.url))
    for answer in answers:
        assert ledger.canaries.found_in(answer.content) == [], answer.request.url
        assert ledger.canaries.found_in(str(answer.headers)) == [], answer.request.url


# --- /transparency ---------------------------------------------------------------------


def test_the_transparency_page_shows_the_signed_checkpoint_and_the_verifier_key(
    ledger: Ledger,
) -> None:
    checkpoint = ledger.sequence_and_sign()
    note, _ = signed(ledger.client, ledger.signer)
    page = ledger.client.get("/transparency")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert format_verifier_key(ledger.signer.verifier) in page.text
    for line in note.splitlines():
        assert line in page.text
    assert f'data-testid="checkpoint-size">{checkpoint.size}<' in page.text
    assert 'href="/ledger/checkpoint"' in page.text


def test_the_transparency_page_says_so_before_the_first_checkpoint(client: TestClient) -> None:
    page = client.get("/transparency")
    assert page.status_code == 200
    assert 'data-testid="no-checkpoint"' in page.text
    assert 'data-testid="no-key"' in page.text


def test_every_page_links_to_the_transparency_page_from_its_footer(client: TestClient) -> None:
    for path in ("/", "/privacy", "/transparency"):
        footer = client.get(path).text.split('<footer class="foot">', 1)[1]
        assert 'href="/transparency"' in footer, path


# --- the background sequencer ----------------------------------------------------------


def sequencer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ledger-sequencer" and t.is_alive()]


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def tree_size(vault: Vault) -> int:
    with vault.engine.connect() as connection:
        return log.size(connection)


def test_apps_made_for_tests_run_no_background_sequencer(client: TestClient, shop_key: str) -> None:
    ship(client, shop_key, Canaries())
    assert sequencer_threads() == []


def test_the_background_sequencer_grows_the_tree_and_signs_checkpoints(
    sqlite_url: str, key_dir: Path
) -> None:
    vault = make_vault(sqlite_url, key_dir, checkpoint_interval_seconds=1)
    create_signer(key_dir, ORIGIN)
    signer = load_signer(key_dir)
    key = tenants.create_tenant(vault=vault, name="shop-a")
    with TestClient(create_app(vault=vault, background=True)) as client:
        assert len(sequencer_threads()) == 1
        ship(client, key, Canaries())
        assert wait_for(lambda: tree_size(vault) >= 3)
        assert wait_for(lambda: client.get("/ledger/checkpoint").status_code == 200)
        first = signed(client, signer)[1]
        ship(client, key, Canaries(), scans=4)
        assert wait_for(lambda: tree_size(vault) >= first.size + 5)
        assert wait_for(lambda: signed(client, signer)[1].size >= first.size + 5)
        second = signed(client, signer)[1]
        proof = client.get(f"/api/v1/ledger/proof/consistency?from={first.size}&to={second.size}")
        merkle.verify_consistency(
            first.size,
            second.size,
            [b64(p) for p in proof.json()["proof"]],
            first.root,
            second.root,
        )
        with vault.engine.connect() as connection:
            placed = connection.execute(select(access_records.c.ledger_index)).scalars().all()
        assert placed
        assert None not in placed
    assert wait_for(lambda: sequencer_threads() == [], 5)
    vault.engine.dispose()


def test_without_a_signing_key_the_sequencer_still_appends_and_signs_nothing(
    sqlite_url: str, key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vault = make_vault(sqlite_url, key_dir, checkpoint_interval_seconds=1)
    key = tenants.create_tenant(vault=vault, name="shop-a")
    app = create_app(vault=vault, background=True)
    with caplog.at_level("WARNING", logger="parcelvault.ledger"), TestClient(app) as client:
        ship(client, key, Canaries())
        assert wait_for(lambda: tree_size(vault) >= 2)
        time.sleep(1.2)
        assert client.get("/ledger/checkpoint").status_code == 404
    warnings = [r for r in caplog.records if "signing key unavailable" in r.getMessage()]
    assert len(warnings) == 1
    vault.engine.dispose()


LEDGER_ENDPOINTS = {
    ("/ledger/checkpoint", "get"),
    ("/api/v1/ledger/entries/{index}", "get"),
    ("/api/v1/ledger/proof/inclusion", "get"),
    ("/api/v1/ledger/proof/consistency", "get"),
    ("/api/v1/track/{tracking_number}/access-log", "get"),
}


def test_the_openapi_document_describes_the_ledger_endpoints_and_their_problems(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in LEDGER_ENDPOINTS:
        responses = paths[path][method]["responses"]
        assert "application/problem+json" in responses["404"]["content"], path
    for path, method in LEDGER_ENDPOINTS - {("/ledger/checkpoint", "get")}:
        assert "application/problem+json" in paths[path][method]["responses"]["422"]["content"]
    consistency = paths["/api/v1/ledger/proof/consistency"]["get"]["parameters"]
    assert [p["name"] for p in consistency] == ["from", "to"]
