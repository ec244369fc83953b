"""Acting for a person across all their shipments, after a one-time code sent to the
e-mail address on file; and the scope the privacy centre acts in.

A person's subject id is a keyed hash of their normalized e-mail address, so the
address typed into the sign-in form finds the subject without anything stored in
plaintext. `request_code` answers the same way whether or not the address is known
(or was refused by a rate limit): a code goes out only to a subject that exists, is
not erased and has shipments. Codes have 6 digits, are kept as an HMAC under the
lookup key (bound to their challenge), expire after `code_ttl_seconds`, work once,
and die after `code_max_attempts` wrong tries. Every failure of `confirm` raises the
same `CodeRejected`, so it does not tell a dead code from an unknown one either.

Subjects known only by a phone number cannot sign in this way: there is no SMS
sender. They reach the centre for one shipment with its postcode instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, insert, select, update

from parcelvault.adapters.db import store
from parcelvault.adapters.db.tables import (
    otp_challenges,
    shipments,
    subject_sessions,
    subjects,
)
from parcelvault.adapters.mail import MailNotConfigured, SmtpSender, code_message
from parcelvault.crypto import keyed_hash
from parcelvault.domain.errors import (
    DomainError,
    FieldProblem,
    InvalidInput,
    Locked,
    NotFound,
)
from parcelvault.domain.statuses import LABELS, Status
from parcelvault.domain.tracking_numbers import grouped
from parcelvault.services import ledger_views, tracking
from parcelvault.services.corrections import (
    ADDRESS_PROBLEM_STATUSES,
    PastCorrection,
    address_correctable,
    history,
)
from parcelvault.services.vault import Vault
from parcelvault.services.write_turn import read_then_write

CODE_DIGITS = 6
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$")
CODE = re.compile(r"^\d{6}$")
HOUR = timedelta(hours=1)

__all__ = ["MailNotConfigured"]


class CodeRejected(DomainError):
    """The code is wrong, expired, used or dead, or the challenge is unknown."""


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _code_hash(key: bytes, challenge_id: bytes, code: str) -> bytes:
    return hmac.new(key, b"otp\x1f" + challenge_id + b"\x1f" + code.encode(), "sha256").digest()


def valid_email(address: str) -> bool:
    return bool(EMAIL.match(address.strip()))


class ClientLimiter:
    """At most `limit` code requests per client address in any hour, counted in this
    process (the code table records subjects, not client addresses)."""

    def __init__(self, limit: int, clock: Callable[[], datetime], window: timedelta = HOUR) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Count one request, or raise Locked if the client is over its limit."""
        now = self.clock()
        with self._lock:
            if len(self._seen) > 10_000:
                self._forget(now)
            times = self._seen.setdefault(client, deque())
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.limit:
                wait = times[0] + self.window - now
                raise Locked(max(1, int(wait.total_seconds()) + 1))
            times.append(now)

    def _forget(self, now: datetime) -> None:
        for client in [c for c, t in self._seen.items() if not t or t[-1] <= now - self.window]:
            del self._seen[client]


# --- codes --------------------------------------------------------------------------


def _may_receive_code(connection: Connection, subject_id: str) -> bool:
    query = (
        select(func.count())
        .select_from(shipments.join(subjects, subjects.c.id == shipments.c.subject_id))
        .where(shipments.c.subject_id == subject_id, subjects.c.erased_at.is_(None))
    )
    return bool(connection.execute(query).scalar_one())


def _codes_since(connection: Connection, subject_id: str, since: datetime) -> int:
    query = select(func.count()).where(
        otp_challenges.c.subject_id == subject_id, otp_challenges.c.created_at > since
    )
    return int(connection.execute(query).scalar_one())


