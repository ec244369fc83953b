"""Staff accounts, sign-in, sessions and reveals, at the service level."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import delete, select, update

from parcelvault.adapters.db.tables import access_records, reveals, staff_sessions
from parcelvault.adapters.db.tables import staff as staff_table
from parcelvault.crypto.keystore import data_keys
from parcelvault.crypto.sealing import SealError
from parcelvault.domain.errors import Conflict, Forbidden, InvalidInput
from parcelvault.privacy.policy import Exposure, load_default_policy
from parcelvault.services import operations, staff
from parcelvault.services.tenants import authenticate, create_tenant
from parcelvault.services.vault import Vault
from tests.conftest import Canaries
from tests.races import erasure_during_the_first_view, subject_of

PASSWORD = "correct horse battery staple"
START = datetime(2026, 12, 1, 9, 0, 7, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(vault: Vault) -> Clock:
    controlled = Clock(START)
    vault.clock = controlled
    return controlled


@dataclass(frozen=True)
class Account:
    username: str
    id: int
    seed: str | None

    def code(self, at: datetime) -> str:
        assert self.seed is not None
        return pyotp.TOTP(self.seed).at(at)


def make_account(vault: Vault, username: str = "agent", role: str = "support") -> Account:
    enrolment = staff.create_staff(vault=vault, username=username, role=role, password=PASSWORD)
    return Account(enrolment.username, enrolment.staff_id, enrolment.totp_secret)


def sign_in(
    vault: Vault, account: Account, *, password: str = PASSWORD, code: str | None = None
) -> staff.NewSession:
    if code is None:
        code = account.code(vault.clock()) if account.seed else ""
    return staff.sign_in(vault=vault, username=account.username, password=password, code=code)


def staff_row(vault: Vault, staff_id: int) -> Any:
    with vault.engine.connect() as connection:
        return connection.execute(select(staff_table).where(staff_table.c.id == staff_id)).one()


@pytest.fixture
def shipment_number(vault: Vault, canaries: Canaries) -> str:
    from parcelvault.adapters.wire import ShipmentIn

    key = create_tenant(vault=vault, name="shop-a")
    principal = authenticate(vault=vault, key=key)
    shipment = ShipmentIn.model_validate(canaries.shipment()).to_domain()
    view = operations.create_shipment(vault=vault, principal=principal, shipment=shipment)
    return view.tracking_number


def records(vault: Vault) -> list[Any]:
    with vault.engine.connect() as connection:
        return list(connection.execute(select(access_records).order_by(access_records.c.id)).all())


def database_bytes(url: str) -> bytes:
    path = Path(url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


# --- accounts ---------------------------------------------------------------------


def test_a_password_is_stored_only_as_an_argon2id_hash(vault: Vault) -> None:
    account = make_account(vault)
    stored = staff_row(vault, account.id).password_hash
    assert stored.startswith("$argon2id$")
    assert PasswordHasher().verify(stored, PASSWORD)
    assert PASSWORD.encode() not in database_bytes(vault.settings.database_url)


@pytest.mark.parametrize(
    "password", ["short-pass1", "agent-is-my-password", "aaaaaaaaaaaaaaaa"], ids=str
)
def test_weak_passwords_are_refused_naming_the_password(vault: Vault, password: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        staff.create_staff(vault=vault, username="agent", role="support", password=password)
    assert refused.value.problems[0].loc == ("password",)
    assert staff.list_staff(vault=vault) == []


def test_a_second_account_with_the_same_name_is_a_conflict(vault: Vault) -> None:
    make_account(vault)
    with pytest.raises(Conflict):
        make_account(vault, username="Agent")


def test_the_totp_seed_is_sealed_and_opens_only_for_its_own_account(vault: Vault) -> None:
    account = make_account(vault)
    assert account.seed is not None
    sealed = staff_row(vault, account.id).totp_secret
    assert account.seed.encode() not in sealed
    assert account.seed.encode() not in database_bytes(vault.settings.database_url)
    assert vault.keyring.open_secret(sealed, f"totp:{account.id}") == account.seed.encode()
    with pytest.raises(SealError):
        vault.keyring.open_secret(sealed, f"totp:{account.id + 1}")


def test_an_auditor_has_no_authenticator_and_signs_in_with_the_password(
    vault: Vault, clock: Clock
) -> None:
    auditor = make_account(vault, "audit", role="auditor")
    assert auditor.seed is None
    assert staff_row(vault, auditor.id).totp_secret is None
    assert sign_in(vault, auditor).staff.role == "auditor"


# --- sign-in ----------------------------------------------------------------------


def test_signing_in_opens_a_session_of_which_only_the_hash_is_stored(
    vault: Vault, clock: Clock
) -> None:
    import hashlib

    from parcelvault.services.staff import session_id_of

    account = make_account(vault)
    session = sign_in(vault, account)
    with vault.engine.connect() as connection:
        stored = connection.execute(select(staff_sessions)).one()
    assert stored.id == session_id_of(session.token)
    assert len(stored.id) == hashlib.sha256().digest_size
    assert session.token.encode() not in database_bytes(vault.settings.database_url)
    assert stored.expires_at == START + timedelta(hours=8)


@pytest.mark.parametrize("wrong", ["password", "code", "both"])
def test_any_wrong_factor_fails_the_same_way_as_an_unknown_username(
    vault: Vault, clock: Clock, wrong: str
) -> None:
    account = make_account(vault)
    good = account.code(clock.now)
    bad_code = f"{(int(good) + 1) % 1_000_000:06d}"
    with pytest.raises(staff.SignInFailed) as unknown:
        staff.sign_in(vault=vault, username="nobody", password=PASSWORD, code=good)
    with pytest.raises(staff.SignInFailed) as failed:
        sign_in(
            vault,
            account,
            password=PASSWORD + "x" if wrong in ("password", "both") else PASSWORD,
            code=bad_code if wrong in ("code", "both") else good,
        )
    assert str(failed.value) == str(unknown.value)
    assert staff_row(vault, account.id).failed_logins == 1


def test_every_attempt_runs_one_argon2_verification_whoever_it_names(
    vault: Vault, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown, disabled and locked accounts cost the same hash as a real attempt, so
    the answer time does not tell which usernames exist."""
    make_account(vault)
    make_account(vault, "gone")
    staff.disable_staff(vault=vault, username="gone")
    locked = make_account(vault, "locked")
    with vault.engine.begin() as connection:
        connection.execute(
            update(staff_table)
            .where(staff_table.c.id == locked.id)
            .values(locked_until=START + timedelta(minutes=5))
        )
    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(staff, "_hasher", CountingHasher())
    for username in ("nobody", "not a valid name!", "gone", "locked", "agent"):
        calls.clear()
        with pytest.raises(staff.SignInFailed):
            staff.sign_in(vault=vault, username=username, password="wrong password!", code="")
        assert len(calls) == 1, username


