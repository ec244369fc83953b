from __future__ import annotations

import pytest

from parcelvault.privacy.policy import (
    RECORD_FIELDS,
    Exposure,
    PolicyError,
    default_policy_text,
    load_default_policy,
    load_policy_text,
    risky_choices,
)


def test_the_shipped_policy_covers_every_sealed_field() -> None:
    policy = load_default_policy()
    for record, names in RECORD_FIELDS.items():
        assert {rule.name for rule in policy.fields_of(record)} == names


def test_the_shipped_policy_hides_contact_street_and_proof_from_the_public() -> None:
    policy = load_default_policy()
    for name in ("recipient.email", "recipient.phone", "destination.street", "proof.received_by"):
        assert policy.fields[name].exposure_for("public") is Exposure.HIDDEN
    assert policy.fields["recipient.name"].exposure_for("public") is Exposure.MASKED


def _without(text: str, line_start: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(line_start))


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda t: t.replace('mask = "initials"', 'mask = "blur"'), "fields.recipient.name.mask"),
        (
            lambda t: t.replace('public = "masked"', 'publik = "masked"', 1),
            "fields.recipient.name.exposure.publik",
        ),
        (
            lambda t: t.replace('retention = "90d after delivered"', 'retention = "a while"', 1),
            "fields.recipient.name.retention",
        ),
        (
            lambda t: t.replace('[fields."origin.postcode"]', '[fields."origin.street"]'),
            "fields.origin.street",
        ),
        (
            lambda t: t.replace('tiers = ["public", "recipient",', 'tiers = ["public", "robots",'),
            "tiers",
        ),
        (lambda t: t.replace("version = 1", "version = 2"), "version"),
        (lambda t: t + "\n[oops\n", "(syntax)"),
    ],
)
def test_a_broken_policy_is_refused_naming_the_source_and_key(mutate: object, key: str) -> None:
    text = mutate(default_policy_text())  # type: ignore[operator]
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "operator.toml")
    assert caught.value.source == "operator.toml"
    assert caught.value.key == key


def test_a_policy_that_forgets_a_personal_field_is_refused() -> None:
    text = default_policy_text()
    start = text.index('[fields."proof.photo"]')
    end = text.index('[fields."proof.geo"]')
    with pytest.raises(
        PolicyError, match=r"fields\.proof\.photo: personal event field has no rule"
    ):
        load_policy_text(text[:start] + text[end:], "p.toml")


def test_a_missing_retention_is_refused() -> None:
    text = default_policy_text().replace('retention = "30d after delivered"\n', "", 1)
    with pytest.raises(PolicyError, match="retention: missing"):
        load_policy_text(text, "p.toml")


def test_a_mistake_is_reported_with_its_line_number() -> None:
    text = default_policy_text().replace('mask = "email"', 'mask = "smudge"')
    expected = text.splitlines().index('mask = "smudge"') + 1
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "operator.toml")
    assert caught.value.line == expected
    assert str(caught.value).startswith(f"operator.toml:{expected}: fields.recipient.email.mask:")


def test_a_syntax_error_is_reported_with_its_line_number() -> None:
    text = default_policy_text() + "\n[oops\n"
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.toml")
    assert caught.value.line == len(text.splitlines())


def test_the_shipped_policy_raises_no_warning() -> None:
    assert risky_choices(load_default_policy()) == []


def test_a_street_shown_in_full_to_the_public_is_flagged() -> None:
    text = default_policy_text().replace(
        '[fields."destination.street".exposure]\npublic = "hidden"',
        '[fields."destination.street".exposure]\npublic = "full"',
    )
    warnings = risky_choices(load_policy_text(text, "p.toml"))
    assert len(warnings) == 1
    assert warnings[0].startswith("fields.destination.street: anyone with a tracking number")
