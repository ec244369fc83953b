"""Staff accounts, sign-in with a second factor, sessions, and justified reveals.

Security invariants:

- Passwords are stored only as argon2id hashes. Every sign-in attempt runs exactly one
  argon2 verification, also for unknown, disabled and locked accounts (against a dummy
  hash), so the answer time does not tell which usernames exist; every failure raises
  the same `SignInFailed`, whichever factor was wrong.
- Support and admin accounts need a TOTP code (RFC 6238, 30-second steps; the current
  and the previous step are accepted). The seed is sealed with the key-encryption key.
  A code is accepted only for a step later than the last accepted one. That step is
  not stored separately: every accepted code opens a session, so it is bounded by the
  step of the account's newest session, which is what the check uses.
- 5 failed sign-ins in a row lock the account for 15 minutes; attempts on a locked
  account are refused without counting.
- A session token is 32 random bytes held only in the staff member's cookie; the
  database keeps its SHA-256. Sessions last 8 hours and end at sign-out or when the
  account is disabled.
- A reveal shows the fields the policy lets the staff member's role reveal in full,
  for 15 minutes, to that staff member only. It is written with its access record in
  one transaction; the free-text reference is sealed under the data subject's key,
  bound to the access record (`associated_data(subject, "access:<id>", "reference")`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, case, or_, select, update
from sqlalchemy.exc import IntegrityError

from parcelvault.adapters.db.store import AnyRow, inserted_id
from parcelvault.adapters.db.tables import access_records, reveals, staff, staff_sessions
from parcelvault.crypto.sealing import associated_data, open_sealed, seal
from parcelvault.domain.errors import Conflict, FieldProblem, Forbidden, InvalidInput, NotFound
from parcelvault.privacy.access import Viewer
from parcelvault.privacy.policy import STAFF_TIERS, Exposure, FieldRule, Policy
from parcelvault.services.corrections import PastCorrection, history
from parcelvault.services.tracking import TrackingView, build_view, find_shipment
from parcelvault.services.vault import Vault
from parcelvault.services.write_turn import read_then_write

log = logging.getLogger("parcelvault.staff")

ROLES = ("support", "auditor", "admin")
TOTP_ROLES = frozenset({"support", "admin"})
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_FAILED_LOGINS = 5
LOCK_DURATION = timedelta(minutes=15)
SESSION_DURATION = timedelta(hours=8)
REVEAL_DURATION = timedelta(minutes=15)
TOTP_STEP_SECONDS = 30
TOTP_ISSUER = "parcelvault"
REFERENCE_MAX_LENGTH = 100
REASONS: dict[str, str] = {
    "customer_request": "The customer asked for help",
    "delivery_problem": "A delivery problem",
    "legal_request": "A legal request",
    "fraud_investigation": "A fraud investigation",
}
SUPPORT_PURPOSE = "support"

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_CODE = re.compile(r"^\d{6}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_hasher = PasswordHasher()


class SignInFailed(Exception):
    """Any failed sign-in. Deliberately carries no detail."""

    def __init__(self) -> None:
        super().__init__("sign-in failed")


@dataclass(frozen=True)
class StaffMember:
    id: int
    username: str
    role: str
    has_totp: bool
    created_at: datetime
    disabled_at: datetime | None
    locked_until: datetime | None


@dataclass(frozen=True)
class Enrolment:
    """A new account. The TOTP secret is returned here once and never again."""

    staff_id: int
    username: str
    role: str
    totp_secret: str | None
    provisioning_uri: str | None


@dataclass(frozen=True)
class SignedIn:
    staff_id: int
    username: str
    role: str
    session_id: bytes
    expires_at: datetime

    def viewer(self) -> Viewer:
        return Viewer(
            tier=self.role,
            actor_kind="staff",
            actor_id=str(self.staff_id),
            purpose=SUPPORT_PURPOSE,
        )


@dataclass(frozen=True)
class NewSession:
    token: str
    staff: SignedIn


@dataclass(frozen=True)
class ConsoleView:
    view: TrackingView
    tenant: str
    revealed: dict[str, datetime]
    revealable: tuple[FieldRule, ...]
    corrections: tuple[PastCorrection, ...] = ()
    """The recipient's address corrections (which fields, when; never the values)."""