def request_code(
    *,
    vault: Vault,
    mailer: SmtpSender,
    limiter: ClientLimiter,
    email: str,
    client: str,
) -> str:
    """A challenge token for the code sign-in form. The answer is the same for every
    well-formed address; see the module docstring for when a code is really sent.

    Raises InvalidInput for something that is not an e-mail address, Locked when the
    client asked too often, MailNotConfigured when no SMTP server is set."""
    if not mailer.configured:
        raise MailNotConfigured("smtp_host is not set")
    address = email.strip()
    if not valid_email(address):
        raise InvalidInput([FieldProblem(("email",), "enter an e-mail address")])
    limiter.take(client)
    settings = vault.settings
    token = secrets.token_urlsafe(32)
    challenge_id = _sha256(token)
    subject_id = keyed_hash.subject_id(vault.keyring.lookup_key, email=address, phone=None)
    assert subject_id is not None
    now = vault.clock()
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    # Counted and inserted under the write lock (SQLite) or the subject's row lock
    # (PostgreSQL): requests through several workers cannot exceed the hourly limit.
    with read_then_write(vault) as connection:
        connection.execute(
            select(subjects.c.id).where(subjects.c.id == subject_id).with_for_update()
        )
        send = (
            _may_receive_code(connection, subject_id)
            and _codes_since(connection, subject_id, now - HOUR)
            < settings.codes_per_subject_per_hour
        )
        if send:
            connection.execute(
                insert(otp_challenges).values(
                    id=challenge_id,
                    subject_id=subject_id,
                    code_hash=_code_hash(vault.keyring.lookup_key, challenge_id, code),
                    created_at=now,
                    expires_at=now + timedelta(seconds=settings.code_ttl_seconds),
                    attempts=0,
                )
            )
    if send:
        message = code_message(
            sender=settings.mail_from,
            to=address,
            code=code,
            minutes=settings.code_ttl_seconds // 60,
        )
        mailer.submit(message, "one-time code")
    return token


@dataclass(frozen=True)
class SubjectSession:
    token: str
    subject_id: str
    expires_at: datetime


def confirm(*, vault: Vault, token: str, code: str) -> SubjectSession:
    """Trade a challenge token and its code for a session (`subject_session_seconds`)."""
    settings = vault.settings
    key = vault.keyring.lookup_key
    challenge_id = _sha256(token)
    typed = re.sub(r"[\s-]", "", code)
    now = vault.clock()
    session_token = secrets.token_urlsafe(32)
    # The attempt count is read and raised in one transaction holding the write lock
    # (SQLite) or the challenge's row (PostgreSQL): workers cannot both read it stale.
    with read_then_write(vault) as connection:
        row = connection.execute(
            select(otp_challenges).where(otp_challenges.c.id == challenge_id).with_for_update()
        ).first()
        live = (
            row is not None
            and row.used_at is None
            and row.expires_at > now
            and row.attempts < settings.code_max_attempts
        )
        right = (
            live
            and row is not None
            and bool(CODE.match(typed))
            and hmac.compare_digest(row.code_hash, _code_hash(key, challenge_id, typed))
        )
        if live and not right:
            connection.execute(
                update(otp_challenges)
                .where(otp_challenges.c.id == challenge_id)
                .values(attempts=otp_challenges.c.attempts + 1)
            )
        if right and row is not None:
            claimed = connection.execute(
                update(otp_challenges)
                .where(
                    otp_challenges.c.id == challenge_id,
                    otp_challenges.c.used_at.is_(None),
                    otp_challenges.c.attempts < settings.code_max_attempts,
                )
                .values(used_at=now)
            )
            right = claimed.rowcount == 1
        if right and row is not None:
            expires = now + timedelta(seconds=settings.subject_session_seconds)
            connection.execute(
                insert(subject_sessions).values(
                    id=_sha256(session_token),
                    subject_id=row.subject_id,
                    created_at=now,
                    expires_at=expires,
                )
            )
            return SubjectSession(session_token, row.subject_id, expires)
    raise CodeRejected()


def subject_of(*, vault: Vault, token: str) -> str | None:
    """The subject a live session token acts for; None if it is unknown, ended,
    expired, or its subject was erased."""
    if not token:
        return None
    query = (
        select(subject_sessions.c.subject_id)
        .join(subjects, subjects.c.id == subject_sessions.c.subject_id)
        .where(
            subject_sessions.c.id == _sha256(token),
            subject_sessions.c.ended_at.is_(None),
            subject_sessions.c.expires_at > vault.clock(),
            subjects.c.erased_at.is_(None),
        )
    )
    with vault.engine.connect() as connection:
        found: str | None = connection.execute(query).scalar()
    return found


