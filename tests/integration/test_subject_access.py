"""One-time codes by e-mail and subject sessions, on SQLite and PostgreSQL, with a
real SMTP server on loopback and a clock the tests move."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url

from parcelvault.adapters.db import migrate
from parcelvault.adapters.db.tables import otp_challenges, subject_sessions
from parcelvault.adapters.mail import SmtpSender
from parcelvault.domain.errors import InvalidInput, Locked
from parcelvault.entrypoints.api.app import create_app
from parcelvault.services import subject_access, tenants
from parcelvault.services.subject_access import ClientLimiter, CodeRejected
from parcelvault.services.vault import Vault, build
from parcelvault.settings import Settings
from tests.conftest import Canaries, bearer, shipment_payload
from tests.mailbox import Mailbox, running_mailbox
from tests.races import Meanwhile, after_first_call

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    vault: Vault
    clock: Clock
    mailbox: Mailbox
    mailer: SmtpSender
    limiter: ClientLimiter
    client: TestClient
    key: str

    def ship(self, email: str | None, phone: str | None = "+44 7700 900123") -> str:
        recipient: dict[str, Any] = {"name": "Jane Doe"}
        if email:
            recipient["email"] = email
        if phone:
            recipient["phone"] = phone
        created = self.client.post(
            "/api/v1/shipments",
            json=shipment_payload(recipient=recipient),
            headers=bearer(self.key),
        )
        assert created.status_code == 201, created.text
        number: str = created.json()["tracking_number"]
        return number

    def request(self, email: str, client: str = "192.0.2.1") -> str:
        return subject_access.request_code(
            vault=self.vault,
            mailer=self.mailer,
            limiter=self.limiter,
            email=email,
            client=client,
        )

    def wrong_tries(self, email: str, tries: int) -> tuple[str, str, str]:
        """A challenge for `email` after `tries` wrong codes: its token, the mailed
        code and the wrong one."""
        self.ship(email)
        token = self.request(email)
        [mail] = self.mailbox.wait_for(1)
        wrong = f"{(int(mail.code()) + 1) % 1_000_000:06d}"
        for _ in range(tries):
            with pytest.raises(CodeRejected):
                subject_access.confirm(vault=self.vault, token=token, code=wrong)
        return token, mail.code(), wrong

    def challenges(self) -> list[Any]:
        with self.vault.engine.connect() as connection:
            return list(connection.execute(select(otp_challenges)).all())


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with running_mailbox() as box:
        yield box


def _world(database_url: str, key_dir: Path, mailbox: Mailbox, **overrides: Any) -> World:
    clock = Clock()
    settings = Settings(
        database_url=database_url,
        key_dir=key_dir,
        public_rate_limit=0,
        **{**mailbox.settings(), **overrides},
    )
    vault = build(settings, clock=clock)
    migrate.upgrade(vault.engine)
    key = tenants.create_tenant(vault=vault, name="shop-a")
    mailer = SmtpSender(settings)
    limiter = ClientLimiter(settings.codes_per_client_per_hour, clock)
    return World(vault, clock, mailbox, mailer, limiter, TestClient(create_app(vault=vault)), key)


@pytest.fixture
def world(database_url: str, key_dir: Path, mailbox: Mailbox) -> Iterator[World]:
    built = _world(database_url, key_dir, mailbox)
    yield built
    built.mailer.close()
    built.vault.engine.dispose()


def test_a_code_arrives_by_mail_and_opens_a_session_once(world: World) -> None:
    world.ship("jane@example.org")
    world.ship("Jane@Example.org ")
    token = world.request("  JANE@example.org")
    [mail] = world.mailbox.wait_for(1)
    assert mail.envelope_to == ["JANE@example.org"]
    session = subject_access.confirm(vault=world.vault, token=token, code=mail.code())
    assert session.expires_at == START + timedelta(minutes=30)
    subject = subject_access.subject_of(vault=world.vault, token=session.token)
    assert subject == session.subject_id
    scope = subject_access.code_scope(subject)
    assert len(subject_access.shipments_in(vault=world.vault, scope=scope)) == 2
    with pytest.raises(CodeRejected):
        subject_access.confirm(vault=world.vault, token=token, code=mail.code())


def test_an_unknown_address_gets_the_same_answer_and_no_mail(world: World) -> None:
    world.ship("known@example.org")
    unknown = world.request("nobody@example.org")
    known = world.request("known@example.org")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", unknown)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", known)
    world.mailbox.wait_for(1)
    assert world.mailbox.settle() == 1
    assert len(world.challenges()) == 1
    with pytest.raises(CodeRejected):
        subject_access.confirm(vault=world.vault, token=unknown, code="123456")


def test_a_phone_only_recipient_cannot_get_a_code(world: World) -> None:
    world.ship(None, phone="+44 7700 900555")
    world.request("447700900555@example.org")
    assert world.mailbox.settle() == 0
    assert world.challenges() == []


def test_a_code_expires_after_ten_minutes(world: World) -> None:
    world.ship("late@example.org")
    token = world.request("late@example.org")
    [mail] = world.mailbox.wait_for(1)
    world.clock.advance(minutes=10)
    with pytest.raises(CodeRejected):
        subject_access.confirm(vault=world.vault, token=token, code=mail.code())


def test_a_code_still_works_just_before_it_expires(world: World) -> None:
    world.ship("early@example.org")
    token = world.request("early@example.org")
    [mail] = world.mailbox.wait_for(1)
    world.clock.advance(minutes=9, seconds=59)
    session = subject_access.confirm(vault=world.vault, token=token, code=mail.code())
    assert subject_access.subject_of(vault=world.vault, token=session.token) is not None


def test_five_wrong_codes_kill_the_challenge(world: World) -> None:
    token, code, _ = world.wrong_tries("guess@example.org", 5)
    with pytest.raises(CodeRejected):
        subject_access.confirm(vault=world.vault, token=token, code=code)
    [challenge] = world.challenges()
    assert challenge.attempts == 5
    assert challenge.used_at is None


def test_two_workers_trying_codes_at_once_after_the_fourth_wrong_one_get_one_comparison(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _, wrong = world.wrong_tries("race@example.org", 4)
    other_worker = build(world.vault.settings, clock=world.clock)  # its own write turn
    second = Meanwhile(lambda: subject_access.confirm(vault=other_worker, token=token, code=wrong))
    compared = after_first_call(monkeypatch, subject_access, "_code_hash", second)
    with pytest.raises(CodeRejected):
        subject_access.confirm(vault=world.vault, token=token, code=wrong)
    second.join()
    other_worker.engine.dispose()
    assert isinstance(second.outcome[0], CodeRejected)
    assert len(compared) == 1
    [challenge] = world.challenges()
    assert challenge.attempts == 5


def test_four_wrong_codes_leave_the_right_one_working(world: World) -> None:
    world.ship("typo@example.org")
    token = world.request("typo@example.org")
    [mail] = world.mailbox.wait_for(1)
    for typed in ("000000x", "", "12345", "9" * 7):
        with pytest.raises(CodeRejected):
            subject_access.confirm(vault=world.vault, token=token, code=typed)
    spaced = f"{mail.code()[:3]} {mail.code()[3:]}"
    assert subject_access.confirm(vault=world.vault, token=token, code=spaced)


def test_a_subject_gets_at_most_three_codes_an_hour_without_being_told(world: World) -> None:
    world.ship("busy@example.org")
    tokens = [world.request("busy@example.org", client=f"192.0.2.{n}") for n in range(5)]
    assert len(set(tokens)) == 5
    world.mailbox.wait_for(3)
    assert world.mailbox.settle() == 3
    world.clock.advance(minutes=61)
    world.request("busy@example.org")
    world.mailbox.wait_for(4)


def test_two_workers_asked_for_the_last_code_of_the_hour_at_once_send_one(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.ship("last@example.org")
    for n in range(2):
        world.request("last@example.org", client=f"192.0.2.{n}")
    other_worker = build(world.vault.settings, clock=world.clock)  # its own write turn
    other = Meanwhile(
        lambda: subject_access.request_code(
            vault=other_worker,
            mailer=world.mailer,
            limiter=world.limiter,
            email="last@example.org",
            client="192.0.2.9",
        )
    )
    after_first_call(monkeypatch, subject_access, "_codes_since", other)
    world.request("last@example.org", client="192.0.2.8")
    other.join()
    other_worker.engine.dispose()
    assert other.still_waiting == [True]
    assert isinstance(other.outcome[0], str)
    assert len(world.challenges()) == 3


def test_a_client_address_is_limited_to_ten_requests_an_hour(world: World) -> None:
    for n in range(10):
        world.request(f"person{n}@example.org", client="198.51.100.7")
    with pytest.raises(Locked) as locked:
        world.request("person11@example.org", client="198.51.100.7")
    assert 3500 < locked.value.retry_after_seconds <= 3601
    world.request("person11@example.org", client="198.51.100.8")
    world.clock.advance(hours=1)
    world.request("person11@example.org", client="198.51.100.7")


def test_something_that_is_not_an_e_mail_address_is_invalid_input(world: World) -> None:
    for typed in ("+44 7700 900123", "jane", "a@b", "x" * 400 + "@example.org"):
        with pytest.raises(InvalidInput):
            world.request(typed)


def test_a_session_lasts_thirty_minutes_and_ends_on_request(world: World) -> None:
    world.ship("timed@example.org")
    sessions = []
    for _ in range(2):
        token = world.request("timed@example.org")
        mail = world.mailbox.wait_for(len(sessions) + 1)[-1]
        sessions.append(subject_access.confirm(vault=world.vault, token=token, code=mail.code()))
    first, second = sessions
    subject_access.end_session(vault=world.vault, token=first.token)
    assert subject_access.subject_of(vault=world.vault, token=first.token) is None
    assert subject_access.subject_of(vault=world.vault, token=second.token) is not None
    world.clock.advance(minutes=30)
    assert subject_access.subject_of(vault=world.vault, token=second.token) is None
    assert subject_access.subject_of(vault=world.vault, token="made-up") is None


def test_a_postcode_scope_covers_only_the_verified_parcels_of_that_person(world: World) -> None:
    numbers = [world.ship("two@example.org"), world.ship("two@example.org")]
    other = world.ship("else@example.org")
    ids = {}
    with world.vault.engine.connect() as connection:
        from parcelvault.adapters.db.tables import shipments

        for row in connection.execute(select(shipments.c.id, shipments.c.tracking_number)):
            ids[row.tracking_number] = row.id
    first = ids[numbers[0]]
    scope = subject_access.postcode_scope(
        vault=world.vault, verified=[first, ids[other]], chosen=first
    )
    assert scope is not None
    assert not scope.whole_subject
    lines = subject_access.shipments_in(vault=world.vault, scope=scope)
    assert [line.tracking_number for line in lines] == [numbers[0]]
    assert (
        subject_access.postcode_scope(vault=world.vault, verified=[ids[other]], chosen=first)
        is None
    )


def test_no_address_or_code_reaches_the_database_or_the_log(
    sqlite_url: str,
    key_dir: Path,
    mailbox: Mailbox,
    canaries: Canaries,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = _world(sqlite_url, key_dir, mailbox)
    try:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # the test server's own
        with caplog.at_level(logging.DEBUG):
            created = world.client.post(
                "/api/v1/shipments", json=canaries.shipment(), headers=bearer(world.key)
            )
            assert created.status_code == 201
            token = world.request(canaries.email)
            [mail] = world.mailbox.wait_for(1)
            code = mail.code()
            wrong = f"{(int(code) + 1) % 1_000_000:06d}"
            with pytest.raises(CodeRejected):
                subject_access.confirm(vault=world.vault, token=token, code=wrong)
            session = subject_access.confirm(vault=world.vault, token=token, code=code)
            world.request(canaries.email.upper())
            world.mailbox.wait_for(2)
    finally:
        world.mailer.close()
        world.vault.engine.dispose()
    assert mail.envelope_to == [canaries.email]
    database = Path(make_url(sqlite_url).database or "")
    raw = b"".join(
        path.read_bytes()
        for path in database.parent.iterdir()
        if path.name.startswith(database.name)
    )
    ours = [r for r in caplog.records if not r.name.startswith("mail.")]
    assert any(r.name == "parcelvault.mail" for r in ours), "the sends must be logged"
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in ours)
    for blob in (raw, logged.encode()):
        assert canaries.found_in(blob) == []
        assert code.encode() not in blob
        assert token.encode() not in blob
        assert session.token.encode() not in blob
    with world.vault.engine.connect() as connection:
        assert len(connection.execute(select(subject_sessions)).all()) == 1
