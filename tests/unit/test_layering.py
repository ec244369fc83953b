"""The pure packages import no framework, no database, no I/O and no environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "parcelvault"
PURE = [
    *sorted((SRC / "domain").glob("*.py")),
    *sorted((SRC / "privacy").glob("*.py")),
    SRC / "ledger" / "merkle.py",
]
FORBIDDEN = {
    "os",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic_settings",
    "httpx",
    "psycopg",
    "sqlite3",
    "alembic",
    "typer",
    "rich",
    "jinja2",
    "uvicorn",
    "socket",
    "subprocess",
    "parcelvault.adapters",
    "parcelvault.services",
    "parcelvault.entrypoints",
    "parcelvault.crypto",
    "parcelvault.settings",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(SRC)))
def test_a_pure_module_imports_no_framework_database_or_environment(path: Path) -> None:
    assert path.exists()
    bad = {
        name
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"
    assert "environ" not in path.read_text().replace("environment", "")
