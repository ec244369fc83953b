from __future__ import annotations

import csv
import dataclasses
import errno
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner, Result

from parcelvault.adapters.db import scratch_copy, store
from parcelvault.adapters.db.tables import events, sealed_fields, shipments, subjects
from parcelvault.crypto.keystore import data_keys
from parcelvault.crypto.sealing import associated_data, open_sealed
from parcelvault.domain.errors import InvalidInput
from parcelvault.domain.statuses import Status
from parcelvault.entrypoints.cli import app
from parcelvault.services import demo_data, importer, tenants, tracking
from parcelvault.services.importer import CSV_COLUMNS, MAX_LINE_BYTES, ImportReport
from parcelvault.services.vault import Vault
from tests.conftest import Canaries, make_vault, shipment_payload

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
A = "AB12CD34EF"
B = "GH56JK78LM"


def _shipment(number: str | None, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "shipment", **shipment_payload(**overrides)}
    if number is not None:
        record["tracking_number"] = number
    return record


def _event(number: str, seq: int, status: str = "in_transit", **extra: Any) -> dict[str, Any]:
    time = datetime.fromisoformat("2025-05-01T08:00:00+02:00") + timedelta(hours=seq)
    return {
        "type": "event",
        "tracking_number": number,
        "event_id": f"{number}-{seq}",
        "time": time.isoformat(),
        "status": status,
        "location": {"country": "GB", "city": "Leeds"},
        **extra,
    }


def _jsonl(path: Path, lines: Iterable[dict[str, Any] | bytes]) -> Path:
    with path.open("wb") as handle:
        for line in lines:
            handle.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
    return path


def _as_csv_row(record: dict[str, Any]) -> dict[str, str]:
    row: dict[str, str] = {}
    for column, path in CSV_COLUMNS.items():
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list):
            value = "|".join(value)
        row[column] = "" if value is None else str(value)
    return row


def _csv(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(_as_csv_row(r) for r in records)
    return path


def _tenant(vault: Vault, name: str = "shop-a") -> int:
    tenants.create_tenant(vault=vault, name=name)
    return tenants.tenant_principal(vault=vault, name=name).tenant_id


def _rows(vault: Vault) -> dict[str, int]:
    with vault.engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (shipments, events, sealed_fields, subjects)
        }


def _stored_keys(vault: Vault) -> int:
    with vault.keystore.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(data_keys)).scalar_one()


def _import(vault: Vault, path: Path, **options: Any) -> ImportReport:
    return importer.import_file(vault=vault, tenant_name="shop-a", path=path, **options)


def _rejected(report: ImportReport) -> set[tuple[int, str]]:
    return {(r.line, r.field) for r in report.rejections}


def _sample_records() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (SAMPLES / "shipments.jsonl").read_bytes().splitlines()]


# --- happy paths -----------------------------------------------------------------------


def test_a_json_lines_file_stores_shipments_and_events_as_the_api_would(
    any_vault: Vault, tmp_path: Path
) -> None:
    tenant_id = _tenant(any_vault)
    path = _jsonl(
        tmp_path / "in.jsonl",
        [
            _shipment(A),
            _event(A, 1, "info_received"),
            _event(A, 2),
            _event(A, 3, "out_for_delivery"),
            _event(
                A,
                4,
                "delivered",
                proof={"received_by": "Jane Doe", "geo": {"lat": 53.8, "lon": -1.55}},
            ),
        ],
    )
    report = _import(any_vault, path)
    assert (report.shipments_created, report.events_accepted, report.rejected_lines) == (1, 4, 0)
    view = tracking.merchant_view(vault=any_vault, tenant_id=tenant_id, raw_number=A)
    assert view.status is Status.DELIVERED
    assert [entry.status for entry in view.timeline] == [
        Status.DELIVERED,
        Status.OUT_FOR_DELIVERY,
        Status.IN_TRANSIT,
        Status.INFO_RECEIVED,
    ]
    assert view.personal["recipient.name"] == "Jane Doe"
    assert view.personal["destination.street"] == "12 Example Street"
    assert view.personal["destination.postcode"] == "LS1 4AP"
    assert view.timeline[0].proof["proof.received_by"] == "Jane Doe"
    assert view.timeline[0].time.utcoffset() == timedelta(hours=2)


def test_the_sample_files_import_cleanly(any_vault: Vault) -> None:
    tenant_id = _tenant(any_vault)
    jsonl = _import(any_vault, SAMPLES / "shipments.jsonl")
    csv_report = _import(any_vault, SAMPLES / "shipments.csv")
    for report in (jsonl, csv_report):
        assert report.rejections == []
        assert report.shipments_created >= 3
        assert report.events_accepted >= 10
        assert report.shipments_present == report.events_duplicate == 0
    number = "ZRST-MKN6-AEYC-E9CX-3"
    view = tracking.merchant_view(vault=any_vault, tenant_id=tenant_id, raw_number=number)
    assert view.personal["destination.street"] == "Flat 3\n22 Willow Crescent"


