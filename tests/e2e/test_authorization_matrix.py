"""The authorization matrix: every surface that shows a shipment x every tier that
reaches it x every personal field, checked against what the policy file says.

Nothing here lists who may see what. The cases and their expectations are generated
from the policy at collection time: the shipped default, and an operator copy that
tightens a few exposures and reaches the service through PARCELVAULT_POLICY. For each
case: `full` -> the value appears as stored; `masked`/`generalized` -> the masked form
appears and no spelling of the raw value does; `hidden` -> neither does (the masked
form where it is distinctive). JSON bodies and the staff page are also read field by
field; the tracking pages, which have no per-field markup, are searched whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from parcelvault.adapters.db import migrate
from parcelvault.crypto.keyring import create_key_folder
from parcelvault.privacy import masking
from parcelvault.privacy.policy import (
    Exposure,
    Policy,
    default_policy_text,
    load_default_policy,
    load_policy_text,
)
from parcelvault.services.vault import build
from parcelvault.settings import Settings
from tests.conftest import make_vault
from tests.e2e.tiers import (
    EXPOSURE_RANK,
    SURFACES,
    UNRECORDED_TIERS,
    Seen,
    Surface,
    World,
    can_show,
    canary_shipment,
    distinctive,
    expected_form,
    raw_forms,
    visit_every_surface,
    with_exposure,
)

DEFAULT_POLICY = load_default_policy()

TIGHTENED = (
    ("recipient.phone", "merchant", "masked"),
    ("destination.notes", "courier", "hidden"),
    ("proof.geo", "carrier", "generalized"),
    ("recipient.name", "public", "hidden"),
    ("recipient.email", "support", "hidden"),
    ("origin.postcode", "admin", "hidden"),
)
"""The operator's changes to the default: (field, tier, exposure)."""


def operator_policy_text() -> str:
    text = default_policy_text()
    for name, tier, exposure in TIGHTENED:
        text = with_exposure(text, name, tier, exposure)
    return text


OPERATOR_TEXT = operator_policy_text()
OPERATOR_POLICY = load_policy_text(OPERATOR_TEXT, "operator-policy.toml")

PAGE_GAPS: dict[tuple[str, str], str] = {}
"""Known places where a page shows less than the policy gives its tier."""


def cases(policy: Policy) -> Sequence[object]:
    found = []
    for surface in SURFACES:
        for name, rule in policy.fields.items():
            gap = PAGE_GAPS.get((surface.name, name))
            marks = (
                [pytest.mark.xfail(strict=True, reason=gap)]
                if gap and can_show(rule, surface.tier)
                else []
            )
            found.append(pytest.param(surface, name, id=f"{surface.name}-{name}", marks=marks))
    return found


# --- the two worlds ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("default-policy")
    create_key_folder(folder / "keys")
    vault = make_vault(f"sqlite:///{folder / 'parcelvault.db'}", folder / "keys", policy=None)
    yield visit_every_surface(vault)
    vault.engine.dispose()


@pytest.fixture(scope="module")
def operator_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("operator-policy")
    create_key_folder(folder / "keys")
    policy_file = folder / "operator-policy.toml"
    policy_file.write_text(OPERATOR_TEXT)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PARCELVAULT_POLICY", str(policy_file))
        settings = Settings(
            database_url=f"sqlite:///{folder / 'parcelvault.db'}",
            key_dir=folder / "keys",
            public_rate_limit=0,
        )
    assert settings.policy == policy_file
    vault = build(settings)
    migrate.upgrade(vault.engine)
    yield visit_every_surface(vault)
    vault.engine.dispose()


# --- the check --------------------------------------------------------------------------------


def check_field(policy: Policy, surface: Surface, name: str, value: str, seen: Seen) -> None:
    """Every body `seen` holds shows the field `name` (stored as `value`) to the
    surface's tier exactly as `policy` says."""
    rule = policy.fields[name]
    exposure = rule.exposure_for(surface.tier)
    expected = expected_form(rule, surface.tier, value)
    masked = masking.apply(rule.mask, value) or None
    where = f"{surface.name} / {name} ({exposure.value})"
    assert seen.bodies, f"{surface.name} was never visited"
    for body in seen.bodies:
        folded = body.lower()
        if expected is not None:
            assert expected in body, f"{where}: the {exposure.value} form does not appear"
        if exposure is not Exposure.FULL:
            leaked = sorted(form for form in raw_forms(name, value) if form.lower() in folded)
            assert leaked == [], f"{where}: a spelling of the raw value appears"
        if exposure is Exposure.HIDDEN and distinctive(masked):
            assert masked is not None
            assert masked.lower() not in folded, f"{where}: the masked form appears"
        if surface.slot is not None:
            assert surface.slot(body, name) == expected, f"{where}: wrong value in its place"


