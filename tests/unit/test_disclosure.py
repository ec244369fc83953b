from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parcelvault.privacy import masking
from parcelvault.privacy.disclosure import disclose, fields_needed
from parcelvault.privacy.policy import Exposure, Mask, load_default_policy

POLICY = load_default_policy()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Jane Doe", "J. D."), ("jane ann van der berg", "J. B."), ("Prince", "P."), ("  ", "")],
)
def test_names_are_masked_to_initials(name: str, expected: str) -> None:
    assert masking.initials(name) == expected


def test_the_other_masks_keep_only_a_hint() -> None:
    assert masking.email("jane.doe@example.org") == "j…@example.org"
    assert masking.last_digits("+44 7700 900123") == "…23"
    assert masking.postcode_prefix("SW1A 1AA") == "SW1A"
    assert masking.postcode_prefix("10115") == "10…"
    assert masking.round_1km("53.801234,-1.548765") == "53.80,-1.55"
    assert masking.apply(Mask.SIGNED_FOR, "Jane Doe") == "signed for"
    assert masking.apply(Mask.HIDDEN, "anything") is None


SHIPMENT_VALUES = {
    "destination.notes": "Leave it with the neighbour at no. 14",
    "recipient.name": "Jane Doe",
    "recipient.email": "jane@example.org",
    "recipient.phone": "+44 7700 900123",
    "destination.street": "12 Example Street",
    "destination.postcode": "LS1 4AP",
    "origin.postcode": "E1 6AN",
}


def test_the_public_sees_initials_and_nothing_else() -> None:
    shown = disclose(SHIPMENT_VALUES, record="shipment", tier="public", policy=POLICY)
    assert shown == {"recipient.name": "J. D."}


def test_the_recipient_sees_everything_of_their_own() -> None:
    shown = disclose(SHIPMENT_VALUES, record="shipment", tier="recipient", policy=POLICY)
    assert shown == SHIPMENT_VALUES


def test_values_the_policy_does_not_know_are_never_passed_through() -> None:
    shown = disclose(
        {**SHIPMENT_VALUES, "recipient.secret": "x"},
        record="shipment",
        tier="recipient",
        policy=POLICY,
    )
    assert "recipient.secret" not in shown


def test_a_courier_sees_the_address_and_notes_but_not_the_contact() -> None:
    shown = disclose(SHIPMENT_VALUES, record="shipment", tier="courier", policy=POLICY)
    assert shown == {
        "recipient.name": "J. D.",
        "destination.street": "12 Example Street",
        "destination.postcode": "LS1 4AP",
        "destination.notes": "Leave it with the neighbour at no. 14",
    }


def test_an_auditor_sees_no_personal_value_at_all() -> None:
    assert disclose(SHIPMENT_VALUES, record="shipment", tier="auditor", policy=POLICY) == {}


def test_only_fields_a_tier_sees_are_worth_decrypting() -> None:
    assert fields_needed(record="shipment", tier="public", policy=POLICY) == {"recipient.name"}
    assert fields_needed(record="event", tier="public", policy=POLICY) == frozenset()


personal_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=3, max_size=40
)


@given(
    texts=st.fixed_dictionaries({name: personal_text for name in SHIPMENT_VALUES}),
    tier=st.sampled_from(POLICY.tiers),
)
def test_no_view_contains_a_value_its_tier_is_not_given(texts: dict[str, str], tier: str) -> None:
    values = {name: f"<{name}>{text}</{name}>" for name, text in texts.items()}
    shown = disclose(values, record="shipment", tier=tier, policy=POLICY)
    for name, value in values.items():
        exposure = POLICY.fields[name].exposure_for(tier)
        if exposure is Exposure.HIDDEN:
            assert name not in shown
        if exposure is not Exposure.FULL:
            assert all(value not in visible for visible in shown.values())
        else:
            assert shown[name] == value
