"""Tamper evidence: check the stored transparency log against itself and its signatures.

The audit reads one consistent snapshot and streams the entries in index order, rebuilding
the tree with a frontier (one hash per level: O(log n) memory, whatever the size of the
log). At every index it checks that

1. the entry row exists and has a known kind;
2. unless erased (body and salt both NULL), its body and salt hash to its leaf hash;
3. every interior node its append completes equals the stored node (the leaf hash is
   itself the tree's level-0 node: leaves are not stored twice);

and when the stream reaches a checkpoint's size, that the checkpoint's note is signed by
one of the given keys under its origin, that its size and root are those stored beside it,
that its root is the root recomputed from the entries, and that the stored nodes give a
valid consistency proof from the previous checkpoint. Finally no stored node may lie
beyond the end of the log or below level 1. The audit stops at the first problem and names its index
(or the checkpoint's size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, func, or_, select

from parcelvault.adapters.db.store import AnyRow
from parcelvault.adapters.db.tables import ledger_checkpoints, ledger_entries, ledger_nodes
from parcelvault.ledger import log, merkle
from parcelvault.ledger.note import NoteError, Verifier, open_note, parse_checkpoint

BATCH = 5_000
MAX_LEVEL = 64

Progress = Callable[[int, int], None]
"""Called with (entries checked, entries in the log) after every batch."""


@dataclass(frozen=True)
class Finding:
    reason: str
    index: int | None = None
    checkpoint_size: int | None = None

    def where(self) -> str:
        if self.checkpoint_size is not None:
            return f"checkpoint of size {self.checkpoint_size}"
        return f"index {self.index}"

    def __str__(self) -> str:
        return f"{self.where()}: {self.reason}"


@dataclass(frozen=True)
class AuditReport:
    size: int
    """Entries checked (the size the log claims, from its entries, nodes and checkpoints)."""
    erased: int
    checkpoints: int
    root: bytes
    """The root recomputed from the entries checked."""
    finding: Finding | None

    @property
    def ok(self) -> bool:
        return self.finding is None


class _Tampered(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(str(finding))
        self.finding = finding


def audit(
    engine: Engine,
    *,
    verifiers: Sequence[Verifier],
    progress: Progress | None = None,
    batch: int = BATCH,
) -> AuditReport:
    """Check the whole log; see the module docstring. `verifiers` are the checkpoint
    signing keys to accept (the current one and any rotated ones)."""
    with _snapshot(engine) as connection:
        return _Audit(connection, list(verifiers), progress).run(max(1, batch))


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that sees one state of the log from start to end."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        else:
            connection.exec_driver_sql("BEGIN")  # SQLite: the read snapshot lasts until the end
        try:
            yield connection
        finally:
            connection.rollback()


class _Audit:
    def __init__(
        self, connection: Connection, verifiers: list[Verifier], progress: Progress | None
    ) -> None:
        self.connection = connection
        self.verifiers = verifiers
        self.progress = progress
        self.frontier: dict[int, bytes] = {}  # level -> hash of the root-side perfect subtree
        self.done = 0
        self.erased = 0
        self.checkpoints = 0
        self.origin: str | None = None
        self.previous: tuple[int, bytes] | None = None

    def run(self, batch: int) -> AuditReport:
        total = self._claimed_size()
        try:
            pending = self._checkpoint_rows()
            upcoming = next(pending, None)
            upcoming = self._checkpoints_at(0, upcoming, pending)
            for start in range(0, total, batch):
                end = min(total, start + batch)
                rows = self._entries(start, end)
                nodes = self._nodes(start, end)
                for index in range(start, end):
                    self._append(index, rows.get(index), nodes, total)
                    upcoming = self._checkpoints_at(index + 1, upcoming, pending)
                if self.progress is not None:
                    self.progress(end, total)
            self._no_nodes_beyond(total)
        except _Tampered as tampered:
            return self._report(total, tampered.finding)
        return self._report(total, None)

    def _report(self, total: int, finding: Finding | None) -> AuditReport:
        return AuditReport(total, self.erased, self.checkpoints, self._root(), finding)

    # ----------------------------------------------------------------------- reading

    def _claimed_size(self) -> int:
        """The size the log claims anywhere (entries, the leaves under the last node of
        each level, checkpoints): so that a deleted tail is a missing entry."""
        last_entry = self.connection.execute(select(func.max(ledger_entries.c.idx))).scalar()
        signed = self.connection.execute(select(func.max(ledger_checkpoints.c.size))).scalar()
        claimed = [
            -1 if last_entry is None else int(last_entry) + 1,
            0 if signed is None else int(signed),
            0,
        ]
        for level in range(1, MAX_LEVEL):
            last_node = self.connection.execute(
                select(func.max(ledger_nodes.c.idx)).where(ledger_nodes.c.level == level)
            ).scalar()
            if last_node is not None:
                claimed.append((int(last_node) + 1) << level)
        return max(claimed)

    def _entries(self, start: int, end: int) -> dict[int, AnyRow]:
        query = (
            select(
                ledger_entries.c.idx,
                ledger_entries.c.kind,
                ledger_entries.c.leaf_hash,
                ledger_entries.c.body,
                ledger_entries.c.salt,
            )
            .where(ledger_entries.c.idx >= start, ledger_entries.c.idx < end)
            .order_by(ledger_entries.c.idx)
        )
        return {int(row.idx): row for row in self.connection.execute(query)}

    def _nodes(self, start: int, end: int) -> dict[merkle.Node, bytes]:
        """The stored interior nodes that appending the leaves [start, end) completes: at
        level l >= 1, those whose last leaf (i + 1) * 2**l - 1 falls in the range."""
        ranges = []
        for level in range(1, MAX_LEVEL):
            low, high = start >> level, end >> level
            if (1 << level) > end:
                break
            if low < high:
                ranges.append(
                    and_(
                        ledger_nodes.c.level == level,
                        ledger_nodes.c.idx >= low,
                        ledger_nodes.c.idx < high,
                    )
                )
        if not ranges:
            return {}
        query = select(ledger_nodes.c.level, ledger_nodes.c.idx, ledger_nodes.c.hash).where(
            or_(*ranges)
        )
        return {(int(row.level), int(row.idx)): row.hash for row in self.connection.execute(query)}

    def _checkpoint_rows(self) -> Iterator[AnyRow]:
        after = -1
        while True:
            rows = self.connection.execute(
                select(ledger_checkpoints)
                .where(ledger_checkpoints.c.size > after)
                .order_by(ledger_checkpoints.c.size)
                .limit(500)
            ).all()
            yield from rows
            if len(rows) < 500:
                return
            after = int(rows[-1].size)

    # ----------------------------------------------------------------------- entries

    def _append(
        self, index: int, row: AnyRow | None, nodes: dict[merkle.Node, bytes], total: int
    ) -> None:
        if row is None:
            raise _bad(index, f"the entry is missing (the log claims {total} entries)")
        if row.kind not in log.KINDS:
            raise _bad(index, f"unknown entry kind {row.kind!r}")
        leaf: bytes = row.leaf_hash
        if len(leaf) != merkle.HASH_SIZE:
            raise _bad(index, f"the leaf hash is {len(leaf)} bytes, not {merkle.HASH_SIZE}")
        if row.body is None and row.salt is None:
            self.erased += 1
        elif row.body is None or row.salt is None:
            raise _bad(index, "half erased: only one of body and salt was removed")
        elif log.entry_leaf_hash(row.kind, row.salt, row.body) != leaf:
            raise _bad(index, "its kind, body and salt do not hash to its leaf hash")
        created = merkle.hashes_created_by_append(
            index, leaf, lambda level, _: self.frontier[level]
        )
        for (level, node_index), value in created[1:]:
            stored = nodes.get((level, node_index))
            first, last = node_index << level, ((node_index + 1) << level) - 1
            if stored is None:
                raise _bad(index, f"tree node ({level}, {node_index}) is missing")
            if stored != value:
                raise _bad(
                    index,
                    f"tree node ({level}, {node_index}) over entries {first}..{last} differs "
                    "from the hash recomputed from the entries",
                )
        top = len(created) - 1
        for level in range(top):
            del self.frontier[level]
        self.frontier[top] = created[-1][1]
        self.done = index + 1

    def _root(self) -> bytes:
        return merkle.root_from_nodes(self.done, lambda level, _: self.frontier[level])

    def _no_nodes_beyond(self, total: int) -> None:
        beyond = [
            and_(ledger_nodes.c.level == level, ledger_nodes.c.idx >= total >> level)
            for level in range(1, MAX_LEVEL)
        ]
        query = (
            select(ledger_nodes.c.level, ledger_nodes.c.idx)
            .where(or_(ledger_nodes.c.level < 1, ledger_nodes.c.level >= MAX_LEVEL, *beyond))
            .order_by(ledger_nodes.c.level, ledger_nodes.c.idx)
            .limit(1)
        )
        row = self.connection.execute(query).first()
        if row is None:
            return
        if row.level < 1:
            raise _bad(
                total, f"tree node ({row.level}, {row.idx}) is stored, but leaves are not nodes"
            )
        raise _bad(total, f"tree node ({row.level}, {row.idx}) lies beyond the end of the log")

    # ----------------------------------------------------------------------- checkpoints

    def _checkpoints_at(
        self, size: int, upcoming: AnyRow | None, pending: Iterator[AnyRow]
    ) -> AnyRow | None:
        while upcoming is not None and int(upcoming.size) <= size:
            self._check_checkpoint(upcoming)
            upcoming = next(pending, None)
        return upcoming

    def _check_checkpoint(self, row: AnyRow) -> None:
        size = int(row.size)
        try:
            text, signed_by = open_note(row.note, self.verifiers)
            body = parse_checkpoint(text)
        except NoteError as error:
            raise _bad_checkpoint(size, f"its signed note does not verify: {error}") from None
        if body.origin not in signed_by:
            raise _bad_checkpoint(size, f"it is not signed by a key named {body.origin}")
        if self.origin is not None and body.origin != self.origin:
            raise _bad_checkpoint(
                size, f"its origin {body.origin} differs from earlier checkpoints' {self.origin}"
            )
        if body.size != size:
            raise _bad_checkpoint(size, f"its signed note is for size {body.size}")
        if body.root != row.root:
            raise _bad_checkpoint(size, "the stored root differs from the signed root")
        if body.root != self._root():
            raise _bad_checkpoint(
                size, "the signed root differs from the root recomputed from the entries"
            )
        if self.previous is not None and self.previous[0] > 0:
            old_size, old_root = self.previous
            try:
                proof = log.consistency_proof(self.connection, old_size, size)
                merkle.verify_consistency(old_size, size, proof, old_root, body.root)
            except (log.LedgerError, merkle.ProofError) as error:
                raise _bad_checkpoint(
                    size, f"it is not proven consistent with checkpoint {old_size}: {error}"
                ) from None
        self.origin = body.origin
        self.previous = (size, body.root)
        self.checkpoints += 1


def _bad(index: int, reason: str) -> _Tampered:
    return _Tampered(Finding(reason, index=index))


def _bad_checkpoint(size: int, reason: str) -> _Tampered:
    return _Tampered(Finding(reason, checkpoint_size=size))