def test_csv_and_json_lines_with_the_same_content_store_the_same_shipments(
    any_vault: Vault, tmp_path: Path
) -> None:
    # Carrier-style numbers (not parcelvault's issued form), which two tenants may share.
    records = [{**r, "tracking_number": "C" + r["tracking_number"]} for r in _sample_records()]
    json_tenant = _tenant(any_vault, "json-shop")
    csv_tenant = _tenant(any_vault, "csv-shop")
    from_file = importer.import_file(
        vault=any_vault, tenant_name="json-shop", path=_jsonl(tmp_path / "same.jsonl", records)
    )
    report = importer.import_file(
        vault=any_vault, tenant_name="csv-shop", path=_csv(tmp_path / "same.csv", records)
    )
    assert from_file.rejections == report.rejections == []
    numbers = [r["tracking_number"] for r in records if r["type"] == "shipment"]
    for number in numbers:
        from_json = tracking.merchant_view(
            vault=any_vault, tenant_id=json_tenant, raw_number=number
        )
        from_csv = tracking.merchant_view(vault=any_vault, tenant_id=csv_tenant, raw_number=number)
        assert dataclasses.replace(from_csv, tenant=None) == dataclasses.replace(
            from_json, tenant=None
        )


def test_records_in_memory_go_through_the_same_pipeline(vault: Vault) -> None:
    tenant_id = _tenant(vault)
    report = importer.import_records(
        vault=vault, tenant_name="shop-a", records=[_shipment(A), _event(A, 1), _event(B, 1)]
    )
    assert (report.shipments_created, report.events_accepted) == (1, 1)
    assert _rejected(report) == {(3, "tracking_number")}
    view = tracking.merchant_view(vault=vault, tenant_id=tenant_id, raw_number=A)
    assert view.status is Status.IN_TRANSIT


