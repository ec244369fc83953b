"""What the privacy centre's address form turns into: only changed fields, or problems."""

from __future__ import annotations

from parcelvault.entrypoints.web.centre_pages import address_changes

CURRENT = {
    "destination.street": "12 Example Street\nFlat 3",
    "destination.postcode": "LS1 4AP",
}


def test_unchanged_values_produce_no_change() -> None:
    changes, problems = address_changes(
        CURRENT, "12 Example Street\r\n  Flat 3 \n\n", "LS1 4AP", ""
    )
    assert changes == {}
    assert problems == {}


def test_only_the_fields_that_differ_are_changed() -> None:
    changes, problems = address_changes(
        CURRENT, "12 Example Street\nFlat 3", "LS1 4AQ", "Side door"
    )
    assert changes == {"destination.postcode": "LS1 4AQ", "destination.notes": "Side door"}
    assert problems == {}


def test_empty_too_long_and_too_many_lines_are_problems() -> None:
    _, problems = address_changes(CURRENT, "", "", "")
    assert set(problems) == {"street", "postcode"}
    _, problems = address_changes(CURRENT, "a\nb\nc\nd\ne", "P" * 17, "n" * 301)
    assert set(problems) == {"street", "postcode", "notes"}
    _, problems = address_changes(CURRENT, "x" * 201, "LS1", "")
    assert set(problems) == {"street"}
