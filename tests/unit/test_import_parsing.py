from __future__ import annotations

import io
from pathlib import Path

import pytest

from parcelvault.services import importer
from parcelvault.services.importer import (
    CSV_COLUMNS,
    MAX_LINE_BYTES,
    ImportFormat,
    csv_record,
    field_name,
    format_for,
    parse_csv_header,
)

ROOT = Path(__file__).resolve().parents[2]


def _columns(*names: str) -> list[tuple[str, ...]]:
    header = parse_csv_header(list(names))
    assert isinstance(header, list)
    return header


def _jsonl(data: bytes) -> list[tuple[int, object]]:
    return list(importer.LineReader(io.BytesIO(data)).jsonl())


def _csv(data: bytes) -> list[tuple[int, object]]:
    return list(importer.LineReader(io.BytesIO(data)).csv())


def test_a_csv_row_becomes_a_nested_import_record() -> None:
    columns = _columns(
        "type",
        "tracking_number",
        "origin_country",
        "origin_city",
        "destination_street",
        "recipient_name",
        "promised_date",
    )
    cells = ["shipment", "AB12CD34", "GB", "Leeds", "Flat 2|12 Example Street", "Jo Bloggs", ""]
    assert csv_record(columns, cells) == {
        "type": "shipment",
        "tracking_number": "AB12CD34",
        "origin": {"country": "GB", "city": "Leeds"},
        "destination": {"street": ["Flat 2", "12 Example Street"]},
        "recipient": {"name": "Jo Bloggs"},
    }


def test_empty_and_blank_cells_are_absent_not_empty_strings() -> None:
    columns = _columns("type", "reason", "location_city", "proof_received_by")
    assert csv_record(columns, ["event", "", "   ", ""]) == {"type": "event"}


def test_proof_geo_columns_nest_two_levels_deep() -> None:
    columns = _columns("type", "proof_geo_lat", "proof_geo_lon", "proof_signature")
    assert csv_record(columns, ["event", "51.5", "-0.12", "sig-1"]) == {
        "type": "event",
        "proof": {"geo": {"lat": "51.5", "lon": "-0.12"}, "signature": "sig-1"},
    }


def test_street_lines_are_split_on_the_bar_and_trimmed() -> None:
    columns = _columns("type", "destination_street")
    record = csv_record(columns, ["shipment", " 3 Mill Lane |  Unit 4 "])
    assert record["destination"]["street"] == ["3 Mill Lane", "Unit 4"]


def test_every_csv_column_maps_to_a_distinct_record_path() -> None:
    paths = list(CSV_COLUMNS.values())
    assert len(set(paths)) == len(paths)
    assert all(field_name(path, csv_names=True) == name for name, path in CSV_COLUMNS.items())


def test_header_names_are_case_and_space_insensitive_and_order_free() -> None:
    assert _columns(" Time ", "TYPE", "event_id") == [("time",), ("type",), ("event_id",)]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["type", "colour"], "unknown columns: colour"),
        (["type", "time", "time"], "columns named twice: time"),
        (["tracking_number", "time"], "needs a type column"),
        (["type", "jane@example.org"], "unknown columns: ?"),
    ],
)
def test_a_wrong_header_is_explained_without_echoing_odd_names(
    cells: list[str], expected: str
) -> None:
    problem = parse_csv_header(cells)
    assert not isinstance(problem, list)
    assert problem.field == "header"
    assert expected in problem.message


def test_field_names_read_as_dotted_paths_for_json_and_columns_for_csv() -> None:
    loc = ("destination", "street", 0)
    assert field_name(loc, csv_names=False) == "destination.street.0"
    assert field_name(loc, csv_names=True) == "destination_street"
    assert field_name(("proof", "geo", "lat"), csv_names=True) == "proof_geo_lat"


def test_a_field_name_that_is_not_an_identifier_is_not_echoed() -> None:
    assert field_name(("recipient", "jane@example.org"), csv_names=False) == "recipient.?"


def test_the_format_follows_the_extension() -> None:
    assert format_for(Path("a.jsonl")) is ImportFormat.JSONL
    assert format_for(Path("a.NDJSON")) is ImportFormat.JSONL
    assert format_for(Path("a.csv")) is ImportFormat.CSV
    with pytest.raises(importer.UnknownFormat, match="--format"):
        format_for(Path("a.txt"))


