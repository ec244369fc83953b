"""Ledger: the transparency log of `parcelvault.ledger.log` on SQLite, in a database made
by `parcelvault init`, beside raw sqlite3 ceilings and pymerkle measured in the same run.

1. A 1,000,000-leaf log is built directly, not through the sequencer: leaf hashes from
   `log.entry_leaf_hash`, every complete subtree from `merkle.InMemoryTree`, the
   `ledger_entries` rows and the `ledger_nodes` rows (levels >= 1; the leaves are the
   entries' leaf hashes) written with raw sqlite3 executemany. Its root,
   read back through `log.root`, must equal `merkle.root_from_leaf_hashes` of the leaves.
   pymerkle's `SqliteTree` is fed the same leaf data and must have the same root.
2. Proofs at size 1,000,000, on one open connection: `log.inclusion_proof` for random
   indexes and `log.consistency_proof` for random (m, n), each call timed; beside one raw
   sqlite3 query for the same nodes (the ceiling), the raw query with `fetch_nodes`' own
   SQL, and pymerkle's `prove_inclusion` / `prove_consistency`. Each implementation gets
   up to 2,000 samples or 4 s per kind and round. Every timed proof is verified against
   roots computed in memory (`merkle.verify_inclusion` / `verify_consistency`; pymerkle's
   with its own verifier, its audit paths also with parcelvault's), every raw read is
   compared with the in-memory nodes.
3. Appends onto that log: 100,000 entries queued with `log.enqueue` (not timed), then
   `log.sequence(limit=50,000)` until the queue is empty, timed. Every node the sequencer
   wrote is compared with the in-memory tree fed the leaves recomputed from the stored
   kind, salt and body. Ceilings: the same SHA-256 work and the same rows (an entry and
   the interior nodes its append completes), raw sqlite3,
   50,000 entries a transaction, into bare tables and into tables with the ledger's own
   DDL; and pymerkle appending the same leaf data (`append_entries`, one transaction).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from bench.common import BenchError, Result, init_folder, log, median, service_env
from parcelvault.adapters.db.engine import make_engine
from parcelvault.adapters.db.tables import consents, ledger_refs
from parcelvault.ledger import log as ledger_log
from parcelvault.ledger import merkle

BATCH = 50_000  # entries per sequencer call and per ceiling transaction
WARMUP = 200
WARMUP_S = 1.0
SUBJECTS = 5_000
KINDS = ("consent", "erasure", "key_rotation", "policy_change")
GOAL_APPENDS = 100_000  # entries/s
GOAL_PROOF_P50 = 0.2  # ms


@dataclass(frozen=True)
class Sizes:
    log_size: int
    appends: int  # per round
    proofs: int  # samples per kind and round, at most
    budget_s: float  # per implementation, kind and round, at most


FULL = Sizes(1_000_000, 100_000, 2_000, 4.0)
QUICK = Sizes(100_000, 20_000, 300, 1.0)


def require_pymerkle() -> ModuleType:
    """pymerkle 7 (SqliteTree with get_root), or a BenchError saying how to install it."""
    try:
        pymerkle = importlib.import_module("pymerkle")
    except ImportError:
        raise BenchError(
            "the ledger benchmark compares with pymerkle, which is not installed: "
            "`.venv/bin/pip install -e '.[dev]'` (or `.venv/bin/pip install 'pymerkle>=7'`)"
        ) from None
    if not hasattr(getattr(pymerkle, "SqliteTree", None), "get_root"):
        raise BenchError("this pymerkle is too old (no SqliteTree.get_root); install pymerkle>=7")
    return pymerkle


def _stamp(value: datetime) -> str:
    """The text SQLAlchemy's SQLite dialect stores for a UTC timestamp."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# --- entries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str
    body: dict[str, Any]
    subject_id: str
    ref: str


_SUBJECT_IDS = [f"{random.Random(3).getrandbits(256) ^ n:064x}" for n in range(SUBJECTS)]


