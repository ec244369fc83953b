"""Bulk import of shipments and scan events from JSON Lines or CSV files.

The pipeline, in constant memory whatever the file size:

1. read: the file is read one line (CSV: one record) at a time; a line longer than
   64 KiB is skipped without being held in memory;
2. parse and validate, once per line, with the wire models (`ImportLine`) as the API
   does: JSON text goes straight to pydantic's JSON parser, CSV rows through the
   csv module and the flat column layout of docs/import.md;
3. write: lines are grouped in chunks and each chunk is written in ONE transaction,
   its shipments first, then its events, through the same `ingest.prepare_*` checks
   as the API (unknown tracking numbers, future times, duplicate event ids).

For files of PARALLEL_MIN_BYTES or more, steps 1 and 2 run in other processes (two on a
machine with two cores or more, taking every other chunk), ahead of step 3, with the
same results.

A bad line is rejected and reported by line number (1-based; a CSV header is line 1)
and field, never by value; the good lines are written. Reruns are no-ops: a shipment
whose tracking number the tenant already has (from an earlier run, or earlier in the
same file) is counted as already present and left unchanged, and events are
deduplicated by `event_id`. That is why shipment lines must carry a tracking number.
What is written and rejected does not depend on the chunk size: an event line that
comes before the line of its shipment is rejected even when both land in one chunk.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gc
import itertools
import multiprocessing
import os
import pickle
import re
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from multiprocessing.connection import Connection as MpConnection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any, NamedTuple

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from parcelvault.adapters.db import scratch_copy, store
from parcelvault.adapters.wire import EventLine, ImportLine, ShipmentLine
from parcelvault.crypto.keyring import Keyring
from parcelvault.crypto.keystore import StoredKey
from parcelvault.domain.errors import DomainError
from parcelvault.domain.shipments import Destination, NewShipment, Origin, Recipient
from parcelvault.privacy.policy import Policy
from parcelvault.services import ingest
from parcelvault.services.tenants import tenant_principal
from parcelvault.services.vault import Vault

MAX_LINE_BYTES = 64 * 1024
DEFAULT_CHUNK_SIZE = 12_000
"""Lines per chunk (one transaction each). Fewer, larger transactions rewrite the
randomly ordered index pages (event ids, tracking numbers, subject keys) less often:
12,000 lines took the writer about a tenth less CPU time than 4,000."""
KEPT_REJECTIONS = 1000
WHOLE_LINE = "(line)"
STREET_SEPARATOR = "|"

CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "type": ("type",),
    "tracking_number": ("tracking_number",),
    "reference": ("reference",),
    "service": ("service",),
    "promised_date": ("promised_date",),
    "origin_country": ("origin", "country"),
    "origin_region": ("origin", "region"),
    "origin_city": ("origin", "city"),
    "origin_postcode": ("origin", "postcode"),
    "destination_country": ("destination", "country"),
    "destination_region": ("destination", "region"),
    "destination_city": ("destination", "city"),
    "destination_postcode": ("destination", "postcode"),
    "destination_street": ("destination", "street"),
    "recipient_name": ("recipient", "name"),
    "recipient_email": ("recipient", "email"),
    "recipient_phone": ("recipient", "phone"),
    "event_id": ("event_id",),
    "time": ("time",),
    "status": ("status",),
    "reason": ("reason",),
    "description": ("description",),
    "location_country": ("location", "country"),
    "location_region": ("location", "region"),
    "location_city": ("location", "city"),
    "location_facility": ("location", "facility"),
    "proof_received_by": ("proof", "received_by"),
    "proof_signature": ("proof", "signature"),
    "proof_photo": ("proof", "photo"),
    "proof_geo_lat": ("proof", "geo", "lat"),
    "proof_geo_lon": ("proof", "geo", "lon"),
}
"""CSV column -> path in an import record. Every column is optional except `type`."""

_COLUMN_OF = {path: name for name, path in CSV_COLUMNS.items()}
_LIST_PATHS = frozenset({("destination", "street")})
_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ADAPTER: TypeAdapter[ShipmentLine | EventLine] = TypeAdapter(ImportLine)


class ImportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


_EXTENSIONS = {
    ".jsonl": ImportFormat.JSONL,
    ".ndjson": ImportFormat.JSONL,
    ".csv": ImportFormat.CSV,
}


class UnreadableFile(DomainError):
    """The file cannot be opened or read at all (nothing of it was imported)."""


class UnknownFormat(DomainError):
    pass


def format_for(path: Path) -> ImportFormat:
    """The format a file's extension names (.jsonl, .ndjson, .csv)."""
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise UnknownFormat(
            f"cannot tell the format of {path.name} from its extension; "
            "name it .jsonl, .ndjson or .csv, or pass --format jsonl|csv"
        )
    return found


@dataclass(frozen=True)
class Rejection:
    """Why line `line` was not imported. Never carries a value from the line."""

    line: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass
