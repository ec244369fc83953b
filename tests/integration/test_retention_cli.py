"""`parcelvault retention run` and `parcelvault holds ...` against a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from parcelvault.entrypoints.cli import app
from parcelvault.services.tenants import Principal
from parcelvault.services.vault import Vault
from tests.conftest import Canaries
from tests.integration.test_retention import (
    Clock,
    Parcel,
    _all_rows,
    _deliver,
    _fields,
    _ship,
    shop,  # noqa: F401 (fixture)
)

LONG_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(days=200)


@pytest.fixture
def env(vault: Vault, key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Vault:
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", vault.settings.database_url)
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(key_dir))
    monkeypatch.chdir(tmp_path)
    return vault


@pytest.fixture
def any_vault(vault: Vault) -> Vault:
    """The shop fixture of the retention tests, on this module's SQLite vault."""
    return vault


@pytest.fixture
def old_parcels(env: Vault, shop: Principal, canaries: Canaries) -> list[Parcel]:  # noqa: F811
    env.clock = Clock(LONG_AGO)
    parcels = [_ship(env, shop, canaries, f"OLDPARCEL{n}") for n in range(3)]
    for parcel in parcels:
        _deliver(env, shop, parcel, LONG_AGO, canaries)
    return parcels


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_a_dry_run_prints_what_would_go_and_changes_nothing(
    env: Vault, old_parcels: list[Parcel]
) -> None:
    before = _all_rows(env)
    result = _cli("retention", "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run, nothing was changed" in result.output
    assert "3 shipments due to be looked at, would remove 30 values from 3 shipments" in (
        result.output
    )
    assert "recipient.email" in result.output
    assert "next due: nothing is scheduled" in result.output
    assert _all_rows(env) == before


def test_a_run_removes_due_values_and_names_the_held_shipments_and_their_cases(
    env: Vault, old_parcels: list[Parcel]
) -> None:
    placed = _cli("holds", "place", old_parcels[1].number, "--case", "CLAIM-77", "--by", "legal")
    assert placed.exit_code == 0, placed.output
    assert f"hold 1 placed on {old_parcels[1].number} for case CLAIM-77 by legal" in placed.output

    result = _cli("retention", "run")
    assert result.exit_code == 0, result.output
    assert "removed 20 values from 2 shipments" in result.output
    assert "skipped 1 shipments under legal hold" in result.output
    assert "CLAIM-77" in result.output
    assert old_parcels[1].number in result.output
    assert _fields(env, old_parcels[0]) == set()
    assert len(_fields(env, old_parcels[1])) == 10

    assert _cli("holds", "release", "1", "--by", "legal").exit_code == 0
    again = _cli("retention", "run")
    assert "removed 10 values from 1 shipments" in again.output
    assert _fields(env, old_parcels[1]) == set()
    assert "removed 0 values from 0 shipments" in _cli("retention", "run").output


def test_recheck_all_looks_at_every_shipment_again_even_when_none_is_due(
    env: Vault, old_parcels: list[Parcel]
) -> None:
    assert "removed 30 values from 3 shipments" in _cli("retention", "run").output
    assert "0 shipments due to be looked at" in _cli("retention", "run").output

    result = _cli("retention", "run", "--recheck-all")
    assert result.exit_code == 0, result.output
    assert "3 shipments due to be looked at, removed 0 values from 0 shipments" in result.output


def test_holds_list_shows_holds_in_force_and_with_all_the_released_ones(
    env: Vault, old_parcels: list[Parcel]
) -> None:
    assert "no holds in force" in _cli("holds", "list").output
    _cli("holds", "place", old_parcels[0].number, "--case", "CASE-A")
    _cli("holds", "place", old_parcels[2].number, "--case", "CASE-B", "--by", "counsel")
    listed = _cli("holds", "list")
    assert listed.exit_code == 0
    assert "CASE-A" in listed.output
    assert "CASE-B" in listed.output
    assert old_parcels[2].number in listed.output
    assert "counsel" in listed.output
    _cli("holds", "release", "1")
    assert "CASE-A" not in _cli("holds", "list").output
    everything = _cli("holds", "list", "--all")
    assert "CASE-A" in everything.output
    assert "in force" in everything.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("holds", "place", "NOSUCHNUMBER1", "--case", "C-1"), "TRACKING_NUMBER: no shipment"),
        (("holds", "place", "OLDPARCEL0", "--case", "Jane Doe"), "--case: 1-100 letters"),
        (("holds", "place", "OLDPARCEL0", "--case", "C-1", "--by", " "), "--by: 1-64"),
        (("holds", "release", "99"), "HOLD_ID: there is no hold 99"),
    ],
)
def test_bad_hold_commands_exit_1_naming_the_field(
    env: Vault, old_parcels: list[Parcel], args: tuple[str, ...], message: str
) -> None:
    result = _cli(*args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_placing_the_same_case_twice_or_releasing_twice_is_refused(
    env: Vault, old_parcels: list[Parcel]
) -> None:
    assert _cli("holds", "place", "OLDPARCEL0", "--case", "C-1").exit_code == 0
    twice = _cli("holds", "place", "OLDPARCEL0", "--case", "C-1")
    assert twice.exit_code == 1
    assert "already held for C-1" in twice.output
    assert _cli("holds", "release", "1").exit_code == 0
    released = _cli("holds", "release", "1")
    assert released.exit_code == 1
    assert "HOLD_ID: hold 1 was already released" in released.output


def test_retention_run_without_keys_says_to_run_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(tmp_path / "no-keys"))
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    result = _cli("retention", "run")
    assert result.exit_code == 1
    assert "parcelvault init" in result.output