def end_session(*, vault: Vault, token: str) -> None:
    with vault.writing(), vault.engine.begin() as connection:
        connection.execute(
            update(subject_sessions)
            .where(subject_sessions.c.id == _sha256(token), subject_sessions.c.ended_at.is_(None))
            .values(ended_at=vault.clock())
        )


def session_binding(token: str) -> bytes:
    """A value that names a session without being its token (for CSRF tokens)."""
    return _sha256(token)


# --- the scope the privacy centre acts in -------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whom the centre acts for, and on which shipments.

    After a code: every shipment of the subject (`shipment_ids` is None). After a
    postcode: the verified shipments of that one subject only."""

    subject_id: str
    shipment_ids: frozenset[str] | None
    via: str

    @property
    def whole_subject(self) -> bool:
        return self.shipment_ids is None


@dataclass(frozen=True)
class ShipmentLine:
    id: str
    tracking_number: str
    display_number: str
    status: Status
    status_label: str
    status_at: datetime | None
    version: int
    dest_city: str
    dest_country: str
    status_reason: str | None = None
    """The reason of the latest event, for an exception or a failed attempt."""
    corrections: tuple[PastCorrection, ...] = ()
    """The address corrections made so far, oldest first."""

    @property
    def correctable(self) -> bool:
        """Whether the address may still be corrected: before the parcel is out for
        delivery, or after the courier reported a problem with the address (the
        corrections service has the last word)."""
        return address_correctable(self.status, self.status_reason)


def code_scope(subject_id: str) -> Scope:
    return Scope(subject_id, None, "code")


def postcode_scope(*, vault: Vault, verified: Iterable[str], chosen: str) -> Scope | None:
    """The scope of a recipient who verified `chosen` (and perhaps more shipments) by
    postcode: those of the verified shipments that belong to the chosen one's subject."""
    wanted = set(verified)
    if chosen not in wanted:
        return None
    query = select(shipments.c.id, shipments.c.subject_id).where(shipments.c.id.in_(sorted(wanted)))
    with vault.engine.connect() as connection:
        owners = {row.id: row.subject_id for row in connection.execute(query)}
    subject_id = owners.get(chosen)
    if subject_id is None:
        return None
    ids = frozenset(s for s, owner in owners.items() if owner == subject_id)
    return Scope(subject_id, ids, "postcode")


def shipments_in(*, vault: Vault, scope: Scope) -> list[ShipmentLine]:
    """The scope's shipments, newest first."""
    query = select(shipments).where(shipments.c.subject_id == scope.subject_id)
    if scope.shipment_ids is not None:
        query = query.where(shipments.c.id.in_(sorted(scope.shipment_ids)))
    query = query.order_by(shipments.c.created_at.desc(), shipments.c.id)
    with vault.engine.connect() as connection:
        rows = connection.execute(query).all()
        reasons = store.status_reasons(
            connection,
            [row.id for row in rows if Status(row.status) in ADDRESS_PROBLEM_STATUSES],
        )
        corrected = history(connection, [row.id for row in rows])
    return [
        ShipmentLine(
            id=row.id,
            tracking_number=row.tracking_number,
            display_number=grouped(row.tracking_number),
            status=Status(row.status),
            status_label=LABELS[Status(row.status)],
            status_at=row.status_at,
            version=row.version,
            dest_city=row.dest_city,
            dest_country=row.dest_country,
            status_reason=reasons.get(row.id),
            corrections=tuple(corrected.get(row.id, ())),
        )
        for row in rows
    ]


def shipment_in(*, vault: Vault, scope: Scope, shipment_id: str) -> ShipmentLine:
    for line in shipments_in(vault=vault, scope=scope):
        if line.id == shipment_id:
            return line
    raise NotFound()


def _resolved(line: ShipmentLine) -> tracking.Resolved:
    return tracking.Resolved(line.id, line.version, tracking.RECIPIENT)


def recipient_view(*, vault: Vault, line: ShipmentLine) -> tracking.TrackingView:
    """The shipment as its recipient sees it (their own details in full)."""
    return tracking.view_of(vault=vault, resolved=_resolved(line))


def access_log(*, vault: Vault, line: ShipmentLine) -> ledger_views.AccessLog:
    """Who was shown this shipment's personal details (see `ledger_views.access_log`)."""
    return ledger_views.access_log(vault=vault, resolved=_resolved(line))