def entries(count: int, *, first: int, rng: random.Random, now: datetime) -> list[Entry]:
    """Queue entries shaped like consent records (~230-byte canonical bodies), for
    SUBJECTS data subjects with random ids; nine in ten are consents (ref
    `consent:<n>`), the others erasures, key rotations and policy changes (ref
    `<kind>:<n>`, kept in `ledger_refs`)."""
    at = now.isoformat()
    out = []
    for n in range(first, first + count):
        subject = rng.choice(_SUBJECT_IDS)
        kind = KINDS[0] if n % 10 else KINDS[n // 10 % len(KINDS)]
        body = {
            "record": f"{kind}-{n}",
            "subject": subject,
            "purpose": "tracking",
            "granted": bool(n % 3),
            "at": at,
            "policy": f"sha256:{rng.getrandbits(256):064x}",
        }
        out.append(Entry(kind, body, subject, f"{kind}:{n}"))
    return out


# --- building the 1M-leaf log --------------------------------------------------------------


def _raw(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


ENTRY_INSERT = (
    "INSERT INTO ledger_entries (idx, kind, leaf_hash, body, salt, "
    "created_at, sequenced_at, erased_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
NODE_INSERT = "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)"


def build_log(
    db: Path, tree: merkle.InMemoryTree, pm_tree: Any, *, size: int, now: datetime
) -> tuple[list[bytes], float]:
    """Fill an empty log with `size` entries; returns the leaf hashes and the seconds."""
    started = time.perf_counter()
    rng = random.Random(11)
    stamp = _stamp(now)
    leaves: list[bytes] = []
    connection = _raw(db)
    try:
        for first in range(0, size, BATCH):
            chunk = entries(min(BATCH, size - first), first=first, rng=rng, now=now)
            rows = []
            data = []
            for n, item in enumerate(chunk, first):
                body = ledger_log.canonical(item.body)
                salt = os.urandom(ledger_log.SALT_BYTES)
                leaf = ledger_log.entry_leaf_hash(item.kind, salt, body)
                tree.append(leaf)
                leaves.append(leaf)
                data.append(ledger_log.leaf_data(item.kind, salt, body))
                rows.append((n, item.kind, leaf, body, salt, stamp, stamp, None))
            connection.execute("BEGIN")
            connection.executemany(ENTRY_INSERT, rows)
            connection.execute("COMMIT")
            pm_tree.append_entries(data, chunksize=BATCH)
        level = 1
        while size >> level:
            count = size >> level
            for first in range(0, count, 200_000):
                connection.execute("BEGIN")
                connection.executemany(
                    NODE_INSERT,
                    (
                        (level, i, tree.get_node(level, i))
                        for i in range(first, min(count, first + 200_000))
                    ),
                )
                connection.execute("COMMIT")
            level += 1
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return leaves, time.perf_counter() - started


def ledger_ddl(db: Path) -> str:
    connection = sqlite3.connect(db)
    try:
        found = connection.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name IN ('ledger_entries', 'ledger_nodes') "
            "AND sql IS NOT NULL ORDER BY type DESC, name"
        ).fetchall()
    finally:
        connection.close()
    if len(found) < 2:
        raise BenchError("the database has no ledger tables; is the schema current?")
    return ";\n".join(sql for (sql,) in found) + ";"


# --- timing helpers ----------------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Timed:
    """Per-call milliseconds of one implementation in one round, and what each call
    returned (the k-th answer is for the k-th sample)."""

    ms: list[float]
    answers: list[Any]

    @property
    def p50(self) -> float:
        return _quantile(self.ms, 0.5)

    @property
    def p99(self) -> float:
        return _quantile(self.ms, 0.99)


def _time_calls(call: Callable[[int], Any], count: int, budget_s: float) -> Timed:
    """call(0), call(1), ... until `count` calls or `budget_s` seconds, each timed."""
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    ms: list[float] = []
    answers: list[Any] = []
    for k in range(count):
        started = clock()
        answer = call(k)
        ended = clock()
        ms.append((ended - started) / 1e6)
        answers.append(answer)
        if ended > deadline:
            break
    return Timed(ms, answers)


Nodes = list[tuple[int, int]]


def _split(nodes: Nodes) -> tuple[list[int], list[tuple[int, int]]]:
    """The leaves' indexes (level 0, read from ledger_entries) and the interior nodes."""
    wanted = sorted(set(nodes))
    return [i for level, i in wanted if level == 0], [n for n in wanted if n[0] > 0]


def _indexed_fetch(connection: sqlite3.Connection) -> Callable[[Nodes], list[Any]]:
    """The fastest one-query read of the given nodes: the interior nodes as VALUES
    joined to the primary key of ledger_nodes (SQLite searches the key once per node),
    the leaves by rowid from ledger_entries."""

    def fetch(nodes: Nodes) -> list[Any]:
        leaves, interior = _split(nodes)
        parts, params = [], []
        if interior:
            values = ", ".join(["(?, ?)"] * len(interior))
            parts.append(
                f"WITH wanted(level, idx) AS (VALUES {values}) "
                "SELECT n.level, n.idx, n.hash FROM wanted "
                "JOIN ledger_nodes AS n ON n.level = wanted.level AND n.idx = wanted.idx"
            )
            params += [value for node in interior for value in node]
        if leaves:
            marks = ", ".join(["?"] * len(leaves))
            parts.append(f"SELECT 0, idx, leaf_hash FROM ledger_entries WHERE idx IN ({marks})")
            params += leaves
        return connection.execute(" UNION ALL ".join(parts), params).fetchall()

    return fetch


def _fetch_nodes_sql(connection: sqlite3.Connection) -> Callable[[Nodes], list[Any]]:
    """The row-value IN query `log.fetch_nodes` used to send for the tree nodes, straight
    to sqlite3: kept as a reference for how SQLite plans it (a full scan of the node
    table). The leaves are read by rowid, as `fetch_nodes` does."""

    def fetch(nodes: Nodes) -> list[Any]:
        leaves, interior = _split(nodes)
        values = ", ".join(["(?, ?)"] * max(1, len(interior)))
        marks = ", ".join(["?"] * max(1, len(leaves)))
        return connection.execute(
            f"SELECT level, idx, hash FROM ledger_nodes WHERE (level, idx) IN (VALUES {values}) "
            f"UNION ALL SELECT 0, idx, leaf_hash FROM ledger_entries WHERE idx IN ({marks})",
            [*(value for node in interior or [(-1, -1)] for value in node), *(leaves or [-1])],
        ).fetchall()

    return fetch


# --- proofs --------------------------------------------------------------------------------


@dataclass
class ProofRound:
    inclusion: dict[str, Timed]
    consistency: dict[str, Timed]


@dataclass(frozen=True)
class Samples:
    size: int
    indexes: list[int]
    pairs: list[tuple[int, int]]
    inclusion_nodes: list[Nodes]
    consistency_nodes: list[Nodes]


def samples(size: int, count: int, seed: int) -> Samples:
    rng = random.Random(seed)
    indexes = [rng.randrange(size) for _ in range(count)]
    pairs = []
    for _ in range(count):
        old = rng.randrange(1, size)
        pairs.append((old, rng.randrange(old + 1, size + 1)))
    return Samples(
        size,
        indexes,
        pairs,
        [merkle.inclusion_proof_nodes(i, size) for i in indexes],
        [merkle.consistency_proof_nodes(m, n) for m, n in pairs],
    )


NAMES = {
    "pv": "parcelvault",
    "raw": "indexed sqlite3",
    "pm": "pymerkle",
    "same_sql": "fetch_nodes' SQL",
}
# implementation -> (inclusion call, consistency call or None), each taking a sample number
Calls = dict[str, tuple[Callable[[int], Any], Callable[[int], Any] | None]]


def _calls(connection: Connection, raw: sqlite3.Connection, pm_tree: Any, s: Samples) -> Calls:
    size, indexes, pairs = s.size, s.indexes, s.pairs
    indexed, same_sql = _indexed_fetch(raw), _fetch_nodes_sql(raw)
    return {
        "pv": (
            lambda k: ledger_log.inclusion_proof(connection, indexes[k], size),
            lambda k: ledger_log.consistency_proof(connection, *pairs[k]),
        ),
        "raw": (
            lambda k: indexed(s.inclusion_nodes[k]),
            lambda k: indexed(s.consistency_nodes[k]),
        ),
        "pm": (
            lambda k: pm_tree.prove_inclusion(indexes[k] + 1, size),
            lambda k: pm_tree.prove_consistency(*pairs[k]),
        ),
        "same_sql": (lambda k: same_sql(s.inclusion_nodes[k]), None),
    }


def proof_round(
    engine: Engine,
    db: Path,
    pm_tree: Any,
    pymerkle: ModuleType,
    tree: merkle.InMemoryTree,
    s: Samples,
    *,
    budget_s: float,
    reverse: bool,
) -> ProofRound:
    """Each implementation answers as many of the samples as it can in `budget_s`
    seconds per kind of proof (the raw read with fetch_nodes' SQL gets a fifth of that);
    the order of the implementations is reversed every other round."""
    inclusion: dict[str, Timed] = {}
    consistency: dict[str, Timed] = {}
    raw = _raw(db)
    try:
        with engine.connect() as connection:
            calls = _calls(connection, raw, pm_tree, s)
            steps = []
            for name, (include, consist) in calls.items():
                budget = budget_s / 5 if name == "same_sql" else budget_s
                steps.append((inclusion, name, include, budget))
                if consist is not None:
                    steps.append((consistency, name, consist, budget))
            for into, name, call, budget in reversed(steps) if reverse else steps:
                into[name] = _time_calls(call, len(s.indexes), budget)
    finally:
        raw.close()
    _verify_proofs(pymerkle, tree, s, inclusion, consistency)
    return ProofRound(inclusion, consistency)


def warm_up(engine: Engine, db: Path, pm_tree: Any, size: int) -> None:
    """Untimed: SQLAlchemy's statement cache, SQLite's page cache, pymerkle's subroot
    cache; up to WARMUP calls or WARMUP_S seconds per implementation and kind."""
    s = samples(size, WARMUP, seed=1)
    raw = _raw(db)
    try:
        with engine.connect() as connection:
            for include, consist in _calls(connection, raw, pm_tree, s).values():
                for call in (include, consist):
                    if call is not None:
                        _time_calls(call, WARMUP, WARMUP_S)
    finally:
        raw.close()


def _verify_proofs(
    pymerkle: ModuleType,
    tree: merkle.InMemoryTree,
    s: Samples,
    inclusion: dict[str, Timed],
    consistency: dict[str, Timed],
) -> None:
    """Every timed proof, against roots computed in memory; every raw read, against the
    in-memory nodes."""

    size = s.size
    root = tree.root(size)
    try:
        for k, proof in enumerate(inclusion["pv"].answers):
            i = s.indexes[k]
            merkle.verify_inclusion(tree.get_node(0, i), i, size, proof, root)
        for k, answer in enumerate(inclusion["pm"].answers):
            i = s.indexes[k]
            leaf = tree.get_node(0, i)
            pymerkle.verify_inclusion(leaf, root, answer, index=i + 1, size=size)
            merkle.verify_inclusion(leaf, i, size, answer.path[1:], root)
        for k, proof in enumerate(consistency["pv"].answers):
            old, new = s.pairs[k]
            merkle.verify_consistency(old, new, proof, tree.root(old), tree.root(new))
        for k, answer in enumerate(consistency["pm"].answers):
            old, new = s.pairs[k]
            pymerkle.verify_consistency(
                tree.root(old), tree.root(new), answer, prior_size=old, later_size=new
            )
        reads = [
            (inclusion["raw"], s.inclusion_nodes),
            (inclusion["same_sql"], s.inclusion_nodes),
            (consistency["raw"], s.consistency_nodes),
        ]
        for timed, wanted in reads:
            for k, rows in enumerate(timed.answers):
                if {(level, i): value for level, i, value in rows} != {
                    node: tree.get_node(*node) for node in wanted[k]
                }:
                    raise merkle.ProofError("a raw read returned other nodes than asked for")
        # and the verifier does reject a proof with one bit changed
        bad = list(inclusion["pv"].answers[0])
        bad[-1] = bytes([bad[-1][0] ^ 1]) + bad[-1][1:]
        first = s.indexes[0]
        try:
            merkle.verify_inclusion(tree.get_node(0, first), first, size, bad, root)
        except merkle.ProofError:
            pass
        else:
            raise BenchError("merkle.verify_inclusion accepted a tampered proof")
    except (merkle.ProofError, pymerkle.InvalidProof) as exc:
        raise BenchError(f"a timed proof does not verify: {exc}") from exc


# --- appends -------------------------------------------------------------------------------

BARE_DDL = """
CREATE TABLE ledger_entries (
    idx INTEGER, kind TEXT, leaf_hash BLOB, body BLOB, salt BLOB,
    created_at TEXT, sequenced_at TEXT, erased_at TEXT
);
CREATE TABLE ledger_nodes (level INTEGER, idx INTEGER, hash BLOB);
"""

Stored = tuple[str, bytes, bytes]  # kind, body, salt


def ceiling_appends(
    items: Sequence[Stored], ddl: str, folder: Path, stamp: str
) -> tuple[float, int]:
    """SHA-256 of every leaf and every complete subtree, plus raw executemany of the
    rows (an entry and the interior nodes its append completes) into tables made with
    `ddl`, BATCH entries a transaction, in a fresh file. Returns (entries per second,
    rows inserted)."""
    sha = hashlib.sha256
    prefix = ledger_log.LEAF_PREFIX
    rows_inserted = 0
    with tempfile.TemporaryDirectory(dir=folder, prefix="ceiling-") as tmp:
        connection = _raw(Path(tmp) / "ceiling.db")
        try:
            connection.executescript(ddl)
            pending: list[bytes] = []  # per level, the complete subtree awaiting its sibling
            started = time.perf_counter()
            for first in range(0, len(items), BATCH):
                entry_rows = []
                node_rows = []
                for n, (kind, body, salt) in enumerate(items[first : first + BATCH], first):
                    data = prefix + kind.encode() + b"\n" + sha(salt + body).digest()
                    leaf = sha(b"\x00" + data).digest()
                    entry_rows.append((n, kind, leaf, body, salt, stamp, stamp, None))
                    current, level, index = leaf, 0, n
                    while index & 1:
                        current = sha(b"\x01" + pending[level] + current).digest()
                        level += 1
                        index >>= 1
                        node_rows.append((level, index, current))
                    if level == len(pending):
                        pending.append(current)
                    else:
                        pending[level] = current
                connection.execute("BEGIN")
                connection.executemany(ENTRY_INSERT, entry_rows)
                connection.executemany(NODE_INSERT, node_rows)
                connection.execute("COMMIT")
                rows_inserted += len(entry_rows) + len(node_rows)
            elapsed = time.perf_counter() - started
        finally:
            connection.close()
    return len(items) / elapsed, rows_inserted


@dataclass
class AppendRound:
    per_s: float
    seconds: float
    rows: int
    bare_per_s: float
    keyed_per_s: float
    ceiling_rows: int
    pymerkle_per_s: float


def append_round(
    engine: Engine,
    db: Path,
    pm_tree: Any,
    tree: merkle.InMemoryTree,
    ddl: str,
    workdir: Path,
    *,
    count: int,
    seed: int,
) -> AppendRound:

    now = datetime.now(UTC)
    with engine.connect() as connection:
        start = ledger_log.size(connection)
    batch = entries(count, first=start, rng=random.Random(seed), now=now)
    with engine.begin() as connection:
        # the consent rows the consent entries record, placed by the sequencer too
        connection.execute(
            insert(consents),
            [
                {
                    "id": int(item.ref.removeprefix(ledger_log.CONSENT_REF_PREFIX)),
                    "subject_id": item.subject_id,
                    "purpose": item.body["purpose"],
                    "granted": item.body["granted"],
                    "notice_version": "bench",
                    "source": "recipient_api",
                    "at": now,
                }
                for item in batch
                if item.kind == "consent"
            ],
        )
        for item in batch:
            ledger_log.enqueue(
                connection,
                kind=item.kind,
                body=item.body,
                subject_id=item.subject_id,
                ref=item.ref,
                now=now,
            )
    rows_before = _count_rows(db)
    started = time.perf_counter()
    appended = 0
    while done := ledger_log.sequence(engine, now=now, limit=BATCH):
        appended += done
    seconds = time.perf_counter() - started
    if appended != count:
        raise BenchError(f"the sequencer appended {appended:,} entries of {count:,}")
    rows = _count_rows(db) - rows_before
    stored = _check_appended(engine, db, tree, start=start, count=count)
    _check_placed(engine, batch, start=start)

    # pymerkle: the same leaf data, computed from the same kind, salt and body
    pm_started = time.perf_counter()
    pm_tree.append_entries(
        (ledger_log.leaf_data(kind, salt, body) for kind, body, salt in stored),
        chunksize=BATCH,
    )
    pm_per_s = count / (time.perf_counter() - pm_started)
    if pm_tree.get_root() != tree.root():
        raise BenchError("pymerkle's root differs from parcelvault's after the same appends")

    stamp = _stamp(now)
    bare, ceiling_rows = ceiling_appends(stored, BARE_DDL, workdir, stamp)
    keyed, _ = ceiling_appends(stored, ddl, workdir, stamp)
    return AppendRound(count / seconds, seconds, rows, bare, keyed, ceiling_rows, pm_per_s)


def _check_placed(engine: Engine, batch: Sequence[Entry], *, start: int) -> None:
    """Every consent row names its entry's index; every other reference is in
    `ledger_refs` with its entry's index."""
    with engine.connect() as connection:
        placed = dict(
            connection.execute(
                select(consents.c.id, consents.c.ledger_index).where(
                    consents.c.ledger_index >= start
                )
            ).all()
        )
        refs = dict(
            connection.execute(
                select(ledger_refs.c.ref, ledger_refs.c.idx).where(ledger_refs.c.idx >= start)
            ).all()
        )
    for index, item in enumerate(batch, start):
        if item.kind == "consent":
            found = placed.get(int(item.ref.removeprefix(ledger_log.CONSENT_REF_PREFIX)))
        else:
            found = refs.get(item.ref)
        if found != index:
            raise BenchError(f"entry {index} ({item.ref}) was placed as {found}")


def _count_rows(db: Path) -> int:
    connection = sqlite3.connect(db)
    try:
        (entry_rows,) = connection.execute("SELECT count(*) FROM ledger_entries").fetchone()
        (node_rows,) = connection.execute("SELECT count(*) FROM ledger_nodes").fetchone()
    finally:
        connection.close()
    return int(entry_rows) + int(node_rows)


def _check_appended(
    engine: Engine, db: Path, tree: merkle.InMemoryTree, *, start: int, count: int
) -> list[Stored]:
    """Recompute each new leaf from its stored kind, salt and body, extend the in-memory
    tree with them, and compare every node the sequencer wrote; returns the new entries."""

    size = start + count
    connection = sqlite3.connect(db)
    try:
        stored = connection.execute(
            "SELECT idx, kind, leaf_hash, body, salt FROM ledger_entries "
            "WHERE idx >= ? ORDER BY idx",
            (start,),
        ).fetchall()
        if [row[0] for row in stored] != list(range(start, size)):
            raise BenchError("the sequencer's entries are not numbered consecutively")
        sha = hashlib.sha256
        for _, kind, leaf, body, salt in stored:
            data = ledger_log.LEAF_PREFIX + kind.encode() + b"\n" + sha(salt + body).digest()
            if sha(b"\x00" + data).digest() != leaf:
                raise BenchError("a sequenced leaf hash does not match its kind, salt and body")
            tree.append(leaf)
        level = 1
        while size >> level:
            first, last = start >> level, size >> level
            found = connection.execute(
                "SELECT idx, hash FROM ledger_nodes WHERE level = ? AND idx >= ? ORDER BY idx",
                (level, first),
            ).fetchall()
            if found != [(i, tree.get_node(level, i)) for i in range(first, last)]:
                raise BenchError(f"the sequencer wrote wrong or missing nodes at level {level}")
            level += 1
        (queued,) = connection.execute("SELECT count(*) FROM ledger_queue").fetchone()
        if queued:
            raise BenchError(f"{queued} entries are still queued after sequencing")
    finally:
        connection.close()
    with engine.connect() as conn:
        if ledger_log.root(conn, size) != tree.root():
            raise BenchError("the log's root after sequencing differs from the in-memory tree")
    return [(kind, body, salt) for _, kind, _, body, salt in stored]


# --- the benchmark -------------------------------------------------------------------------


def pymerkle_version() -> str:
    from importlib.metadata import version

    return version("pymerkle")


def _open_pymerkle(pymerkle: ModuleType, path: Path) -> Any:
    pm_tree = pymerkle.SqliteTree(str(path))
    # the service's pragmas, so both write the same way
    pm_tree.con.execute("PRAGMA journal_mode=WAL")
    pm_tree.con.execute("PRAGMA synchronous=NORMAL")
    return pm_tree


def run(workdir: Path, *, rounds: int, quick: bool = False) -> list[Result]:
    pymerkle = require_pymerkle()
    sizes = QUICK if quick else FULL
    folder = workdir / "ledger"
    init_folder(folder, service_env(folder))
    db = folder / "parcelvault.db"
    engine = make_engine(f"sqlite:///{db}")
    pm_tree = _open_pymerkle(pymerkle, folder / "pymerkle.db")
    try:
        return _run(engine, db, pm_tree, pymerkle, workdir, sizes=sizes, rounds=rounds)
    finally:
        pm_tree.close()
        engine.dispose()


def _run(
    engine: Engine,
    db: Path,
    pm_tree: Any,
    pymerkle: ModuleType,
    workdir: Path,
    *,
    sizes: Sizes,
    rounds: int,
) -> list[Result]:
    size = sizes.log_size
    tree = merkle.InMemoryTree()
    leaves, seconds = build_log(db, tree, pm_tree, size=size, now=datetime.now(UTC))
    expected = merkle.root_from_leaf_hashes(leaves)
    del leaves
    with engine.connect() as connection:
        if ledger_log.size(connection) != size:
            raise BenchError("the built log has the wrong size")
        if ledger_log.root(connection, size) != expected or tree.root() != expected:
            raise BenchError("the built log's root differs from the root of its leaves")
    if pm_tree.get_root(size) != expected:
        raise BenchError("pymerkle's root differs from parcelvault's for the same leaves")
    log(
        f"  built a {size:,}-leaf log in {seconds:.0f} s (hashes: merkle.InMemoryTree; rows: "
        f"sqlite3 executemany; pymerkle {pymerkle_version()} SqliteTree fed the same leaf data)"
    )
    warm_up(engine, db, pm_tree, size)

    proof_rounds: list[ProofRound] = []
    for r in range(rounds):
        s = samples(size, sizes.proofs, seed=100 + r)
        done = proof_round(
            engine, db, pm_tree, pymerkle, tree, s, budget_s=sizes.budget_s, reverse=r % 2 == 1
        )
        proof_rounds.append(done)
        log(f"  proofs round {r + 1} (p50 / p99 ms, calls; every proof verified):")
        for kind, timed in (("inclusion", done.inclusion), ("consistency", done.consistency)):
            cells = ", ".join(
                f"{NAMES[name]} {t.p50:.3f} / {t.p99:.3f} ({len(t.ms):,})"
                for name, t in timed.items()
            )
            log(f"    {kind}: {cells}")

    ddl = ledger_ddl(db)
    append_rounds: list[AppendRound] = []
    for r in range(rounds):
        a = append_round(engine, db, pm_tree, tree, ddl, workdir, count=sizes.appends, seed=200 + r)
        append_rounds.append(a)
        log(
            f"  appends round {r + 1}: {a.per_s:,.0f} entries/s ({sizes.appends:,} entries, "
            f"{a.rows:,} rows in {a.seconds:.2f} s; all nodes checked); ceiling "
            f"{a.bare_per_s:,.0f} bare / {a.keyed_per_s:,.0f} keyed ({a.ceiling_rows:,} rows); "
            f"pymerkle {a.pymerkle_per_s:,.0f}"
        )
    return _results(sizes, proof_rounds, append_rounds)


def _results(
    sizes: Sizes, proof_rounds: list[ProofRound], append_rounds: list[AppendRound]
) -> list[Result]:
    pm = f"pymerkle {pymerkle_version()} SqliteTree, same leaves, same run"
    bare = "sha256 + sqlite3 executemany of the same rows, bare ledger tables"
    indexed = "sqlite3, one indexed query for the proof's nodes"
    leaves = "1M" if sizes.log_size == 1_000_000 else f"{sizes.log_size:,}"

    def appends(field: str) -> tuple[float, ...]:
        return tuple(getattr(a, field) for a in append_rounds)

    out = [
        Result(
            name=f"Ledger appends, log.sequence of {sizes.appends:,} queued entries",
            unit="entries/s",
            value=median(appends("per_s")),
            ceiling=median(appends("bare_per_s")),
            ceiling_name=bare,
            goal=GOAL_APPENDS,
            rounds=appends("per_s"),
            ceiling_rounds=appends("bare_per_s"),
        ),
        Result(
            name="sha256 + sqlite3 executemany into the ledger tables' keys and indexes",
            unit="entries/s",
            value=median(appends("keyed_per_s")),
            ceiling=median(appends("bare_per_s")),
            ceiling_name=bare,
            rounds=appends("keyed_per_s"),
            ceiling_rounds=appends("bare_per_s"),
        ),
        Result(
            name="Ledger appends, parcelvault ÷ pymerkle append_entries",
            unit="entries/s",
            value=median(appends("per_s")),
            ceiling=median(appends("pymerkle_per_s")),
            ceiling_name=pm,
            rounds=appends("per_s"),
            ceiling_rounds=appends("pymerkle_per_s"),
        ),
    ]
    for kind in ("inclusion", "consistency"):
        timed = [getattr(p, kind) for p in proof_rounds]

        def stat(name: str, which: str, timed: list[dict[str, Timed]] = timed) -> list[float]:
            return [getattr(t[name], which) for t in timed]

        def latency(
            title: str, name: str, which: str, against: str, goal: float | None, ceiling: str
        ) -> Result:
            return Result(
                name=title,
                unit="ms",
                value=median(stat(name, which)),
                ceiling=median(stat(against, which)),
                ceiling_name=ceiling,
                goal=goal,
                higher_is_better=False,
                rounds=tuple(stat(name, which)),
                ceiling_rounds=tuple(stat(against, which)),
            )

        title = f"{kind.capitalize()} proof"
        call = f"log.{kind}_proof"
        out.append(
            latency(
                f"{title} p50, {leaves} leaves ({call})",
                "pv",
                "p50",
                "raw",
                GOAL_PROOF_P50,
                indexed,
            )
        )
        out.append(
            latency(f"{title} p99, {leaves} leaves ({call})", "pv", "p99", "raw", None, indexed)
        )
        if kind == "inclusion":
            out.append(
                latency(
                    "sqlite3 with a row-value IN (the former query), inclusion p50",
                    "same_sql",
                    "p50",
                    "raw",
                    None,
                    indexed,
                )
            )
        out.append(
            latency(
                f"{title} p50, parcelvault ÷ pymerkle prove_{kind}", "pv", "p50", "pm", None, pm
            )
        )
    return out
