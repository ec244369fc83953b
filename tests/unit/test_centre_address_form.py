"""What the privacy centre's address form hands to the corrections service."""

from __future__ import annotations

from parcelvault.entrypoints.web.centre_pages import form_changes


def test_street_lines_lose_blank_lines_and_surrounding_spaces() -> None:
    changes = form_changes("  12 Example Street\r\n\r\n Flat 3 \n", " LS1 4AP ", "  ")
    assert changes == {
        "destination.street": "12 Example Street\nFlat 3",
        "destination.postcode": "LS1 4AP",
        "destination.notes": "",
    }


def test_an_empty_form_stays_empty_for_the_service_to_refuse() -> None:
    assert set(form_changes("", "", "").values()) == {""}