class ImportReport:
    dry_run: bool = False
    lines: int = 0
    shipments_created: int = 0
    shipments_present: int = 0
    events_accepted: int = 0
    events_duplicate: int = 0
    rejected_lines: int = 0
    problems: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    """The first KEPT_REJECTIONS problems; `on_rejection` sees every one."""


class LineProblem(NamedTuple):
    """Why a line cannot even be validated (too long, not UTF-8, wrong CSV shape)."""

    field: str
    message: str


Progress = Callable[[int], None]
OnRejection = Callable[[Rejection], None]
_Payload = bytes | dict[str, Any] | LineProblem
"""A line to validate: JSON text, a record already parsed (CSV), or why it cannot be."""
_Source = Iterator[tuple[int, _Payload]]


# --- public entry points -----------------------------------------------------------


def import_file(
    *,
    vault: Vault,
    tenant_name: str,
    path: Path,
    fmt: ImportFormat | None = None,
    dry_run: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
    on_rejection: OnRejection | None = None,
) -> ImportReport:
    """Import a JSON Lines or CSV file for a tenant. `progress` is called after each
    chunk with the number of bytes read so far; `dry_run` validates everything
    (including against the database) and rolls back."""
    chosen = fmt or format_for(path)
    tenant_id = tenant_principal(vault=vault, name=tenant_name).tenant_id
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from exc
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    with handle:
        feed = _feed_for(handle, chosen, chunk_size, _Shaping.of(vault))
        try:
            return _run(
                vault,
                tenant_id,
                feed.chunks(),
                csv_names=chosen is ImportFormat.CSV,
                dry_run=dry_run,
                chunk_size=chunk_size,
                on_rejection=on_rejection,
                after_chunk=(lambda: progress(feed.bytes_read)) if progress else None,
            )
        except OSError as exc:
            raise UnreadableFile(
                f"reading {path} failed after line {feed.line_no}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from exc
        finally:
            feed.close()


def import_records(
    *,
    vault: Vault,
    tenant_name: str,
    records: Iterable[Mapping[str, Any]],
    dry_run: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_rejection: OnRejection | None = None,
) -> ImportReport:
    """The same pipeline for records already in memory (line n = the n-th record)."""
    tenant_id = tenant_principal(vault=vault, name=tenant_name).tenant_id
    source: _Source = ((n, dict(record)) for n, record in enumerate(records, start=1))
    return _run(
        vault,
        tenant_id,
        _validated(
            source,
            csv_names=False,
            chunk_size=chunk_size,
            shaping=_Shaping.of(vault),
        ),
        csv_names=False,
        dry_run=dry_run,
        chunk_size=chunk_size,
        on_rejection=on_rejection,
        after_chunk=None,
    )


# --- reading -------------------------------------------------------------------------


class LineReader:
    """Lines (or CSV records) of a binary file with their numbers, in bounded memory."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.bytes_read = 0
        self.line_no = 0

    def _lines(self) -> Iterator[tuple[int, bytes | None]]:
        """(line number, bytes), or None for a line over MAX_LINE_BYTES (skipped unread)."""
        handle = self._handle
        while True:
            data = handle.readline(MAX_LINE_BYTES + 1)
            if not data:
                return
            self.bytes_read += len(data)
            self.line_no += 1
            if len(data) > MAX_LINE_BYTES and not data.endswith(b"\n"):
                while data and not data.endswith(b"\n"):
                    data = handle.readline(MAX_LINE_BYTES)
                    self.bytes_read += len(data)
                yield self.line_no, None
            else:
                yield self.line_no, data

    def _csv_records(self) -> Iterator[tuple[int, bytes | None]]:
        """(first line number, bytes) of each CSV record; a record spans lines while a
        quoted cell is open (an odd number of quote characters so far)."""
        handle = self._handle
        while True:
            start = self.line_no + 1
            buffer = bytearray()
            quotes = 0
            too_long = False
            partial = False
            while True:
                piece = handle.readline(MAX_LINE_BYTES + 1)
                if not piece:
                    break
                self.bytes_read += len(piece)
                quotes += piece.count(b'"')
                if not too_long:
                    buffer += piece
                    if (
                        len(buffer) > MAX_LINE_BYTES
                        and len(buffer.rstrip(b"\r\n")) > MAX_LINE_BYTES
                    ):
                        too_long = True
                        buffer.clear()
                partial = not piece.endswith(b"\n")
                if not partial:
                    self.line_no += 1
                    if quotes % 2 == 0:
                        break
            if partial:
                self.line_no += 1
            if self.line_no < start:
                return
            yield start, None if too_long else bytes(buffer)

    def jsonl(self) -> _Source:
        for line_no, data in self._lines():
            if data is None:
                yield line_no, LineProblem(WHOLE_LINE, "is longer than 64 KiB")
                continue
            if line_no == 1 and data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8) :]
            if data and not data.isspace():
                yield line_no, data

    def csv(self) -> _Source:
        columns: list[tuple[str, ...]] | None = None
        for line_no, data in self._csv_records():
            if data is None:
                yield (
                    line_no,
                    LineProblem(
                        WHOLE_LINE, "is longer than 64 KiB (or opens a quoted cell it never closes)"
                    ),
                )
                if columns is None:
                    return
                continue
            if line_no == 1 and data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8) :]
            try:
                text = data.decode("utf-8")
                cells = next(csv.reader((text,)), [])
            except UnicodeDecodeError:
                yield line_no, LineProblem(WHOLE_LINE, "is not UTF-8 text")
                continue
            except csv.Error:
                yield line_no, LineProblem(WHOLE_LINE, "is not valid CSV")
                continue
            if columns is None:
                header = parse_csv_header(cells)
                if isinstance(header, LineProblem):
                    yield line_no, header
                    return
                columns = header
                continue
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(columns):
                yield (
                    line_no,
                    LineProblem(
                        WHOLE_LINE, f"has {len(cells)} cells; the header names {len(columns)}"
                    ),
                )
                continue
            yield line_no, csv_record(columns, cells)
        if columns is None:
            yield 1, LineProblem("header", "is missing: the first line must name the columns")


def parse_csv_header(cells: Sequence[str]) -> list[tuple[str, ...]] | LineProblem:
    """The record path of each column, or why the header is unusable."""
    names = [cell.strip().lower() for cell in cells]
    unknown = [name for name in names if name not in CSV_COLUMNS]
    if unknown:
        shown = ", ".join(name if _SAFE_KEY.match(name) else "?" for name in unknown[:5])
        return LineProblem("header", f"unknown columns: {shown} (see docs/import.md)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return LineProblem("header", f"columns named twice: {', '.join(repeated)}")
    if "type" not in names:
        return LineProblem("header", "needs a type column")
    return [CSV_COLUMNS[name] for name in names]


def csv_record(columns: Sequence[tuple[str, ...]], cells: Sequence[str]) -> dict[str, Any]:
    """One CSV row as an import record: empty cells are absent, `destination_street`
    lines are separated by `|`, prefixed columns become nested objects."""
    record: dict[str, Any] = {}
    for path, cell in zip(columns, cells, strict=True):
        text = cell.strip()
        if not text:
            continue
        value: Any = text
        if path in _LIST_PATHS:
            value = [part.strip() for part in text.split(STREET_SEPARATOR)]
        node = record
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return record


# --- validating ----------------------------------------------------------------------

_FIXED_MESSAGES = {
    "missing": "is required",
    "timezone_aware": "needs a UTC offset, e.g. 2026-05-01T09:30:00+02:00",
    "union_tag_invalid": 'must be "shipment" or "event"',
    "union_tag_not_found": 'is required: "shipment" or "event"',
}


def field_name(loc: Sequence[str | int], *, csv_names: bool) -> str:
    """A field as the file's author knows it: a dotted path for JSON Lines
    (`destination.street.0`), the column name for CSV (`destination_street`).
    Keys that do not look like identifiers are not echoed."""
    parts = [p if isinstance(p, int) or _SAFE_KEY.match(p) else "?" for p in loc]
    if not parts:
        return "type"
    if csv_names:
        path = tuple(str(p) for p in parts if isinstance(p, str))
        return _COLUMN_OF.get(path, "_".join(path))
    return ".".join(str(p) for p in parts)


_PATTERN_MESSAGES = {
    "email": "is not an e-mail address",
    "phone": "is not a phone number (digits, spaces and + ( ) - . / only)",
    "country": "must be a two-letter country code such as GB",
    "event_id": "must be printable ASCII without spaces",
}
_SUBJECT = re.compile(r"^(Input|String|Value|List|Date|Datetime|Decimal) should")


def _message(error: ErrorDetails, line_type: str | None) -> str:
    kind = error["type"]
    fixed = _FIXED_MESSAGES.get(kind)
    if fixed is not None:
        return fixed
    if kind == "extra_forbidden":
        return f"is not a field of {line_type} lines" if line_type else "is not a known field"
    last = next((part for part in reversed(error["loc"]) if isinstance(part, str)), "")
    if kind == "string_pattern_mismatch" and last in _PATTERN_MESSAGES:
        return _PATTERN_MESSAGES[last]
    message = _SUBJECT.sub("should", error["msg"])
    value = error.get("input")
    if isinstance(value, str) and len(value.strip()) >= 2 and value.strip() in message:
        return f"is not valid ({kind})"  # never echo what the line said
    return message


_COLUMN = re.compile(r"column (\d+)")


def _validation_problems(exc: ValidationError, *, csv_names: bool) -> list[LineProblem]:
    problems = []
    for error in exc.errors(include_url=False, include_context=False):
        loc = error["loc"]
        if error["type"] == "json_invalid":
            column = _COLUMN.search(error["msg"])
            where = f" (column {column.group(1)})" if column else ""
            return [LineProblem(WHOLE_LINE, f"is not valid JSON{where}")]
        if error["type"] == "dict_type" and not loc:
            return [LineProblem(WHOLE_LINE, "is not a JSON object")]
        line_type = None
        if loc and loc[0] in ("shipment", "event"):
            line_type = str(loc[0])
            loc = loc[1:]
        elif error["type"] not in ("union_tag_invalid", "union_tag_not_found"):
            loc = loc or (WHOLE_LINE,)
        problems.append(
            LineProblem(field_name(loc, csv_names=csv_names), _message(error, line_type))
        )
    return problems


@dataclass(frozen=True)
class _Shaping:
    """What the validating process needs to shape lines for the writer: nothing that
    reads or writes the database."""

    text_stamps: bool
    keyring: Keyring
    policy: Policy

    @classmethod
    def of(cls, vault: Vault) -> _Shaping:
        return cls(vault.engine.dialect.name == "sqlite", vault.keyring, vault.policy)


@dataclass
class _Chunk:
    lines: int = 0
    shipments: list[tuple[int, NewShipment]] = field(default_factory=list)
    """(line, shipment): every one carries a tracking number."""
    events: list[ingest.FlatEvent] = field(default_factory=list)
    """Flat events (`ingest.flat_event`), indexed by line."""
    presealed: dict[int, ingest.Presealed] = field(default_factory=dict)
    """The shipments sealed ahead (`ingest.preseal_shipments`), by line."""
    numbers: dict[int, str | None] = field(default_factory=dict)
    """Each shipment's number for lookup (`ingest.number_for_lookup`), by line."""
    problems: dict[int, list[LineProblem]] = field(default_factory=dict)


_NO_NUMBER = LineProblem(
    "tracking_number",
    "is required in an import file: without it a rerun could not recognise the shipment",
)


def _validate(items: Sequence[tuple[int, _Payload]], csv_names: bool, shaping: _Shaping) -> _Chunk:
    """Parse and validate each line once. JSON text goes straight to pydantic's own
    parser (measured a third faster than orjson.loads + validate_python). Events leave
    flattened, with every check that needs neither a clock nor the database done."""
    chunk = _Chunk(lines=len(items))
    from_json, from_python = _ADAPTER.validate_json, _ADAPTER.validate_python
    flat_event, text_stamps = ingest.flat_event, shaping.text_stamps
    for line_no, payload in items:
        if isinstance(payload, LineProblem):
            chunk.problems[line_no] = [payload]
            continue
        try:
            model = from_json(payload) if isinstance(payload, bytes) else from_python(payload)
        except ValidationError as exc:
            chunk.problems[line_no] = _validation_problems(exc, csv_names=csv_names)
            continue
        if isinstance(model, EventLine):
            # Most events carry no proof: those are flattened from the wire model itself.
            proof = model.proof.to_domain() if model.proof is not None else None
            chunk.events.append(
                flat_event(line_no, model.tracking_number, model, proof, text_stamps=text_stamps)
            )
        elif model.tracking_number is None:
            chunk.problems[line_no] = [_NO_NUMBER]
        else:
            chunk.shipments.append((line_no, model.to_domain()))
    if chunk.shipments:
        sealed = ingest.preseal_shipments(
            shaping.keyring, shaping.policy, [shipment for _, shipment in chunk.shipments]
        )
        chunk.numbers = {
            line: ingest.number_for_lookup(shipment.tracking_number or "")
            for line, shipment in chunk.shipments
        }
        chunk.presealed = {
            line: early for (line, _), early in zip(chunk.shipments, sealed, strict=True)
        }
    return chunk


def _validated(
    source: _Source,
    *,
    csv_names: bool,
    chunk_size: int,
    shaping: _Shaping,
    share: tuple[int, int] = (0, 1),
) -> Iterator[_Chunk]:
    """Chunks of `chunk_size` lines, the first ones smaller (an eighth of that, then a
    quarter, then half): the writer waits for the first chunk to be validated, so a small
    one starts it sooner, and each of the next is ready by the time the writer has
    written the ones before. `share` (k, n): only chunks k, k + n, k + 2n, ... are
    validated and yielded; the lines of the others are read past (see `_ChildFeed`)."""
    mine, of = share
    size = max(1, chunk_size // FIRST_CHUNK_FRACTION)
    number = 0
    while items := list(islice(source, size)):
        lines = [items]  # not kept while the chunk is out (see `_ChildFeed.chunks`)
        del items
        if number % of == mine:
            yield _validate(lines.pop(), csv_names, shaping)
        del lines
        number += 1
        size = min(chunk_size, size * 2)


FIRST_CHUNK_FRACTION = 8


# --- validating in a second process ----------------------------------------------------

PARALLEL_MIN_BYTES = 2 * 1024 * 1024
"""Files at least this big are read and validated in a second process while this one
writes the chunks before: parsing and validating is about a third of the work, and it
needs nothing from the database. Smaller files are not worth starting the process."""


class _InProcessFeed:
    """Chunks of a file, read and validated in this process as they are needed."""

    def __init__(
        self,
        handle: IO[bytes],
        fmt: ImportFormat,
        chunk_size: int,
        shaping: _Shaping,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self._reader = LineReader(handle)
        source = self._reader.jsonl() if fmt is ImportFormat.JSONL else self._reader.csv()
        self._chunks = _validated(
            source,
            csv_names=fmt is ImportFormat.CSV,
            chunk_size=chunk_size,
            shaping=shaping,
            share=share,
        )

    @property
    def bytes_read(self) -> int:
        return self._reader.bytes_read

    @property
    def line_no(self) -> int:
        return self._reader.line_no

    def chunks(self) -> Iterator[_Chunk]:
        return self._chunks

    def close(self) -> None:
        pass


class _ReadFailed(OSError):
    """Reading the file failed in the validating process (strerror says how)."""


class _ChildFeed:
    """Chunks of a file, read and validated by forked child processes ahead of the
    writer. With two validators (`validators`), both read the whole file with the same
    LineReader, each through its own open file description (so their read positions
    are their own), and validate every other chunk: chunk n comes from validator
    n % count, and the writer takes them in turn. Each sends its chunks, packed,
    through a pipe whose small buffer keeps it at most about one chunk ahead, so memory
    stays bounded. Chunks, line numbers and problems are exactly those of
    `_InProcessFeed`."""

    def __init__(
        self, handle: IO[bytes], fmt: ImportFormat, chunk_size: int, shaping: _Shaping
    ) -> None:
        self._handle = handle
        self._fmt = fmt
        self._chunk_size = chunk_size
        self._shaping = shaping
        self.bytes_read = 0
        self.line_no = 0
        self._processes: list[BaseProcess] = []
        self._pipes: list[MpConnection] = []
        self._handles: list[IO[bytes]] = []

    def chunks(self) -> Iterator[_Chunk]:
        """Starts the validators at once (so they work while the writer gets ready: a dry
        run's scratch copy, the connection) and returns their chunks in order."""
        context = multiprocessing.get_context("fork")
        handles = [self._handle, *self._own_handles(validators() - 1)]
        for mine, handle in enumerate(handles):
            receiving, sending = context.Pipe(duplex=False)
            self._pipes.append(receiving)
            process = context.Process(
                target=_validate_in_child,
                args=(handle, self._fmt, self._chunk_size, self._shaping, sending),
                kwargs={"share": (mine, len(handles))},
                name=f"parcelvault-import-validator-{mine + 1}",
                daemon=True,
            )
            self._processes.append(process)
            process.start()
            sending.close()
        return self._received()

    def _received(self) -> Iterator[_Chunk]:
        for turn in itertools.count():
            pipe = self._pipes[turn % len(self._pipes)]
            try:
                message = pickle.loads(pipe.recv_bytes())  # noqa: S301 - our own child
            except EOFError:
                raise RuntimeError("the process validating the file stopped unexpectedly") from None
            kind = message[0]
            if kind == "done":  # the file has no chunk number `turn`, hence none after it
                return
            if kind == "unreadable":
                _, reason, self.line_no = message
                raise _ReadFailed(0, reason)
            if kind == "failed":
                raise RuntimeError(f"validating the file failed: {message[1]}")
            self.bytes_read, self.line_no = message[2], message[3]
            # Nothing here may keep the chunk alive while it is out: the writer
            # collects garbage after each chunk and would walk all of it.
            parts = [message[1]]
            del message
            yield _unpack(parts.pop())

    def _own_handles(self, count: int) -> list[IO[bytes]]:
        """`count` more handles on the same file, each with a read position of its own
        (a duplicated descriptor would share one), or none where the system cannot
        reopen an open file (the import then has one validator)."""
        handles: list[IO[bytes]] = []
        with suppress(OSError, ValueError):
            position = self._handle.tell()
            for _ in range(count):
                again = open(f"/proc/self/fd/{self._handle.fileno()}", "rb")  # noqa: SIM115
                handles.append(again)
                again.seek(position)
        self._handles = handles
        return handles

    def close(self) -> None:
        for pipe in self._pipes:
            pipe.close()
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join()
        for handle in self._handles:
            handle.close()


def validators() -> int:
    """How many processes validate a large file: two where there are at least two CPU
    cores. One validator took about as long per chunk as the writer, so the writer
    waited for it; with two, each has half the chunks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def _feed_for(
    handle: IO[bytes], fmt: ImportFormat, chunk_size: int, shaping: _Shaping
) -> _InProcessFeed | _ChildFeed:
    try:
        size = os.fstat(handle.fileno()).st_size
    except (OSError, ValueError):
        size = 0
    if size >= PARALLEL_MIN_BYTES and "fork" in multiprocessing.get_all_start_methods():
        return _ChildFeed(handle, fmt, chunk_size, shaping)
    return _InProcessFeed(handle, fmt, chunk_size, shaping)


def _validate_in_child(
    handle: IO[bytes],
    fmt: ImportFormat,
    chunk_size: int,
    shaping: _Shaping,
    sink: MpConnection,
    share: tuple[int, int] = (0, 1),
) -> None:
    """The child's whole life. It leaves Ctrl-C to the writer (which stops it), does
    not collect cycles (it makes none; collecting could run finalizers of objects it
    inherited), and ends with os._exit: nothing inherited (connections, buffered
    output) is cleaned up or flushed twice."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()
    feed = _InProcessFeed(handle, fmt, chunk_size, shaping, share)
    message: tuple[Any, ...]
    try:
        for chunk in feed.chunks():
            message = ("chunk", _pack(chunk), feed.bytes_read, feed.line_no)
            sink.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        message = ("done",)
    except OSError as exc:
        message = ("unreadable", exc.strerror or type(exc).__name__, feed.line_no)
    except Exception as exc:  # a bug: name it, never the line's values
        message = ("failed", type(exc).__name__)
    with suppress(OSError):  # if the writer has stopped, nobody is listening
        sink.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    os._exit(0)


# Chunks travel between the processes as plain tuples, lists and text: events are
# already flat tuples (unpickling domain objects cost about as much as validating the
# line again), and shipments and their presealed values are taken apart into tuples
# (pickling a nested dataclass cost three times as much as pickling its fields).


def _pack(chunk: _Chunk) -> tuple[Any, ...]:
    return (
        chunk.lines,
        [_shipment_fields(line, shipment) for line, shipment in chunk.shipments],
        chunk.events,
        chunk.problems,
        {line: _presealed_fields(early) for line, early in chunk.presealed.items()},
        chunk.numbers,
    )


def _unpack(packed: tuple[Any, ...]) -> _Chunk:
    lines, shipments, events, problems, presealed, numbers = packed
    return _Chunk(
        lines=lines,
        shipments=[_shipment_of(fields) for fields in shipments],
        events=events,
        problems=problems,
        presealed={line: _presealed_of(fields) for line, fields in presealed.items()},
        numbers=numbers,
    )


def _presealed_fields(early: ingest.Presealed) -> tuple[Any, ...]:
    key = early.key
    return (*early[:4], (key.subject_id, key.key_id, key.kek_id, key.wrapped), *early[5:])


def _presealed_of(fields: tuple[Any, ...]) -> ingest.Presealed:
    number, issued, problem, subject_id, key, record_id, digest, sealed = fields
    return ingest.Presealed(
        number, issued, problem, subject_id, StoredKey(*key), record_id, digest, sealed
    )


def _shipment_fields(line: int, shipment: NewShipment) -> tuple[Any, ...]:
    origin, destination, recipient = shipment.origin, shipment.destination, shipment.recipient
    return (
        line,
        (origin.country, origin.city, origin.postcode, origin.region),
        (
            destination.country,
            destination.city,
            destination.postcode,
            destination.street,
            destination.region,
            destination.notes,
        ),
        (recipient.name, recipient.email, recipient.phone),
        shipment.tracking_number,
        shipment.reference,
        shipment.service,
        shipment.promised_date,
    )


def _shipment_of(fields: tuple[Any, ...]) -> tuple[int, NewShipment]:
    line, origin, destination, recipient, *rest = fields
    return line, NewShipment(
        Origin(*origin), Destination(*destination), Recipient(*recipient), *rest
    )


# --- writing -------------------------------------------------------------------------


@dataclass
class _Outcome:
    shipments_created: int = 0
    shipments_present: int = 0
    events_accepted: int = 0
    events_duplicate: int = 0
    problems: dict[int, list[LineProblem]] = field(default_factory=dict)


def _run(
    vault: Vault,
    tenant_id: int,
    chunks: Iterator[_Chunk],
    *,
    csv_names: bool,
    dry_run: bool,
    chunk_size: int,
    on_rejection: OnRejection | None,
    after_chunk: Callable[[], None] | None,
) -> ImportReport:
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    report = ImportReport(dry_run=dry_run)
    # A dry run writes as an import does, so events find the shipments of earlier
    # chunks, but nothing it writes is kept: on SQLite it writes into a scratch copy of
    # the database (holding the live one's write lock for the whole run would make a
    # running service's writes fail); on PostgreSQL, whose writers do not wait for
    # each other, into one transaction that it rolls back. The key store, a database
    # of its own, is only read.
    in_copy = dry_run and scratch_copy.database_file(vault.engine) is not None
    with (
        scratch_copy.scratch_copy(vault.engine) if in_copy else nullcontext(vault.engine) as engine,
        engine.connect() as connection,
        _bulk_settings(connection),
        _Checkpointer.for_(engine, connection) as checkpointer,
        _collecting_between_chunks() as collect,
    ):
        outer = connection.begin() if dry_run and not in_copy else None
        keys = ingest.WithoutStoring(vault.keystore) if dry_run else vault.keystore
        statistics = _Statistics(connection)
        # Event ids are taken as new until a chunk proves otherwise (see `_write_chunk`);
        # not in a dry run's one transaction, which cannot undo a single chunk.
        unchecked = outer is None
        try:
            for chunk in chunks:
                write = functools.partial(
                    _write_chunk, connection, vault, tenant_id, chunk, csv_names, keys
                )
                if outer is not None:
                    outcome = write(unchecked_ids=False)
                else:
                    try:
                        outcome = _committed(connection, write, unchecked_ids=unchecked)
                    except store.AlreadyStored:
                        unchecked = False
                        outcome = _committed(connection, write, unchecked_ids=False)
                _merge(report, chunk.lines, outcome, on_rejection)
                statistics.chunk_written()
                checkpointer.chunk_written()
                del chunk, write, outcome  # freed now, not traversed by the collection
                collect()
                if after_chunk is not None:
                    after_chunk()
        finally:
            if outer is not None:
                outer.rollback()
    return report


FULL_COLLECTION_EVERY = 64


@contextmanager
def _collecting_between_chunks() -> Iterator[Callable[[], None]]:
    """Python's cyclic garbage collector, run between chunks instead of while one is
    read and written. Each chunk allocates hundreds of thousands of tuples, dicts and
    strings (unpickling a chunk alone is five times slower with automatic collection
    on), and almost all of them are freed by reference counting when the chunk is
    done. The young generations are collected after every chunk and everything every
    FULL_COLLECTION_EVERY chunks, so cycles are still freed and memory stays bounded."""
    was_enabled = gc.isenabled()
    gc.disable()
    written = 0

    def collect() -> None:
        nonlocal written
        written += 1
        gc.collect(2 if written % FULL_COLLECTION_EVERY == 0 else 1)

    try:
        yield collect
    finally:
        if was_enabled:
            gc.enable()


class _Statistics:
    """Keeps PostgreSQL's planner statistics in step with tables the import grows.

    Each chunk looks its tracking numbers and event ids up with `IN (...)` lists. On
    a table that grew since autovacuum last analyzed it, the planner believes the
    tenant has few rows, scans all of them through the (tenant_id, ...) prefix of the
    unique index and filters: every lookup then costs the size of the table, and an
    import of 200,000 events ran at about 1,000 events/s. Analyzing whenever the
    number of chunks written doubles costs a handful of ANALYZEs per import.
    """

    TABLES = "shipments, events, sealed_fields, subjects"

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._enabled = connection.dialect.name == "postgresql"
        self._chunks = 0

    def chunk_written(self) -> None:
        self._chunks += 1
        if not self._enabled or self._chunks & (self._chunks - 1):
            return
        connection = self._connection
        nested = connection.in_transaction()  # a dry run's one transaction
        try:
            with connection.begin_nested() if nested else connection.begin():
                connection.exec_driver_sql(f"ANALYZE {self.TABLES}")
        except SQLAlchemyError:
            self._enabled = False  # e.g. not the tables' owner: slower, still correct


_SQLITE_BULK = {"cache_size": -64 * 1024, "wal_autocheckpoint": 8192, "foreign_keys": 0}
"""For the import's own connection only: a page cache of 64 MiB (the indexes on random
ids need it) and a WAL checkpoint every 32 MiB rather than 4 MiB (on this kind of disk
together about a quarter faster), and no per-row foreign-key lookups (a tenth of the
events insert): every reference a chunk writes, it has read or written itself in the
same transaction (the tenant, the shipments its events name, the subjects of its
shipments), and SQLite refuses the commit of a transaction whose reads another
writer's commit made stale. All three are restored before the connection goes back
to the pool."""


class _Checkpointer:
    """Copies the SQLite write-ahead log into the database file in a thread of its own
    (a PASSIVE checkpoint after each chunk, on a connection of its own) while the writer
    goes on with the next chunk. The copying and its fsyncs then rarely fall on the
    writer's commits; the writer's own automatic checkpoint still runs when the log
    passes its limit (and finds little left to copy), so the log stays bounded. SQLite
    does the work without Python's lock. Durability is SQLite's as configured: a
    checkpoint only copies committed pages."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._wanted = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        if raw is not None:
            self._thread = threading.Thread(
                target=self._loop, name="parcelvault-import-checkpoint", daemon=True
            )
            self._thread.start()

    @classmethod
    def for_(cls, engine: Engine, connection: Connection) -> _Checkpointer:
        """A checkpointer for a SQLite database in WAL mode; otherwise one that does
        nothing."""
        if connection.dialect.name != "sqlite":
            return cls(None)
        mode = str(connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()).lower()
        connection.commit()
        return cls(engine.raw_connection() if mode == "wal" else None)

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing:
                return
            try:
                cursor = self._raw.cursor()
                try:
                    cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    cursor.fetchall()
                finally:
                    cursor.close()
            except sqlite3.Error:  # e.g. the database went away: the writer checkpoints itself
                return

    def chunk_written(self) -> None:
        if self._thread is not None:
            self._wanted.set()

    def __enter__(self) -> _Checkpointer:
        return self

    def __exit__(self, *_: object) -> None:
        if self._thread is not None:
            self._closing = True
            self._wanted.set()
            self._thread.join()
            self._raw.close()


@contextmanager
def _bulk_settings(connection: Connection) -> Iterator[None]:
    if connection.dialect.name != "sqlite":
        yield
        return
    previous = {
        name: int(connection.exec_driver_sql(f"PRAGMA {name}").scalar_one())
        for name in _SQLITE_BULK
    }
    for name, value in _SQLITE_BULK.items():
        connection.exec_driver_sql(f"PRAGMA {name} = {int(value)}")
    connection.commit()
    try:
        yield
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            for name, value in previous.items():
                connection.exec_driver_sql(f"PRAGMA {name} = {value}")
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            connection.commit()
        except SQLAlchemyError:
            connection.invalidate()  # never hand a tuned connection back to the pool


def _committed(
    connection: Connection, write: Callable[..., _Outcome], *, unchecked_ids: bool
) -> _Outcome:
    """A chunk's `write` in one transaction. A concurrent writer storing the same
    tracking number makes the insert fail; the retry then sees that shipment as already
    present."""
    for attempt in range(2):
        try:
            with connection.begin():
                return write(unchecked_ids=unchecked_ids)
        except IntegrityError:
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def _write_chunk(
    connection: Connection,
    vault: Vault,
    tenant_id: int,
    chunk: _Chunk,
    csv_names: bool,
    keys: ingest.KeySource,
    *,
    unchecked_ids: bool,
) -> _Outcome:
    """`keys`: where data keys come from and go to (for a dry run, nowhere).

    With `unchecked_ids` the chunk's event ids are not looked up before they are
    inserted: an import usually brings events the database has never seen, and the
    lookup (an index probe per event) took 3.5 % of the writer's instructions.
    If the insert finds any of them stored, it raises `store.AlreadyStored` before
    anything else is written; the caller rolls the chunk back and writes it again with
    the lookup, as it then writes every later chunk (a file imported again, or one
    overlapping an earlier import, is mostly events already there)."""
    outcome = _Outcome(problems={line: list(p) for line, p in chunk.problems.items()})
    now = vault.clock()

    def reject(index: int, problem: ingest.Problem) -> None:
        name = field_name(problem.problem.loc, csv_names=csv_names)
        outcome.problems.setdefault(index, []).append(LineProblem(name, problem.problem.message))

    new_shipments: list[tuple[int, NewShipment]] = []
    first_line: dict[str, int] = {}
    for line_no, shipment in chunk.shipments:
        assert shipment.tracking_number is not None
        number = chunk.numbers[line_no]
        if number is not None:
            if number in first_line:
                outcome.shipments_present += 1
                continue
            first_line[number] = line_no
        new_shipments.append((line_no, shipment))
    shipments = ingest.prepare_shipments(
        connection,
        keystore=keys,
        keyring=vault.keyring,
        policy=vault.policy,
        tenant_id=tenant_id,
        items=new_shipments,
        now=now,
        presealed=chunk.presealed,
    )
    for problem in shipments.problems:
        reject(problem.index, problem)
    outcome.shipments_created += len(shipments.rows)
    outcome.shipments_present += len(shipments.already_stored)

    created_at = {number: line for line, number in shipments.tracking_numbers.items()}
    new_events: list[ingest.FlatEvent] = []
    for event in chunk.events:
        line_no = event[0]
        shipment_line_no = created_at.get(event[1] or "", 0)
        if shipment_line_no > line_no:
            outcome.problems.setdefault(line_no, []).append(
                LineProblem(
                    "tracking_number",
                    f"comes before the line of its shipment (line {shipment_line_no})",
                )
            )
            continue
        new_events.append(event)
    events = ingest.prepare_flat_events(
        connection,
        keystore=keys,
        keyring=vault.keyring,
        policy=vault.policy,
        tenant_id=tenant_id,
        items=new_events,
        now=now,
        unwritten=ingest.unwritten_shipments(shipments),
        unchecked_ids=unchecked_ids,
    )
    for problem in events.problems:
        reject(problem.index, problem)
    # The chunk's new shipments are written with the status their events give them,
    # instead of being updated after the events.
    with_status = ingest.fold_into_new_shipments(shipments, events)
    ingest.write_shipments(connection, shipments)
    ingest.write_events(connection, events, written_with_status=with_status, all_new=unchecked_ids)
    outcome.events_accepted += len(events.rows)
    outcome.events_duplicate += len(events.duplicates)
    return outcome


def _merge(
    report: ImportReport, lines: int, outcome: _Outcome, on_rejection: OnRejection | None
) -> None:
    report.lines += lines
    report.shipments_created += outcome.shipments_created
    report.shipments_present += outcome.shipments_present
    report.events_accepted += outcome.events_accepted
    report.events_duplicate += outcome.events_duplicate
    for line_no in sorted(outcome.problems):
        report.rejected_lines += 1
        for problem in outcome.problems[line_no]:
            rejection = Rejection(line_no, problem.field, problem.message)
            report.problems += 1
            if len(report.rejections) < KEPT_REJECTIONS:
                report.rejections.append(rejection)
            if on_rejection is not None:
                on_rejection(rejection)