def test_json_lines_are_numbered_from_one_and_blank_lines_skipped() -> None:
    lines = _jsonl(b'{"a": 1}\n\n   \n{"b": 2}\r\n{"c": 3}')
    assert [(n, payload) for n, payload in lines] == [
        (1, b'{"a": 1}\n'),
        (4, b'{"b": 2}\r\n'),
        (5, b'{"c": 3}'),
    ]


def test_a_byte_order_mark_on_the_first_line_is_ignored() -> None:
    assert _jsonl(b'\xef\xbb\xbf{"a": 1}\n') == [(1, b'{"a": 1}\n')]
    columns = _csv(b"\xef\xbb\xbftype,time\nevent,x\n")
    assert columns == [(2, {"type": "event", "time": "x"})]


def test_an_oversized_line_is_reported_and_the_next_line_still_read() -> None:
    big = b'{"description": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
    lines = _jsonl(b'{"a": 1}\n' + big + b'{"b": 2}\n')
    assert lines[0] == (1, b'{"a": 1}\n')
    assert lines[1][0] == 2
    assert isinstance(lines[1][1], importer.LineProblem)
    assert "64 KiB" in lines[1][1].message
    assert lines[2] == (3, b'{"b": 2}\n')


def test_a_line_of_exactly_the_limit_is_accepted() -> None:
    exact = b"x" * MAX_LINE_BYTES
    assert _jsonl(exact + b"\n") == [(1, exact + b"\n")]


def test_csv_rows_are_numbered_with_the_header_as_line_one() -> None:
    rows = _csv(b"type,tracking_number\nshipment,AB12\n\nevent,CD34\n")
    assert rows == [
        (2, {"type": "shipment", "tracking_number": "AB12"}),
        (4, {"type": "event", "tracking_number": "CD34"}),
    ]


def test_a_quoted_cell_may_span_lines_and_the_row_keeps_its_first_line_number() -> None:
    rows = _csv(b'type,description\nevent,"two\nlines"\nevent,after\n')
    assert rows == [
        (2, {"type": "event", "description": "two\nlines"}),
        (4, {"type": "event", "description": "after"}),
    ]


def test_a_csv_row_with_the_wrong_number_of_cells_is_a_problem() -> None:
    rows = _csv(b"type,time\nevent\nevent,x,y\nevent,x\n")
    assert [n for n, _ in rows] == [2, 3, 4]
    assert isinstance(rows[0][1], importer.LineProblem)
    assert rows[0][1].message == "has 1 cells; the header names 2"
    assert isinstance(rows[1][1], importer.LineProblem)
    assert rows[2][1] == {"type": "event", "time": "x"}


def test_a_csv_file_without_a_header_is_reported_on_line_one() -> None:
    rows = _csv(b"")
    assert len(rows) == 1
    line, problem = rows[0]
    assert line == 1
    assert isinstance(problem, importer.LineProblem)
    assert problem.field == "header"


def test_a_wrong_csv_header_stops_reading_the_rows() -> None:
    rows = _csv(b"type,colour\nevent,blue\nevent,red\n")
    assert len(rows) == 1
    assert rows[0][0] == 1


def test_a_csv_row_that_is_not_utf8_is_reported_alone() -> None:
    rows = _csv(b"type,description\nevent,caf\xe9\nevent,ok\n")
    assert rows[0][0] == 2
    assert isinstance(rows[0][1], importer.LineProblem)
    assert rows[0][1].message == "is not UTF-8 text"
    assert rows[1] == (3, {"type": "event", "description": "ok"})


def test_an_unclosed_quote_swallowing_the_file_is_reported_at_its_first_line() -> None:
    tail = b"event,x\n" * (MAX_LINE_BYTES // 8 + 10)
    rows = _csv(b'type,description\nevent,"never closed\n' + tail)
    assert len(rows) == 1
    assert rows[0][0] == 2
    assert isinstance(rows[0][1], importer.LineProblem)


def test_the_sample_csv_header_uses_only_documented_columns() -> None:
    header = (ROOT / "docs" / "samples" / "shipments.csv").read_text().splitlines()[0]
    assert isinstance(parse_csv_header(header.split(",")), list)
    documented = (ROOT / "docs" / "import.md").read_text()
    assert all(f"`{name}`" in documented for name in CSV_COLUMNS)