@dataclass(frozen=True)
class Reveal:
    access_record_id: int
    fields: tuple[str, ...]
    expires_at: datetime


# --- passwords and codes ------------------------------------------------------------


def check_password(password: str, username: str = "") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        message = f"must be at least {MIN_PASSWORD_LENGTH} characters"
    elif len(password) > MAX_PASSWORD_LENGTH:
        message = f"must be at most {MAX_PASSWORD_LENGTH} characters"
    elif username and username.lower() in password.lower():
        message = "must not contain the username"
    elif len(set(password)) < 5:
        message = "uses too few different characters"
    else:
        return
    raise InvalidInput([FieldProblem(("password",), message)])


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def _password_matches(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def totp_step(at: datetime) -> int:
    return int(at.timestamp()) // TOTP_STEP_SECONDS


def matching_step(seed: str, code: str, now: datetime, after: int | None) -> int | None:
    """The time step (now or the one before) whose code `code` is, if it is later than
    the last accepted step `after`; compared in constant time."""
    cleaned = code.replace(" ", "")
    if not _CODE.match(cleaned):
        return None
    totp = pyotp.TOTP(seed)
    current = totp_step(now)
    found = None
    for step in (current - 1, current):
        if hmac.compare_digest(totp.generate_otp(step), cleaned):
            found = step
    if found is None or (after is not None and found <= after):
        return None
    return found


# --- accounts -----------------------------------------------------------------------


def _member(row: AnyRow) -> StaffMember:
    return StaffMember(
        id=row.id,
        username=row.username,
        role=row.role,
        has_totp=row.totp_secret is not None,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        locked_until=row.locked_until,
    )


def create_staff(*, vault: Vault, username: str, role: str, password: str) -> Enrolment:
    name = username.strip().lower()
    if not _USERNAME.match(name):
        raise InvalidInput(
            [
                FieldProblem(
                    ("username",), "2-64 characters: lower-case letters, digits, '.', '-', '_'"
                )
            ]
        )
    if role not in ROLES or role not in STAFF_TIERS or role not in vault.policy.tiers:
        raise InvalidInput([FieldProblem(("role",), f"choose one of {', '.join(ROLES)}")])
    check_password(password, name)
    password_hash = _hasher.hash(password)
    now = vault.clock()
    seed = pyotp.random_base32() if role in TOTP_ROLES else None
    try:
        with vault.engine.begin() as connection:
            staff_id = inserted_id(
                connection,
                staff.insert().values(
                    username=name,
                    role=role,
                    password_hash=password_hash,
                    failed_logins=0,
                    created_at=now,
                ),
            )
            if seed is not None:
                sealed = vault.keyring.seal_secret(seed.encode(), f"totp:{staff_id}")
                connection.execute(
                    update(staff).where(staff.c.id == staff_id).values(totp_secret=sealed)
                )
    except IntegrityError as exc:
        raise Conflict(f"a staff account named {name!r} exists already") from exc
    log.info("staff account created", extra={"staff_id": staff_id, "role": role})
    uri = (
        pyotp.TOTP(seed).provisioning_uri(name=name, issuer_name=TOTP_ISSUER)
        if seed is not None
        else None
    )
    return Enrolment(staff_id, name, role, seed, uri)


def list_staff(*, vault: Vault) -> list[StaffMember]:
    with vault.engine.connect() as connection:
        rows = connection.execute(select(staff).order_by(staff.c.username)).all()
    return [_member(row) for row in rows]


def disable_staff(*, vault: Vault, username: str) -> StaffMember:
    """Disable an account and end its sessions at once."""
    now = vault.clock()
    with vault.engine.begin() as connection:
        row = connection.execute(
            select(staff).where(staff.c.username == username.strip().lower())
        ).first()
        if row is None:
            raise NotFound()
        if row.disabled_at is None:
            connection.execute(update(staff).where(staff.c.id == row.id).values(disabled_at=now))
        connection.execute(
            update(staff_sessions)
            .where(staff_sessions.c.staff_id == row.id, staff_sessions.c.ended_at.is_(None))
            .values(ended_at=now)
        )
        disabled = connection.execute(select(staff).where(staff.c.id == row.id)).one()
    log.info("staff account disabled", extra={"staff_id": row.id})
    return _member(disabled)


# --- sign-in and sessions -----------------------------------------------------------


def session_id_of(token: str) -> bytes | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        return None
    if len(raw) != 32:
        return None
    return hashlib.sha256(raw).digest()


def _new_token() -> tuple[str, bytes]:
    raw = secrets.token_bytes(32)
    return base64.urlsafe_b64encode(raw).decode().rstrip("="), hashlib.sha256(raw).digest()


def sign_in(*, vault: Vault, username: str, password: str, code: str) -> NewSession:
    """Check all factors and open a session; raises `SignInFailed` for any failure."""
    now = vault.clock()
    name = username.strip().lower()
    too_long = len(password) > MAX_PASSWORD_LENGTH
    password = password[:MAX_PASSWORD_LENGTH]
    with vault.engine.begin() as connection:
        row = None
        if _USERNAME.match(name):
            row = connection.execute(
                select(staff).where(staff.c.username == name).with_for_update()
            ).first()
        if row is None:
            _password_matches(_dummy_hash(), password)
            log.info("staff sign-in failed", extra={"staff_id": None})
            raise SignInFailed()
        password_ok = _password_matches(row.password_hash, password) and not too_long
        if row.disabled_at is not None or (row.locked_until is not None and row.locked_until > now):
            log.info("staff sign-in refused", extra={"staff_id": row.id})
            raise SignInFailed()
        step = _accepted_step(vault, row, code, now) if row.role in TOTP_ROLES else None
        second_factor_ok = row.role not in TOTP_ROLES or step is not None
        if password_ok and second_factor_ok:
            session = _open_session(connection, row, password, now, step)
        else:
            session = None
            _count_failure(connection, row, now)
    if session is None:
        raise SignInFailed()
    log.info("staff signed in", extra={"staff_id": row.id})
    return session


def _accepted_step(vault: Vault, row: AnyRow, code: str, now: datetime) -> int | None:
    """The time step of a valid code not used before (later than the last accepted one
    as read; `_open_session` claims it only if no other sign-in has since)."""
    if row.totp_secret is None:
        return None
    seed = vault.keyring.open_secret(row.totp_secret, f"totp:{row.id}").decode()
    return matching_step(seed, code, now, row.totp_last_step)


def _count_failure(connection: Connection, row: AnyRow, now: datetime) -> None:
    """Counted in the UPDATE itself: failures of concurrent sign-ins, each of which read
    the row before its (slow) password check, all count."""
    failures = staff.c.failed_logins + 1
    reached = failures >= MAX_FAILED_LOGINS
    connection.execute(
        update(staff)
        .where(staff.c.id == row.id)
        .values(
            failed_logins=case((reached, 0), else_=failures),
            locked_until=case((reached, now + LOCK_DURATION), else_=staff.c.locked_until),
        )
    )
    # Read back in the transaction that now holds the row (or SQLite's write lock).
    counted = connection.execute(
        select(staff.c.failed_logins).where(staff.c.id == row.id)
    ).scalar_one()
    if counted == 0:
        log.warning("staff account locked", extra={"staff_id": row.id})
    else:
        log.info("staff sign-in failed", extra={"staff_id": row.id})


def _open_session(
    connection: Connection, row: AnyRow, password: str, now: datetime, step: int | None
) -> NewSession:
    values: dict[str, object] = {"failed_logins": 0, "locked_until": None}
    opened = update(staff).where(staff.c.id == row.id)
    if step is not None:
        # The step is claimed by this UPDATE: a concurrent sign-in that accepted the
        # same code first leaves no row to match (single use, RFC 6238 section 5.2).
        values["totp_last_step"] = step
        opened = opened.where(or_(staff.c.totp_last_step.is_(None), staff.c.totp_last_step < step))
    if _hasher.check_needs_rehash(row.password_hash):
        values["password_hash"] = _hasher.hash(password)
    if connection.execute(opened.values(**values)).rowcount != 1:
        log.info("staff sign-in refused: code already used", extra={"staff_id": row.id})
        raise SignInFailed()
    token, session_id = _new_token()
    expires = now + SESSION_DURATION
    connection.execute(
        staff_sessions.insert().values(
            id=session_id, staff_id=row.id, created_at=now, expires_at=expires
        )
    )
    return NewSession(
        token=token,
        staff=SignedIn(
            staff_id=row.id,
            username=row.username,
            role=row.role,
            session_id=session_id,
            expires_at=expires,
        ),
    )


_SESSION = (
    select(
        staff_sessions.c.id,
        staff_sessions.c.expires_at,
        staff.c.id.label("staff_id"),
        staff.c.username,
        staff.c.role,
    )
    .join(staff, staff.c.id == staff_sessions.c.staff_id)
    .where(staff_sessions.c.ended_at.is_(None), staff.c.disabled_at.is_(None))
)


def session_of(*, vault: Vault, token: str) -> SignedIn | None:
    """The staff member a session cookie belongs to, if the session is live."""
    session_id = session_id_of(token)
    if session_id is None:
        return None
    with vault.engine.connect() as connection:
        row = connection.execute(_SESSION.where(staff_sessions.c.id == session_id)).first()
    if row is None or row.expires_at <= vault.clock():
        return None
    return SignedIn(
        staff_id=row.staff_id,
        username=row.username,
        role=row.role,
        session_id=row.id,
        expires_at=row.expires_at,
    )


def sign_out(*, vault: Vault, session_id: bytes) -> None:
    with vault.engine.begin() as connection:
        connection.execute(
            update(staff_sessions)
            .where(staff_sessions.c.id == session_id, staff_sessions.c.ended_at.is_(None))
            .values(ended_at=vault.clock())
        )


# --- CSRF -----------------------------------------------------------------------------


def csrf_token(key: bytes, purpose: str, binding: bytes) -> str:
    """A form token bound to a session (purpose "session") or to the pre-session
    cookie of the sign-in form (purpose "login")."""
    mac = hmac.new(key, b"staff-csrf\x1f" + purpose.encode() + b"\x1f" + binding, "sha256")
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def csrf_valid(key: bytes, purpose: str, binding: bytes, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(csrf_token(key, purpose, binding), token)


# --- reveals --------------------------------------------------------------------------


def revealable(policy: Policy, role: str) -> tuple[FieldRule, ...]:
    """The fields a role may reveal, in policy order."""
    return tuple(rule for rule in policy.fields.values() if role in rule.reveal)


def with_revealed(policy: Policy, tier: str, fields: Iterable[str]) -> Policy:
    """A copy of `policy` in which `tier` sees `fields` in full, and everything else as
    before. A field the policy does not let that tier reveal stays as it was."""
    chosen = set(fields)
    rules = {
        name: (
            replace(rule, exposure={**rule.exposure, tier: Exposure.FULL})
            if name in chosen and tier in rule.reveal
            else rule
        )
        for name, rule in policy.fields.items()
    }
    return replace(policy, fields=rules)


def active_reveals(
    connection: Connection, *, staff_id: int, shipment_id: str, now: datetime
) -> dict[str, datetime]:
    """Each field this staff member has revealed on this shipment, with the time the
    latest of its live reveals ends."""
    rows = connection.execute(
        select(reveals.c.fields, reveals.c.expires_at).where(
            reveals.c.staff_id == staff_id,
            reveals.c.shipment_id == shipment_id,
            reveals.c.expires_at > now,
        )
    ).all()
    until: dict[str, datetime] = {}
    for row in rows:
        for name in row.fields.split(","):
            if name and (name not in until or until[name] < row.expires_at):
                until[name] = row.expires_at
    return until


def console_view(
    *, vault: Vault, who: SignedIn, raw_number: str, tenant: str | None = None
) -> ConsoleView:
    """The shipment at the staff member's tier, with their live reveals in full. The
    view's access record is written in the same transaction, which holds the write
    turn from its first read: no erasure falls between the view and its record."""
    now = vault.clock()
    with read_then_write(vault) as connection:
        shipment = find_shipment(connection, raw_number, tenant)
        revealed = active_reveals(
            connection, staff_id=who.staff_id, shipment_id=shipment.id, now=now
        )
        seen_by = vault
        if revealed:
            seen_by = replace(vault, policy=with_revealed(vault.policy, who.role, revealed))
        view = build_view(connection, vault=seen_by, shipment=shipment, viewer=who.viewer())
        corrected = history(connection, [shipment.id]).get(shipment.id, [])
    return ConsoleView(
        view=view,
        tenant=shipment.tenant_name,
        revealed=revealed,
        revealable=revealable(vault.policy, who.role),
        corrections=tuple(corrected),
    )


def reveal(
    *,
    vault: Vault,
    who: SignedIn,
    raw_number: str,
    fields: Sequence[str],
    reason: str,
    reference: str,
    tenant: str | None = None,
) -> Reveal:
    """Record a justified reveal: an access record (tier, fields, purpose, reason and
    the sealed reference) and the 15-minute grant, in one transaction that holds the
    write turn from its first read (no erasure between the key's read and the record)."""
    allowed = {rule.name for rule in revealable(vault.policy, who.role)}
    if not allowed:
        raise Forbidden(f"the {who.role} role cannot reveal personal data")
    chosen = tuple(sorted(set(fields)))
    if set(chosen) - allowed:
        raise Forbidden(f"the {who.role} role cannot reveal some of the chosen fields")
    reference = reference.strip()
    problems = []
    if not chosen:
        problems.append(FieldProblem(("fields",), "choose at least one field to reveal"))
    if reason not in REASONS:
        problems.append(FieldProblem(("reason",), "choose a reason"))
    if not reference:
        problems.append(FieldProblem(("reference",), "give the ticket or case reference"))
    elif len(reference) > REFERENCE_MAX_LENGTH:
        problems.append(FieldProblem(("reference",), f"at most {REFERENCE_MAX_LENGTH} characters"))
    elif _CONTROL.search(reference):
        problems.append(FieldProblem(("reference",), "must be one line of text"))
    if problems:
        raise InvalidInput(problems)
    now = vault.clock()
    expires = now + REVEAL_DURATION
    with read_then_write(vault) as connection:
        shipment = find_shipment(connection, raw_number, tenant)
        key = vault.keystore.get_one(shipment.subject_id)
        if key is None:
            raise Conflict("the personal details of this shipment were erased")
        cipher = vault.keyring.unwrap(key.wrapped, shipment.subject_id)
        record_id = inserted_id(
            connection,
            access_records.insert().values(
                at=now,
                shipment_id=shipment.id,
                subject_id=shipment.subject_id,
                tier=who.role,
                actor_kind="staff",
                actor_id=str(who.staff_id),
                fields=",".join(chosen),
                purpose=SUPPORT_PURPOSE,
                reason=reason,
                reference=None,
            ),
        )
        sealed = seal(
            cipher,
            reference,
            associated_data(shipment.subject_id, f"access:{record_id}", "reference"),
        )
        connection.execute(
            update(access_records).where(access_records.c.id == record_id).values(reference=sealed)
        )
        connection.execute(
            reveals.insert().values(
                staff_id=who.staff_id,
                shipment_id=shipment.id,
                fields=",".join(chosen),
                reason=reason,
                access_record_id=record_id,
                created_at=now,
                expires_at=expires,
            )
        )
    log.info(
        "personal fields revealed",
        extra={
            "staff_id": who.staff_id,
            "shipment": shipment.id,
            "fields": list(chosen),
            "reason": reason,
            "access_record": record_id,
        },
    )
    return Reveal(access_record_id=record_id, fields=chosen, expires_at=expires)


def open_reference(*, vault: Vault, access_record_id: int) -> str | None:
    """The plaintext reference of an access record (for audits), or None if it has
    none or its subject's key was destroyed."""
    with vault.engine.connect() as connection:
        row = connection.execute(
            select(access_records.c.subject_id, access_records.c.reference).where(
                access_records.c.id == access_record_id
            )
        ).first()
        if row is None or row.reference is None:
            return None
    key = vault.keystore.get_one(row.subject_id)
    if key is None:
        return None
    cipher = vault.keyring.unwrap(key.wrapped, row.subject_id)
    ad = associated_data(row.subject_id, f"access:{access_record_id}", "reference")
    return open_sealed(cipher, row.reference, ad)
