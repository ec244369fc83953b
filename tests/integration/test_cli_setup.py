from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parcelvault.adapters.db import migrate
from parcelvault.adapters.db.engine import make_engine
from parcelvault.entrypoints.cli import app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PARCELVAULT_DATABASE_URL", f"sqlite:///{tmp_path / 'pv.db'}")
    monkeypatch.setenv("PARCELVAULT_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_init_writes_private_keys_and_the_schema(env: Path) -> None:
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    keys = sorted((env / "keys").glob("*.key"))
    assert [k.name for k in keys] == ["kek.key", "ledger-signer.key", "lookup.key", "session.key"]
    assert (env / "keys" / "subject-keys.db").exists()
    everything = list((env / "keys").iterdir())
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in everything)
    assert stat.S_IMODE((env / "keys").stat().st_mode) == 0o700
    assert f"schema at revision {migrate.head_revision(make_engine('sqlite://'))}" in result.output


def test_init_refuses_to_overwrite_existing_keys(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    before = (env / "keys" / "kek.key").read_bytes()
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 1
    assert "refusing to overwrite" in again.output
    assert (env / "keys" / "kek.key").read_bytes() == before


def test_init_with_exist_ok_keeps_the_keys_and_migrates(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    before = (env / "keys" / "kek.key").read_bytes()
    again = runner.invoke(app, ["init", "--exist-ok"])
    assert again.exit_code == 0, again.output
    assert "kept the existing keys" in again.output
    assert (env / "keys" / "kek.key").read_bytes() == before


def test_a_tenant_key_is_printed_once_and_only_its_hash_is_stored(env: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["init"])
    created = runner.invoke(app, ["tenants", "create", "shop-x"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("pv_")
    assert key.encode() not in (env / "pv.db").read_bytes()
    listed = runner.invoke(app, ["tenants", "list"])
    assert "shop-x" in listed.output
    assert key not in listed.output


def test_a_duplicate_or_malformed_tenant_name_is_refused_clearly(env: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["init"])
    runner.invoke(app, ["tenants", "create", "shop-x"])
    duplicate = runner.invoke(app, ["tenants", "create", "shop-x"])
    assert duplicate.exit_code == 1
    assert "exists already" in duplicate.output
    malformed = runner.invoke(app, ["tenants", "create", "Shop X!"])
    assert malformed.exit_code == 1
    assert "lower-case letters" in malformed.output


def test_an_unknown_scope_is_refused(env: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["init"])
    result = runner.invoke(app, ["tenants", "create", "shop-y", "--scope", "admin:all"])
    assert result.exit_code == 1
    assert "choose from" in result.output


def test_serve_refuses_to_start_without_keys(env: Path) -> None:
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "run `parcelvault init` first" in result.output


def test_policy_check_accepts_the_shipped_policy(env: Path) -> None:
    result = CliRunner().invoke(app, ["policy", "check"])
    assert result.exit_code == 0, result.output
    assert "valid; 11 personal fields" in result.output


def test_policy_check_names_the_file_line_and_key_of_a_mistake(env: Path) -> None:
    from parcelvault.privacy.policy import default_policy_text

    broken = env / "mine.toml"
    broken.write_text(
        default_policy_text().replace('category = "contact"', 'category = "gossip"', 1)
    )
    line = broken.read_text().splitlines().index('category = "gossip"') + 1
    result = CliRunner().invoke(app, ["policy", "check", str(broken)])
    assert result.exit_code == 1
    assert f"mine.toml:{line}: fields.recipient.email.category" in result.output


def test_policy_check_warns_about_a_public_phone_number(env: Path) -> None:
    from parcelvault.privacy.policy import default_policy_text

    text = default_policy_text()
    start = text.index('[fields."recipient.phone"]')
    head, tail = text[:start], text[start:]
    risky = env / "risky.toml"
    risky.write_text(head + tail.replace('public = "hidden"', 'public = "full"', 1))
    result = CliRunner().invoke(app, ["policy", "check", str(risky)])
    assert result.exit_code == 0, result.output
    assert "warning: fields.recipient.phone: anyone with a tracking number" in result.output