def test_five_failures_lock_the_account_for_fifteen_minutes(vault: Vault, clock: Clock) -> None:
    account = make_account(vault)
    for _ in range(staff.MAX_FAILED_LOGINS):
        with pytest.raises(staff.SignInFailed):
            sign_in(vault, account, password="wrong password!")
        clock.advance(seconds=1)
    assert staff_row(vault, account.id).locked_until == START + timedelta(seconds=4, minutes=15)
    with pytest.raises(staff.SignInFailed):
        sign_in(vault, account)
    clock.advance(minutes=14, seconds=58)
    with pytest.raises(staff.SignInFailed):
        sign_in(vault, account)
    clock.advance(seconds=30)
    assert sign_in(vault, account).staff.staff_id == account.id
    row = staff_row(vault, account.id)
    assert (row.failed_logins, row.locked_until) == (0, None)


def test_a_success_resets_the_failure_count(vault: Vault, clock: Clock) -> None:
    account = make_account(vault)
    for _ in range(staff.MAX_FAILED_LOGINS - 1):
        with pytest.raises(staff.SignInFailed):
            sign_in(vault, account, password="wrong password!")
    sign_in(vault, account)
    assert staff_row(vault, account.id).failed_logins == 0
    clock.advance(seconds=30)
    with pytest.raises(staff.SignInFailed):
        sign_in(vault, account, password="wrong password!")
    assert staff_row(vault, account.id).locked_until is None