def shown_fields(policy: Policy, surface: Surface, world: World) -> str:
    values = world.canaries_for(surface).values
    return ",".join(
        sorted(
            name
            for name, rule in policy.fields.items()
            if expected_form(rule, surface.tier, values[name]) is not None
        )
    )


# --- the matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize(("surface", "name"), cases(DEFAULT_POLICY))
def test_each_surface_shows_each_personal_field_as_the_default_policy_says(
    default_world: World, surface: Surface, name: str
) -> None:
    values = default_world.canaries_for(surface).values
    check_field(DEFAULT_POLICY, surface, name, values[name], default_world.seen[surface.name])


@pytest.mark.parametrize(("surface", "name"), cases(OPERATOR_POLICY))
def test_each_surface_shows_each_personal_field_as_an_operator_policy_says(
    operator_world: World, surface: Surface, name: str
) -> None:
    values = operator_world.canaries_for(surface).values
    check_field(OPERATOR_POLICY, surface, name, values[name], operator_world.seen[surface.name])


# --- access records ---------------------------------------------------------------------------

RECORDED = [s for s in SURFACES if s.tier not in UNRECORDED_TIERS]
UNRECORDED = [s for s in SURFACES if s.tier in UNRECORDED_TIERS]
WORLDS = ["default_world", "operator_world"]


@pytest.mark.parametrize("surface", RECORDED, ids=str)
@pytest.mark.parametrize("world_name", WORLDS, ids=lambda w: w.removesuffix("_world"))
def test_a_view_disclosing_personal_fields_to_another_tier_leaves_exactly_one_access_record(
    request: pytest.FixtureRequest, world_name: str, surface: Surface
) -> None:
    world: World = request.getfixturevalue(world_name)
    seen = world.seen[surface.name]
    fields = shown_fields(world.vault.policy, surface, world)

    if not fields:
        assert seen.records == []
        return
    assert len(seen.records) == len(seen.bodies) == 1
    (record,) = seen.records
    assert (record.shipment_id, record.tier, record.actor_kind, record.fields) == (
        world.shipment_id_for(surface),
        surface.tier,
        surface.actor_kind,
        fields,
    )


@pytest.mark.parametrize("surface", UNRECORDED, ids=str)
@pytest.mark.parametrize("world_name", WORLDS, ids=lambda w: w.removesuffix("_world"))
def test_public_and_recipient_views_leave_no_access_record(
    request: pytest.FixtureRequest, world_name: str, surface: Surface
) -> None:
    world: World = request.getfixturevalue(world_name)
    seen = world.seen[surface.name]

    assert seen.bodies
    assert seen.records == []


# --- the matrix itself ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, OPERATOR_POLICY], ids=["default", "operator"])
def test_every_tier_and_every_field_of_the_policy_is_in_the_matrix(policy: Policy) -> None:
    assert {s.tier for s in SURFACES} >= set(policy.tiers)
    assert set(canary_shipment().values) >= set(policy.fields)


def test_the_operator_policy_tightens_the_default_where_it_says_and_nowhere_loosens(
    operator_world: World,
) -> None:
    changed = {
        (name, tier)
        for name, rule in DEFAULT_POLICY.fields.items()
        for tier in DEFAULT_POLICY.tiers
        if OPERATOR_POLICY.fields[name].exposure_for(tier) != rule.exposure_for(tier)
    }
    looser = {
        (name, tier)
        for name, tier in changed
        if EXPOSURE_RANK[OPERATOR_POLICY.fields[name].exposure_for(tier)]
        > EXPOSURE_RANK[DEFAULT_POLICY.fields[name].exposure_for(tier)]
    }

    assert changed == {(name, tier) for name, tier, _ in TIGHTENED}
    assert looser == set()
    assert operator_world.vault.policy == OPERATOR_POLICY
    assert operator_world.vault.policy != DEFAULT_POLICY


def test_no_canary_value_contains_another_so_a_match_names_one_field() -> None:
    values = canary_shipment().values
    forms = {name: raw_forms(name, value) for name, value in values.items()}

    for name, own in forms.items():
        for other, value in values.items():
            if other != name:
                assert not any(form.lower() in value.lower() for form in own), (name, other)


@pytest.mark.parametrize("exposure", [Exposure.HIDDEN, Exposure.MASKED], ids=str)
def test_the_check_fails_when_a_surface_shows_the_raw_value_the_policy_keeps_back(
    exposure: Exposure,
) -> None:
    surface, name = next(
        (surface, name)
        for surface in SURFACES
        if surface.slot is not None
        for name, rule in DEFAULT_POLICY.fields.items()
        if rule.exposure_for(surface.tier) is exposure
    )
    value = canary_shipment().values[name]
    leaking = Seen([f"{value} {masking.apply(DEFAULT_POLICY.fields[name].mask, value)}"])

    with pytest.raises(AssertionError, match="raw value appears"):
        check_field(DEFAULT_POLICY, surface, name, value, leaking)