def test_an_import_on_sqlite_leaves_every_reference_intact_and_hands_back_checking_connections(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The importer's own connection skips SQLite's per-row foreign-key checks (every
    # reference it writes it has just read or written in the same transaction).
    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    _tenant(vault)
    path = _jsonl(tmp_path / "in.jsonl", _mixed_file())
    report = _import(vault, path, chunk_size=3)
    assert report.events_accepted > 0
    with vault.engine.connect() as connection:
        assert connection.execute(text("PRAGMA foreign_key_check")).all() == []
    pooled = [vault.engine.raw_connection() for _ in range(vault.engine.pool.checkedin())]
    try:
        assert pooled
        for raw in pooled:
            cursor = raw.cursor()
            assert cursor.execute("PRAGMA foreign_keys").fetchone() == (1,)
            cursor.close()
    finally:
        for raw in pooled:
            raw.close()


# --- reruns and dry runs -----------------------------------------------------------------


def test_a_rerun_of_the_same_file_changes_nothing(any_vault: Vault, tmp_path: Path) -> None:
    tenant_id = _tenant(any_vault)
    path = _jsonl(tmp_path / "in.jsonl", [_shipment(A), _event(A, 1), _shipment(B), _event(B, 1)])
    first = _import(any_vault, path)
    rows = _rows(any_vault)
    before = tracking.merchant_view(vault=any_vault, tenant_id=tenant_id, raw_number=A)
    second = _import(any_vault, path)
    assert (first.shipments_created, first.events_accepted) == (2, 2)
    assert (second.shipments_created, second.shipments_present) == (0, 2)
    assert (second.events_accepted, second.events_duplicate) == (0, 2)
    assert second.rejected_lines == 0
    assert _rows(any_vault) == rows
    assert tracking.merchant_view(vault=any_vault, tenant_id=tenant_id, raw_number=A) == before


def _counting_lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each call of the stored-event-id lookup, by how many ids it was asked for."""
    calls: list[int] = []
    lookup = store.existing_event_ids

    def counted(connection: Any, tenant_id: int, event_ids: Iterable[str]) -> set[str]:
        wanted = list(event_ids)
        calls.append(len(wanted))
        return lookup(connection, tenant_id, wanted)

    monkeypatch.setattr(store, "existing_event_ids", counted)
    return calls


def test_a_new_file_is_written_without_looking_its_event_ids_up(
    any_vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tenant(any_vault)
    lookups = _counting_lookups(monkeypatch)
    path = _jsonl(tmp_path / "in.jsonl", [_shipment(A), _event(A, 1), _event(A, 2), _event(A, 1)])

    report = _import(any_vault, path)  # one chunk: the repeat is found within it

    assert lookups == []
    assert (report.events_accepted, report.events_duplicate) == (2, 1)
    assert _rows(any_vault)["events"] == 2


def test_a_chunk_with_a_stored_event_is_written_again_with_the_lookup_and_so_is_the_rest(
    any_vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = _tenant(any_vault)
    # Two events at the same time: the one that arrived last gives the status, and
    # importing the first again must not give it back.
    same_time = {"time": "2025-05-01T12:00:00+02:00"}
    first = _event(A, 1, "failed_attempt", reason="recipient_absent", **same_time)
    second = _event(A, 2, "available_for_pickup", **same_time)
    _import(any_vault, _jsonl(tmp_path / "old.jsonl", [_shipment(A), first, second]))
    rows = _rows(any_vault)
    lookups = _counting_lookups(monkeypatch)
    lines = [  # chunks of 1, 2, 4 and then 8 lines
        _shipment(B),
        *(_event(B, 1), _event(B, 2)),  # new: written without the lookup
        *(first, _event(B, 3), _event(B, 4), _event(B, 5)),  # rolled back, written with it
        *(_event(B, 6), _event(B, 7)),  # with it from then on
    ]

    report = _import(any_vault, _jsonl(tmp_path / "new.jsonl", lines), chunk_size=8)

    assert lookups == [4, 2]
    assert (report.events_accepted, report.events_duplicate) == (7, 1)
    assert _rows(any_vault)["events"] == rows["events"] + 7
    view = tracking.merchant_view(vault=any_vault, tenant_id=tenant_id, raw_number=A)
    assert view.status == Status.AVAILABLE_FOR_PICKUP


@pytest.mark.parametrize("processes", [1, 2])
def test_a_dry_run_checks_everything_and_writes_nothing(
    any_vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    if processes == 2:
        monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    _tenant(any_vault)
    path = _jsonl(
        tmp_path / "in.jsonl",
        [_shipment(A), _event(A, 1), _event(A, 2), _event(B, 1), _shipment(B), _event(B, 2)],
    )
    rows = _rows(any_vault)
    dry = _import(any_vault, path, dry_run=True, chunk_size=2)
    assert _rows(any_vault) == rows
    assert _stored_keys(any_vault) == 0  # no data key for people who were not imported
    real = _import(any_vault, path, chunk_size=2)
    assert _stored_keys(any_vault) == _rows(any_vault)["subjects"] >= 1
    assert dry.dry_run
    assert dataclasses.replace(dry, dry_run=False) == real
    assert (real.shipments_created, real.events_accepted) == (2, 3)
    assert _rejected(real) == {(4, "tracking_number")}


def _scratch_folders(vault: Vault) -> list[Path]:
    database = scratch_copy.database_file(vault.engine)
    assert database is not None
    return sorted(database.resolve().parent.glob(scratch_copy.SCRATCH_PREFIX + "*"))


def test_a_dry_run_on_sqlite_leaves_the_database_free_for_other_writers(
    vault: Vault, tmp_path: Path
) -> None:
    _tenant(vault)
    path = _jsonl(tmp_path / "in.jsonl", [_shipment(A), _event(A, 1), _shipment(B), _event(A, 2)])
    database = scratch_copy.database_file(vault.engine)
    assert database is not None
    seen: list[tuple[list[int], int]] = []

    def between_chunks(_done: int) -> None:
        # Another writer gets the write lock at once (no waiting) while the run goes on.
        other = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()
        seen.append(
            (
                [stat.S_IMODE(f.stat().st_mode) for f in _scratch_folders(vault)],
                _rows(vault)["shipments"],
            )
        )

    report = _import(vault, path, dry_run=True, chunk_size=2, progress=between_chunks)
    assert (report.shipments_created, report.events_accepted) == (2, 2)
    assert len(seen) >= 2  # checked between chunks, not only after the last
    assert set(map(str, seen)) == {str(([0o700], 0))}  # a private copy took the writes
    assert _scratch_folders(vault) == []
    assert _rows(vault)["shipments"] == 0


def test_a_dry_run_that_fails_half_way_leaves_no_copy_behind(vault: Vault, tmp_path: Path) -> None:
    _tenant(vault)
    path = _jsonl(tmp_path / "in.jsonl", [_shipment(A), _event(A, 1), _shipment(B)])

    def stop(_done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _import(vault, path, dry_run=True, chunk_size=2, progress=stop)
    assert _scratch_folders(vault) == []
    assert _rows(vault)["shipments"] == 0


# --- bad lines -------------------------------------------------------------------------


def test_bad_lines_are_reported_by_number_and_field_and_the_rest_is_written(
    any_vault: Vault, tmp_path: Path
) -> None:
    tenant_id = _tenant(any_vault)
    oversized = orjson.dumps(_event(A, 9, description="x" * MAX_LINE_BYTES))
    path = _jsonl(
        tmp_path / "in.jsonl",
        [
            _shipment(A),  # 1
            _event(A, 1),  # 2
            b'{"type": "event", "tracking_number": ',  # 3 malformed JSON
            _event(A, 2, time="2025-05-01T10:00:00"),  # 4 naive time
            _event(A, 3, time="2099-05-01T10:00:00+00:00"),  # 5 future
            _event("ZZ99ZZ99", 4),  # 6 unknown number
            _event(A, 5, status="teleported"),  # 7 unknown status
            _shipment(None),  # 8 no tracking number
            _event(A, 6, colour="blue"),  # 9 unknown field
            oversized,  # 10
            _event(A, 7),  # 11
            _shipment(A),  # 12 repeated: already present
            _event(B, 1),  # 13 before its shipment
            _shipment(B),  # 14
            _event(B, 2),  # 15
            _event(A, 1),  # 16 duplicate event id
            b"[1, 2, 3]",  # 17 not an object
            {"type": "parcel"},  # 18 unknown type
            _event(A, 8, reason="customs"),  # 19 reason on an in_transit event
        ],
    )
    report = _import(any_vault, path)
    assert _rejected(report) == {
        (3, "(line)"),
        (4, "time"),
        (5, "time"),
        (6, "tracking_number"),
        (7, "status"),
        (8, "tracking_number"),
        (9, "colour"),
        (10, "(line)"),
        (13, "tracking_number"),
        (17, "(line)"),
        (18, "type"),
        (19, "reason"),
    }
    assert report.rejected_lines == 12
    assert [r.line for r in report.rejections] == sorted(r.line for r in report.rejections)
    assert (report.shipments_created, report.shipments_present) == (2, 1)
    assert (report.events_accepted, report.events_duplicate) == (3, 1)
    assert report.lines == 19
    view = tracking.merchant_view(vault=any_vault, tenant_id=tenant_id, raw_number=A)
    assert len(view.timeline) == 2
    messages = {r.line: r.message for r in report.rejections}
    assert messages[13] == "comes before the line of its shipment (line 14)"
    assert "64 KiB" in messages[10]
    assert "UTC offset" in messages[4]


def test_an_event_line_with_several_rule_problems_reports_each_time_first(
    any_vault: Vault, tmp_path: Path
) -> None:
    _tenant(any_vault)
    path = _jsonl(
        tmp_path / "in.jsonl",
        [
            _shipment(A),
            _event(A, 1, time="2999-01-01T00:00:00+00:00", reason="customs"),
            _event(A, 2, time="1999-12-31T23:00:00+00:00", reason="customs"),
            _event(A, 3, time="1999-12-31T23:00:00+00:00"),
            _event(A, 4),
            _event(A, 5, time="0001-01-01T00:30:00+01:00"),
            _event(A, 6, time="9999-12-31T23:59:59-01:00"),
        ],
    )
    report = _import(any_vault, path)
    assert [(r.line, r.field, r.message) for r in report.rejections] == [
        (2, "time", "is more than 10 minutes in the future"),
        (2, "reason", "only exception and failed_attempt events take a reason"),
        (3, "time", "is before 2000-01-01"),
        (3, "reason", "only exception and failed_attempt events take a reason"),
        (4, "time", "is before 2000-01-01"),
        (6, "time", "is before 2000-01-01"),
        (7, "time", "is more than 10 minutes in the future"),
    ]
    assert report.events_accepted == 1


@pytest.mark.parametrize("processes", [1, 2])
def test_every_imported_value_opens_under_the_one_key_its_subject_has(
    any_vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    """Shipments are sealed ahead under new keys; a recipient who already has a key
    (from an earlier import or an earlier chunk) must end up under that key."""
    if processes == 2:
        monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    _tenant(any_vault)
    jane = {"name": "Jane Doe", "email": "jane@example.org"}
    omar = {"name": "Omar Roe", "email": "omar@example.org"}
    first = _jsonl(tmp_path / "first.jsonl", [_shipment("JANE0001", recipient=jane)])
    _import(any_vault, first)
    second = _jsonl(
        tmp_path / "second.jsonl",
        [  # chunks of 1, 2 and 3 lines
            _shipment("OMAR0001", recipient=omar),
            _shipment("JANE0002", recipient=jane),
            _event("JANE0002", 1, "delivered", proof={"received_by": "Jane's neighbour"}),
            _shipment("OMAR0002", recipient=omar),
            _event("OMAR0002", 1, "delivered", proof={"received_by": "Omar Roe"}),
            _shipment("OMAR0003", recipient=omar),
        ],
    )
    report = _import(any_vault, second, chunk_size=3)
    assert (report.shipments_created, report.events_accepted) == (4, 2)
    with any_vault.engine.connect() as connection:
        sealed = connection.execute(select(sealed_fields)).all()
        key_ids = dict(connection.execute(select(subjects.c.id, subjects.c.key_id)).all())
    assert len(key_ids) == 2
    opened = set()
    for row in sealed:
        key = any_vault.keystore.get_one(row.subject_id)
        assert key is not None
        assert key.key_id == key_ids[row.subject_id]
        cipher = any_vault.keyring.unwrap(key.wrapped, row.subject_id)
        ad = associated_data(row.subject_id, row.record_id, row.field)
        opened.add(open_sealed(cipher, row.value, ad))
    assert {"Jane Doe", "Omar Roe", "jane@example.org", "omar@example.org"} <= opened
    assert "Jane's neighbour" in opened


def _mixed_file() -> list[dict[str, Any] | bytes]:
    return [
        _shipment(A),
        _event(A, 1, "info_received"),
        b'{"type": "event", "tracking_number": ',
        _event(A, 2, time="2025-05-01T10:00:00"),
        _event("ZZ99ZZ99", 4),
        _event(A, 5, status="teleported"),
        _shipment(None),
        _event(B, 1),
        _shipment(B),
        _event(B, 2, "exception", reason="address_problem", description="Gate locked"),
        _event(A, 3, location={"country": "FR", "region": "Nord", "city": "Lille"}),
        _event(
            A,
            6,
            "delivered",
            proof={"received_by": "Jane Doe", "photo": "p-1", "geo": {"lat": 53.8, "lon": -1.55}},
        ),
        _event(A, 1),
        b"[1, 2, 3]",
        {"type": "parcel"},
    ]


@pytest.mark.parametrize("validators", [1, 2])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_file_validated_in_other_processes_imports_exactly_as_in_one(
    any_vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, validators: int
) -> None:
    lines = _mixed_file()
    if fmt == "csv":
        path = _csv(tmp_path / "in.csv", [line for line in lines if isinstance(line, dict)])
    else:
        path = _jsonl(tmp_path / "in.jsonl", lines)
    one, two = _tenant(any_vault, "one-process"), _tenant(any_vault, "two-processes")
    progress: dict[str, list[int]] = {"one": [], "two": []}
    alone = importer.import_file(
        vault=any_vault,
        tenant_name="one-process",
        path=path,
        chunk_size=4,
        progress=progress["one"].append,
    )
    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(importer, "validators", lambda: validators)
    beside = importer.import_file(
        vault=any_vault,
        tenant_name="two-processes",
        path=path,
        chunk_size=4,
        progress=progress["two"].append,
    )
    assert beside == alone
    assert alone.rejected_lines > 0
    assert alone.events_accepted > 0
    assert progress["two"] == progress["one"]
    assert progress["one"][-1] == path.stat().st_size
    for number in (A, B):
        views = [
            tracking.merchant_view(vault=any_vault, tenant_id=tenant, raw_number=number)
            for tenant in (one, two)
        ]
        assert dataclasses.replace(views[1], tenant=None) == dataclasses.replace(
            views[0], tenant=None
        )


@pytest.mark.parametrize("reopens", [True, False])
def test_two_processes_validate_where_the_file_can_be_reopened_else_one(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reopens: bool
) -> None:
    _tenant(vault)
    path = _jsonl(tmp_path / "in.jsonl", [_shipment(A)] + [_event(A, n) for n in range(1, 30)])
    started: list[str] = []
    start = multiprocessing.process.BaseProcess.start

    def recording_start(process: multiprocessing.process.BaseProcess) -> None:
        started.append(process.name)
        start(process)

    def no_reopening(*_: Any, **__: Any) -> Any:
        raise OSError(2, "No such file or directory")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", recording_start)
    monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(importer, "validators", lambda: 2)
    if not reopens:
        monkeypatch.setattr(importer, "open", no_reopening, raising=False)
    report = _import(vault, path, chunk_size=4)
    expected = ["parcelvault-import-validator-1", "parcelvault-import-validator-2"]
    assert started == (expected if reopens else expected[:1])
    assert (report.shipments_created, report.events_accepted) == (1, 29)


def _shipment_states(vault: Vault, tenant_id: int) -> dict[str, tuple[Any, ...]]:
    with vault.engine.connect() as connection:
        rows = connection.execute(
            select(
                shipments.c.tracking_number,
                shipments.c.status,
                shipments.c.status_at,
                shipments.c.version > 0,
            ).where(shipments.c.tenant_id == tenant_id)
        )
        return {row[0]: tuple(row[1:]) for row in rows}


def test_shipments_written_with_their_events_store_the_status_an_update_would_give(
    any_vault: Vault, tmp_path: Path
) -> None:
    # In one chunk a new shipment is inserted with its status already set; one line a
    # chunk, the events' UPDATE sets it. Both must leave the same row.
    lines: list[dict[str, Any]] = [
        _shipment(A),
        _event(A, 3, "out_for_delivery"),
        _event(A, 1, "info_received"),  # earlier: joins the timeline only
        _shipment(B),  # no events: stays pending, never updated
        _event(A, 2),
    ]
    path = _jsonl(tmp_path / "in.jsonl", lines)
    together, apart = _tenant(any_vault), _tenant(any_vault, "shop-b")
    _import(any_vault, path)
    importer.import_file(vault=any_vault, tenant_name="shop-b", path=path, chunk_size=1)
    whole = _shipment_states(any_vault, together)
    assert whole == _shipment_states(any_vault, apart)
    status, status_at, invalidated = whole[A]
    assert status == Status.OUT_FOR_DELIVERY.value
    assert status_at is not None
    assert invalidated  # the shipment's cached views, had there been any, are stale
    assert whole[B] == (Status.PENDING.value, None, False)


def test_bad_csv_rows_are_numbered_with_the_header_as_line_one(
    any_vault: Vault, tmp_path: Path
) -> None:
    _tenant(any_vault)
    path = _csv(
        tmp_path / "in.csv",
        [
            _shipment(A),  # line 2
            _event(A, 1),  # 3
            _event(A, 2, status="lost_in_space"),  # 4
            _shipment(B, recipient={"name": "Jo Bloggs", "email": "not-an-address"}),  # 5
            _event(A, 3, proof={"geo": {"lat": 91, "lon": 0}}),  # 6
        ],
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write("event,too,few,cells\n")  # 7
        handle.write(",".join(_as_csv_row(_event(A, 4)).values()) + "\n")  # 8
    report = _import(any_vault, path)
    assert _rejected(report) == {
        (4, "status"),
        (5, "recipient_email"),
        (6, "proof_geo_lat"),
        (7, "(line)"),
    }
    assert (report.shipments_created, report.events_accepted) == (1, 2)


def test_a_csv_file_with_an_unknown_column_imports_nothing(vault: Vault, tmp_path: Path) -> None:
    _tenant(vault)
    path = tmp_path / "in.csv"
    path.write_text("type,tracking_number,colour\nshipment,AB12CD34,blue\n")
    report = _import(vault, path)
    assert _rejected(report) == {(1, "header")}
    assert report.shipments_created == 0
    assert _rows(vault)["shipments"] == 0


def test_an_unknown_tenant_or_unreadable_file_is_an_error_not_a_report(
    vault: Vault, tmp_path: Path
) -> None:
    _tenant(vault)
    with pytest.raises(InvalidInput, match="no tenant named"):
        importer.import_file(vault=vault, tenant_name="nobody", path=SAMPLES / "shipments.jsonl")
    with pytest.raises(importer.UnreadableFile, match="cannot read"):
        _import(vault, tmp_path / "missing.jsonl")
    with pytest.raises(importer.UnreadableFile):
        _import(vault, tmp_path, fmt=importer.ImportFormat.CSV)


@pytest.mark.parametrize("second_process", [False, True])
def test_a_read_failure_midway_names_the_line_and_keeps_the_chunks_written(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second_process: bool
) -> None:
    _tenant(vault)
    path = _jsonl(tmp_path / "in.jsonl", [_shipment(A)] + [_event(A, n) for n in range(1, 9)])
    lines = importer.LineReader._lines

    def failing_after_line_5(reader: importer.LineReader) -> Any:
        for item in lines(reader):
            if item[0] == 6:
                raise OSError(5, "Input/output error")
            yield item

    monkeypatch.setattr(importer.LineReader, "_lines", failing_after_line_5)
    if second_process:
        monkeypatch.setattr(importer, "PARALLEL_MIN_BYTES", 0)
    with pytest.raises(importer.UnreadableFile) as failure:
        _import(vault, path, chunk_size=2)
    assert str(failure.value) == f"reading {path} failed after line 6: Input/output error"
    # chunks: line 1 (the first is an eighth of the size, at least one line), 2-3, 4-5
    assert _rows(vault)["events"] == 4


# --- personal data ---------------------------------------------------------------------


def _canary_lines(canaries: Canaries) -> list[dict[str, Any]]:
    return [
        {"type": "shipment", "tracking_number": A, **canaries.shipment()},
        _event(
            A,
            1,
            "delivered",
            proof={"received_by": canaries.received_by, "signature": canaries.signature},
        ),
    ]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_imported_personal_values_never_reach_the_database_file_in_plaintext(
    vault: Vault, tmp_path: Path, canaries: Canaries, kind: str
) -> None:
    tenant_id = _tenant(vault)
    lines = _canary_lines(canaries)
    write = _jsonl if kind == "jsonl" else _csv
    path = write(tmp_path / f"in.{kind}", lines)
    report = _import(vault, path)
    assert (report.shipments_created, report.events_accepted) == (1, 1)
    view = tracking.merchant_view(vault=vault, tenant_id=tenant_id, raw_number=A)
    assert view.personal["recipient.name"] == canaries.name  # stored, sealed
    database = tmp_path / "parcelvault.db"
    files = [database, database.with_name(database.name + "-wal")]
    assert files[1].exists()
    for file in files:
        assert canaries.found_in(file.read_bytes()) == []
    vault.engine.dispose()
    for file in [f for f in files if f.exists()]:
        assert canaries.found_in(file.read_bytes()) == []


def test_rejections_never_echo_the_values_of_a_line(
    vault: Vault, tmp_path: Path, canaries: Canaries
) -> None:
    _tenant(vault)
    lines: list[dict[str, Any]] = [
        {"type": "shipment", "tracking_number": A, **canaries.shipment()},
        _event(A, 1, status=canaries.name),
        _event(A, 2, time=canaries.street),
        _event(A, 3, **{canaries.email: canaries.phone}),
        {
            **_shipment(B),
            "recipient": {"name": canaries.name, "email": canaries.postcode},
        },
        {"type": canaries.signature},
        _event(A, 4, location={"country": canaries.received_by}),
        _event(canaries.postcode, 5),
    ]
    report = _import(vault, _jsonl(tmp_path / "in.jsonl", lines))
    assert report.rejected_lines == 7
    text = "\n".join(f"{r.line} {r.field} {r.message}" for r in report.rejections)
    assert canaries.found_in(text) == []
    assert _rows(vault)["shipments"] == 1


# --- the command line ------------------------------------------------------------------


@pytest.fixture
def cli_env(vault: Vault, sqlite_url: str, key_dir: Path) -> dict[str, str]:
    _tenant(vault)
    return {"PARCELVAULT_DATABASE_URL": sqlite_url, "PARCELVAULT_KEY_DIR": str(key_dir)}


def test_the_import_command_prints_a_summary_and_exits_0(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app, ["import", str(SAMPLES / "shipments.jsonl"), "--tenant", "shop-a"], env=cli_env
    )
    assert result.exit_code == 0, result.output
    assert "shipments created:                   5" in result.stdout
    assert "lines rejected:                      0" in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_the_import_command_lists_rejected_lines_and_exits_1(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    lines = [_shipment(A)] + [_event(A, n, time="2025-05-01T10:00:00") for n in range(60)]
    path = _jsonl(tmp_path / "in.jsonl", lines)
    errors = tmp_path / "errors.jsonl"
    result = CliRunner().invoke(
        app, ["import", str(path), "--tenant", "shop-a", "--errors", str(errors)], env=cli_env
    )
    assert result.exit_code == 1
    assert "line 2: time: needs a UTC offset" in result.stdout
    assert "line 51: time:" in result.stdout
    assert "line 52: time:" not in result.stdout
    assert "and 10 more problems" in result.stdout
    written = [orjson.loads(line) for line in errors.read_bytes().splitlines()]
    assert len(written) == 60
    assert written[-1] == {"line": 61, "field": "time", "message": written[0]["message"]}


@pytest.mark.parametrize("rejected", [False, True])
def test_the_import_command_as_a_program_prints_everything_and_keeps_every_row(
    cli_env: dict[str, str], vault: Vault, tmp_path: Path, rejected: bool
) -> None:
    # The program ends without Python's teardown after an import: its output, its exit
    # status and what it wrote must not suffer from that.
    lines = [_shipment(A)] + [_event(A, n) for n in range(1, 40)]
    if rejected:
        lines.append(_event(A, 99, time="2025-05-01T10:00:00"))
    path = _jsonl(tmp_path / "in.jsonl", lines)
    done = subprocess.run(
        [sys.executable, "-m", "parcelvault", "import", str(path), "--tenant", "shop-a"],
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, **cli_env},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == (1 if rejected else 0), done.stderr
    output = done.stdout.decode()
    assert "events accepted:                    39" in output
    assert ("line 41: time: needs a UTC offset" in output) is rejected
    assert _rows(vault)["events"] == 39
    assert _stored_keys(vault) == 1
    with vault.engine.connect() as connection:
        assert connection.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"


def _dry_run_of_the_sample_csv(cli_env: dict[str, str]) -> Result:
    return CliRunner().invoke(
        app,
        ["import", str(SAMPLES / "shipments.csv"), "--tenant", "shop-a", "--dry-run"],
        env=cli_env,
    )


def test_the_import_command_dry_run_writes_nothing(cli_env: dict[str, str], vault: Vault) -> None:
    result = _dry_run_of_the_sample_csv(cli_env)
    assert result.exit_code == 0, result.output
    assert "nothing was written" in result.stdout
    assert "shipments created:                   3" in result.stdout
    assert _rows(vault)["shipments"] == 0


def test_a_scratch_copy_that_cannot_be_written_says_why(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vanished = tmp_path / "vanished"  # as if the folder were removed under the copy
    monkeypatch.setattr(scratch_copy.tempfile, "mkdtemp", lambda **_: str(vanished))
    with (
        pytest.raises(scratch_copy.ScratchCopyFailed, match="unable to open database file"),
        scratch_copy.scratch_copy(vault.engine),
    ):
        pass
    assert not vanished.exists()


def test_a_dry_run_that_cannot_copy_the_database_says_where_and_why(
    cli_env: dict[str, str], vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(**_: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scratch_copy.tempfile, "mkdtemp", disk_full)
    result = _dry_run_of_the_sample_csv(cli_env)
    assert result.exit_code == 2, result.output
    assert "cannot make a scratch copy of the database" in result.stderr
    assert "No space left on device" in result.stderr
    assert "Traceback" not in result.output
    assert _rows(vault)["shipments"] == 0


@pytest.mark.parametrize(
    ("file", "tenant", "message"),
    [
        ("missing.jsonl", "shop-a", "cannot read"),
        ("shipments.txt", "shop-a", "--format"),
        ("shipments.jsonl", "nobody", "no tenant named"),
    ],
)
def test_the_import_command_exits_2_when_it_cannot_run(
    cli_env: dict[str, str], tmp_path: Path, file: str, tenant: str, message: str
) -> None:
    (tmp_path / "shipments.txt").write_text("{}\n")
    (tmp_path / "shipments.jsonl").write_bytes((SAMPLES / "shipments.jsonl").read_bytes())
    result = CliRunner().invoke(
        app, ["import", str(tmp_path / file), "--tenant", tenant], env=cli_env
    )
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_the_import_command_takes_the_format_from_the_option(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "export.txt"
    path.write_bytes((SAMPLES / "shipments.csv").read_bytes())
    result = CliRunner().invoke(
        app, ["import", str(path), "--tenant", "shop-a", "--format", "csv"], env=cli_env
    )
    assert result.exit_code == 0, result.output
    assert "shipments created:                   3" in result.stdout


def test_the_import_command_never_prints_personal_values(
    cli_env: dict[str, str], tmp_path: Path, canaries: Canaries
) -> None:
    lines = [
        {"type": "shipment", "tracking_number": A, **canaries.shipment()},
        _event(A, 1, status=canaries.name, proof={"received_by": canaries.received_by}),
    ]
    path = _jsonl(tmp_path / "in.jsonl", lines)
    result = CliRunner().invoke(app, ["import", str(path), "--tenant", "shop-a"], env=cli_env)
    assert result.exit_code == 1
    assert canaries.found_in(result.output) == []


# --- demo --------------------------------------------------------------------------------


def test_the_demo_loads_once_and_shows_links_of_different_statuses(vault: Vault) -> None:
    first = demo_data.load_demo(vault=vault, count=150, seed=5)
    assert first.api_key is not None
    assert first.report is not None
    assert first.report.shipments_created == 150
    assert first.report.rejected_lines == 0
    assert len({link.status_label for link in first.links}) == len(first.links) == 5
    assert all(link.postcode for link in first.links)
    again = demo_data.load_demo(vault=vault, count=150, seed=5)
    assert (again.api_key, again.report, again.shipments_before) == (None, None, 150)
    assert again.links == first.links


def test_the_demo_command_prints_tracking_links_with_postcodes(
    vault: Vault, sqlite_url: str, key_dir: Path
) -> None:
    env = {
        "PARCELVAULT_DATABASE_URL": sqlite_url,
        "PARCELVAULT_KEY_DIR": str(key_dir),
        "PARCELVAULT_PORT": "8123",
    }
    result = CliRunner().invoke(app, ["demo", "--count", "80", "--seed", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "API key (shown once" in result.stdout
    assert "loaded 80 shipments" in result.stdout
    links = [line for line in result.stdout.splitlines() if "http://127.0.0.1:8123/t/" in line]
    assert len(links) == 5
    rerun = CliRunner().invoke(app, ["demo", "--count", "80"], env=env)
    assert rerun.exit_code == 0, rerun.output
    assert "loaded nothing more" in rerun.stdout
    assert "API key" not in rerun.stdout


def test_demo_data_written_as_a_file_imports_without_a_rejection(
    vault: Vault, tmp_path: Path
) -> None:
    _tenant(vault)
    path = tmp_path / "demo.jsonl"
    now = vault.clock()
    written = demo_data.write_jsonl(path, demo_data.generate(seed=11, count=120, now=now))
    report = _import(vault, path, chunk_size=97)
    assert report.rejections == []
    assert report.lines == written
    assert report.shipments_created + report.events_accepted == written


@pytest.mark.postgres
def test_an_import_keeps_postgresql_planner_statistics_fresh(
    postgres_url: str, key_dir: Path
) -> None:
    vault = make_vault(postgres_url, key_dir)
    try:
        _tenant(vault)
        report = _import(vault, SAMPLES / "shipments.jsonl", chunk_size=5)
        assert report.rejections == []
        with vault.engine.connect() as connection:
            analyzed = connection.execute(
                text(
                    "SELECT relname FROM pg_stat_user_tables "
                    "WHERE last_analyze IS NOT NULL ORDER BY relname"
                )
            ).scalars()
            assert set(analyzed) >= {"events", "sealed_fields", "shipments", "subjects"}
    finally:
        vault.engine.dispose()