def test_a_totp_code_cannot_be_used_twice(vault: Vault, clock: Clock) -> None:
    account = make_account(vault)
    code = account.code(clock.now)
    sign_in(vault, account, code=code)
    clock.advance(seconds=5)
    with pytest.raises(staff.SignInFailed):
        sign_in(vault, account, code=code)
    clock.advance(seconds=staff.TOTP_STEP_SECONDS)
    assert sign_in(vault, account).staff.staff_id == account.id


def _another_sign_in_during_the_password_check(
    monkeypatch: pytest.MonkeyPatch, other: Callable[[], object]
) -> list[object]:
    """Run `other` while the next sign-in checks its password (after it read the row),
    as a concurrent request would; returns what it gave or raised."""
    check = staff._password_matches
    outcomes: list[object] = []
    started: list[bool] = []

    def racing(password_hash: str, password: str) -> bool:
        if not started:
            started.append(True)
            try:
                outcomes.append(other())
            except staff.SignInFailed as exc:
                outcomes.append(exc)
        return check(password_hash, password)

    monkeypatch.setattr(staff, "_password_matches", racing)
    return outcomes


def test_two_sign_ins_racing_with_one_totp_code_open_one_session(
    vault: Vault, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = make_account(vault)
    code = account.code(clock.now)
    outcomes = _another_sign_in_during_the_password_check(
        monkeypatch, lambda: sign_in(vault, account, code=code)
    )
    with pytest.raises(staff.SignInFailed):
        sign_in(vault, account, code=code)
    assert isinstance(outcomes[0], staff.NewSession)
    with vault.engine.connect() as connection:
        sessions = connection.execute(select(staff_sessions)).all()
    assert len(sessions) == 1


def test_wrong_passwords_tried_at_the_same_time_all_count_towards_the_lock(
    vault: Vault, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = make_account(vault)
    outcomes = _another_sign_in_during_the_password_check(
        monkeypatch, lambda: sign_in(vault, account, password="wrong password!")
    )
    with pytest.raises(staff.SignInFailed):
        sign_in(vault, account, password="wrong password!")
    assert isinstance(outcomes[0], staff.SignInFailed)
    assert staff_row(vault, account.id).failed_logins == 2


def test_the_previous_code_is_accepted_once_but_an_older_or_future_one_is_not(
    vault: Vault, clock: Clock
) -> None:
    account = make_account(vault)
    step = timedelta(seconds=staff.TOTP_STEP_SECONDS)
    for stale in (clock.now - 2 * step, clock.now + step):
        with pytest.raises(staff.SignInFailed):
            sign_in(vault, account, code=account.code(stale))
    previous = account.code(clock.now - step)
    sign_in(vault, account, code=previous)
    with pytest.raises(staff.SignInFailed):
        sign_in(vault, account, code=previous)


def test_after_signing_in_with_the_previous_code_the_current_one_still_works(
    vault: Vault, clock: Clock
) -> None:
    account = make_account(vault)
    step = timedelta(seconds=staff.TOTP_STEP_SECONDS)
    sign_in(vault, account, code=account.code(clock.now - step))
    clock.advance(seconds=3)
    assert sign_in(vault, account, code=account.code(clock.now)).staff.staff_id == account.id
    assert staff_row(vault, account.id).totp_last_step == staff.totp_step(clock.now)


def test_a_disabled_account_cannot_sign_in_and_its_sessions_end(vault: Vault, clock: Clock) -> None:
    account = make_account(vault)
    session = sign_in(vault, account)
    assert staff.session_of(vault=vault, token=session.token) is not None
    staff.disable_staff(vault=vault, username="agent")
    assert staff.session_of(vault=vault, token=session.token) is None
    clock.advance(seconds=30)
    with pytest.raises(staff.SignInFailed):
        sign_in(vault, account)


def test_a_session_lasts_eight_hours(vault: Vault, clock: Clock) -> None:
    session = sign_in(vault, make_account(vault))
    clock.advance(hours=8, seconds=-1)
    assert staff.session_of(vault=vault, token=session.token) is not None
    clock.advance(seconds=1)
    assert staff.session_of(vault=vault, token=session.token) is None


def test_signing_out_ends_the_session(vault: Vault, clock: Clock) -> None:
    session = sign_in(vault, make_account(vault))
    staff.sign_out(vault=vault, session_id=session.staff.session_id)
    assert staff.session_of(vault=vault, token=session.token) is None


@pytest.mark.parametrize("token", ["", "x", "not base64 !!", "A" * 43, "A" * 400])
def test_a_made_up_session_token_is_no_session(vault: Vault, token: str) -> None:
    assert staff.session_of(vault=vault, token=token) is None


def test_a_csrf_token_is_bound_to_its_purpose_and_binding() -> None:
    key = b"k" * 32
    token = staff.csrf_token(key, "session", b"one")
    assert staff.csrf_valid(key, "session", b"one", token)
    assert not staff.csrf_valid(key, "session", b"two", token)
    assert not staff.csrf_valid(key, "login", b"one", token)
    assert not staff.csrf_valid(b"j" * 32, "session", b"one", token)
    assert not staff.csrf_valid(key, "session", b"one", None)
    assert not staff.csrf_valid(key, "session", b"one", "")


# --- reveals ----------------------------------------------------------------------


def test_with_revealed_upgrades_exactly_the_revealed_fields_for_that_tier() -> None:
    policy = load_default_policy()
    upgraded = staff.with_revealed(policy, "support", ["recipient.name", "destination.street"])
    for name, rule in upgraded.fields.items():
        for tier in policy.tiers:
            before = policy.fields[name].exposure_for(tier)
            expected = (
                Exposure.FULL
                if tier == "support" and name in ("recipient.name", "destination.street")
                else before
            )
            assert rule.exposure_for(tier) is expected, (name, tier)
    assert policy.fields["recipient.name"].exposure_for("support") is Exposure.MASKED


def test_with_revealed_ignores_fields_the_tier_may_not_reveal() -> None:
    policy = load_default_policy()
    assert "admin" not in policy.fields["origin.postcode"].reveal
    upgraded = staff.with_revealed(policy, "admin", ["origin.postcode", "nonsense.field"])
    assert upgraded.fields == policy.fields


@pytest.fixture
def agent(vault: Vault, clock: Clock) -> staff.SignedIn:
    return sign_in(vault, make_account(vault)).staff


def test_an_erasure_started_during_a_console_view_waits_for_its_record_then_moves_it(
    vault: Vault, agent: staff.SignedIn, shipment_number: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject = subject_of(vault, shipment_number)
    meanwhile = erasure_during_the_first_view(monkeypatch, vault, shipment_number)
    seen = staff.console_view(vault=vault, who=agent, raw_number=shipment_number)
    meanwhile.join()
    assert "recipient.name" in seen.view.personal
    assert meanwhile.still_waiting == [True]
    support = [r for r in records(vault) if r.actor_kind == "staff"]
    assert len(support) == 1
    assert support[0].subject_id != subject


def test_a_support_agent_sees_masked_values_by_default(
    vault: Vault, agent: staff.SignedIn, shipment_number: str, canaries: Canaries
) -> None:
    seen = staff.console_view(vault=vault, who=agent, raw_number=shipment_number)
    assert seen.revealed == {}
    assert seen.view.personal["recipient.name"] != canaries.name
    assert "destination.street" not in seen.view.personal
    assert canaries.found_in(repr(seen.view)) == []
    latest = records(vault)[-1]
    assert (latest.tier, latest.actor_kind, latest.actor_id) == (
        "support",
        "staff",
        str(agent.staff_id),
    )
    assert latest.purpose == "support"


def test_a_reveal_writes_an_access_record_with_a_sealed_reference_and_a_grant(
    vault: Vault, agent: staff.SignedIn, shipment_number: str
) -> None:
    reference = "TICKET-7f3a9c-unique"
    done = staff.reveal(
        vault=vault,
        who=agent,
        raw_number=shipment_number,
        fields=["recipient.name", "destination.street"],
        reason="delivery_problem",
        reference=f"  {reference} ",
    )
    record = records(vault)[-1]
    assert record.id == done.access_record_id
    assert record.fields == "destination.street,recipient.name"
    assert (record.tier, record.actor_kind, record.actor_id) == (
        "support",
        "staff",
        str(agent.staff_id),
    )
    assert (record.purpose, record.reason) == ("support", "delivery_problem")
    assert reference.encode() not in record.reference
    assert staff.open_reference(vault=vault, access_record_id=record.id) == reference
    with vault.engine.connect() as connection:
        grant = connection.execute(select(reveals)).one()
    assert grant.access_record_id == record.id
    assert grant.expires_at == START + timedelta(minutes=15)
    assert reference.encode() not in database_bytes(vault.settings.database_url)


def test_a_sealed_reference_moved_to_another_access_record_does_not_open(
    vault: Vault, agent: staff.SignedIn, shipment_number: str
) -> None:
    first, second = (
        staff.reveal(
            vault=vault,
            who=agent,
            raw_number=shipment_number,
            fields=["recipient.name"],
            reason="customer_request",
            reference=ref,
        )
        for ref in ("REF-1", "REF-2")
    )
    with vault.engine.begin() as connection:
        sealed = connection.execute(
            select(access_records.c.reference).where(access_records.c.id == first.access_record_id)
        ).scalar_one()
        connection.execute(
            update(access_records)
            .where(access_records.c.id == second.access_record_id)
            .values(reference=sealed)
        )
    with pytest.raises(SealError):
        staff.open_reference(vault=vault, access_record_id=second.access_record_id)


def test_revealed_fields_are_shown_in_full_for_fifteen_minutes(
    vault: Vault, agent: staff.SignedIn, shipment_number: str, canaries: Canaries, clock: Clock
) -> None:
    staff.reveal(
        vault=vault,
        who=agent,
        raw_number=shipment_number,
        fields=["recipient.name", "destination.street"],
        reason="customer_request",
        reference="T-1",
    )
    clock.advance(minutes=14, seconds=59)
    seen = staff.console_view(vault=vault, who=agent, raw_number=shipment_number)
    assert seen.view.personal["recipient.name"] == canaries.name
    assert seen.view.personal["destination.street"] == canaries.street
    assert seen.view.personal["recipient.email"] != canaries.email
    assert set(seen.revealed) == {"recipient.name", "destination.street"}
    viewed = records(vault)[-1]
    assert "recipient.name" in viewed.fields.split(",")
    clock.advance(seconds=1)
    later = staff.console_view(vault=vault, who=agent, raw_number=shipment_number)
    assert later.revealed == {}
    assert later.view.personal["recipient.name"] != canaries.name
    assert "destination.street" not in later.view.personal


def test_a_reveal_is_seen_only_by_the_staff_member_who_made_it(
    vault: Vault, agent: staff.SignedIn, shipment_number: str, canaries: Canaries, clock: Clock
) -> None:
    staff.reveal(
        vault=vault,
        who=agent,
        raw_number=shipment_number,
        fields=["recipient.name"],
        reason="customer_request",
        reference="T-1",
    )
    clock.advance(seconds=30)
    colleague = sign_in(vault, make_account(vault, "colleague")).staff
    seen = staff.console_view(vault=vault, who=colleague, raw_number=shipment_number)
    assert seen.view.personal["recipient.name"] != canaries.name


@pytest.mark.parametrize(
    ("fields", "reason", "reference", "where"),
    [
        ([], "customer_request", "T-1", "fields"),
        (["recipient.name"], "", "T-1", "reason"),
        (["recipient.name"], "because", "T-1", "reason"),
        (["recipient.name"], "customer_request", "   ", "reference"),
        (["recipient.name"], "customer_request", "x" * 101, "reference"),
        (["recipient.name"], "customer_request", "T-1\nsecond line", "reference"),
    ],
)
def test_a_reveal_needs_fields_a_known_reason_and_a_short_reference(
    vault: Vault,
    agent: staff.SignedIn,
    shipment_number: str,
    fields: list[str],
    reason: str,
    reference: str,
    where: str,
) -> None:
    before = len(records(vault))
    with pytest.raises(InvalidInput) as refused:
        staff.reveal(
            vault=vault,
            who=agent,
            raw_number=shipment_number,
            fields=fields,
            reason=reason,
            reference=reference,
        )
    assert [p.loc for p in refused.value.problems] == [(where,)]
    assert len(records(vault)) == before


def test_a_reveal_that_fails_midway_leaves_no_record_and_no_grant(
    vault: Vault, agent: staff.SignedIn, shipment_number: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(records(vault))

    def broken_seal(*_: object) -> bytes:
        raise RuntimeError("sealing failed")

    monkeypatch.setattr(staff, "seal", broken_seal)
    with pytest.raises(RuntimeError):
        staff.reveal(
            vault=vault,
            who=agent,
            raw_number=shipment_number,
            fields=["recipient.name"],
            reason="customer_request",
            reference="T-1",
        )
    assert len(records(vault)) == before
    with vault.engine.connect() as connection:
        assert connection.execute(select(reveals)).all() == []


def test_an_auditor_sees_no_personal_data_and_cannot_reveal(
    vault: Vault, clock: Clock, shipment_number: str
) -> None:
    auditor = sign_in(vault, make_account(vault, "audit", role="auditor")).staff
    before = len(records(vault))
    seen = staff.console_view(vault=vault, who=auditor, raw_number=shipment_number)
    assert seen.view.personal == {}
    assert seen.revealable == ()
    assert len(records(vault)) == before
    with pytest.raises(Forbidden):
        staff.reveal(
            vault=vault,
            who=auditor,
            raw_number=shipment_number,
            fields=["recipient.name"],
            reason="customer_request",
            reference="T-1",
        )
    assert len(records(vault)) == before


def test_an_admin_cannot_reveal_a_field_the_policy_keeps_from_admins(
    vault: Vault, clock: Clock, shipment_number: str
) -> None:
    admin = sign_in(vault, make_account(vault, "boss", role="admin")).staff
    with pytest.raises(Forbidden):
        staff.reveal(
            vault=vault,
            who=admin,
            raw_number=shipment_number,
            fields=["recipient.name", "origin.postcode"],
            reason="customer_request",
            reference="T-1",
        )


def test_a_shipment_whose_subject_was_erased_cannot_be_revealed(
    vault: Vault, agent: staff.SignedIn, shipment_number: str
) -> None:
    with vault.keystore.engine.begin() as connection:
        connection.execute(delete(data_keys))
    with pytest.raises(Conflict):
        staff.reveal(
            vault=vault,
            who=agent,
            raw_number=shipment_number,
            fields=["recipient.name"],
            reason="customer_request",
            reference="T-1",
        )


@pytest.fixture
def pg_clock(any_vault: Vault) -> Clock:
    controlled = Clock(START)
    any_vault.clock = controlled
    return controlled


def test_sign_in_lockout_and_reveal_work_on_every_database(
    any_vault: Vault, pg_clock: Clock, canaries: Canaries
) -> None:
    from parcelvault.adapters.wire import ShipmentIn

    key = create_tenant(vault=any_vault, name="shop-a")
    principal = authenticate(vault=any_vault, key=key)
    number = operations.create_shipment(
        vault=any_vault,
        principal=principal,
        shipment=ShipmentIn.model_validate(canaries.shipment()).to_domain(),
    ).tracking_number
    account = make_account(any_vault)
    for _ in range(staff.MAX_FAILED_LOGINS):
        with pytest.raises(staff.SignInFailed):
            sign_in(any_vault, account, password="wrong password!")
    with pytest.raises(staff.SignInFailed):
        sign_in(any_vault, account)
    pg_clock.advance(minutes=15)
    agent = sign_in(any_vault, account).staff
    staff.reveal(
        vault=any_vault,
        who=agent,
        raw_number=number,
        fields=["recipient.phone"],
        reason="legal_request",
        reference="CASE-42",
    )
    seen = staff.console_view(vault=any_vault, who=agent, raw_number=number)
    assert seen.view.personal["recipient.phone"] == canaries.phone
    record = next(r for r in records(any_vault) if r.reason == "legal_request")
    assert staff.open_reference(vault=any_vault, access_record_id=record.id) == "CASE-42"


# --- command line -------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from typer.testing import CliRunner

    from parcelvault.entrypoints.cli import app

    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", f"sqlite:///{tmp_path / 'pv.db'}")
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    return tmp_path


def cli(args: list[str], stdin: str | None = None) -> Any:
    from typer.testing import CliRunner

    from parcelvault.entrypoints.cli import app

    return CliRunner().invoke(app, args, input=stdin)


def test_staff_create_prints_the_authenticator_secret_once(cli_env: Path) -> None:
    created = cli(["staff", "create", "agent", "--role", "support"], f"{PASSWORD}\n{PASSWORD}\n")
    assert created.exit_code == 0, created.output
    secret = re.search(r"^secret: ([A-Z2-7]{32})$", created.output, re.MULTILINE)
    assert secret
    assert f"otpauth://totp/parcelvault:agent?secret={secret.group(1)}" in created.output
    assert PASSWORD not in created.output
    listed = cli(["staff", "list"])
    assert "agent" in listed.output
    assert "support" in listed.output
    assert secret.group(1) not in listed.output
    assert secret.group(1).encode() not in (cli_env / "pv.db").read_bytes()


def test_staff_create_reads_the_password_from_stdin_and_needs_no_secret_for_auditors(
    cli_env: Path,
) -> None:
    created = cli(["staff", "create", "audit", "--role", "auditor", "--password-stdin"], PASSWORD)
    assert created.exit_code == 0, created.output
    assert "otpauth://" not in created.output
    assert "secret:" not in created.output


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--password-stdin"], "too-short\n", "password: must be at least 12 characters"),
        ([], f"{PASSWORD}\n{PASSWORD}-typo\n", "the two passwords differ"),
    ],
)
def test_staff_create_refuses_a_weak_or_mistyped_password(
    cli_env: Path, args: list[str], stdin: str, message: str
) -> None:
    refused = cli(["staff", "create", "agent", "--role", "support", *args], stdin)
    assert refused.exit_code == 1
    assert message in refused.output
    assert "agent" not in cli(["staff", "list"]).output


def test_staff_create_refuses_an_unknown_role(cli_env: Path) -> None:
    refused = cli(["staff", "create", "agent", "--role", "root", "--password-stdin"], PASSWORD)
    assert refused.exit_code == 2
    assert "agent" not in cli(["staff", "list"]).output


def test_staff_disable_marks_the_account_and_names_unknown_ones(cli_env: Path) -> None:
    cli(["staff", "create", "agent", "--role", "admin", "--password-stdin"], PASSWORD)
    assert cli(["staff", "disable", "agent"]).exit_code == 0
    assert "disabled" in cli(["staff", "list"]).output
    missing = cli(["staff", "disable", "nobody"])
    assert missing.exit_code == 1
    assert "no staff account named 'nobody'" in missing.output
