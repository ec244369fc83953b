"""RFC 6962 / RFC 9162 proof vectors from transparency-dev/merkle, read in place.

The data lives outside the project in ../shared/conformance/rfc6962 (see
../shared/conformance/README.md); it is walked, never copied or hard-coded.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from parcelvault.ledger.merkle import (
    ProofError,
    consistency_proof_from_leaves,
    inclusion_proof_from_leaves,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "rfc6962"

# The leaves the vectors were generated from, as listed in ../shared/conformance/README.md.
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAF_HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def _vector_paths(kind: str) -> list[Path]:
    folder = VECTORS / kind
    return sorted(folder.rglob("*.json")) if folder.is_dir() else []


def _params(kind: str, paths: list[Path]) -> list[Any]:
    if not paths:
        # One failing case rather than an empty parameter set, which pytest would skip.
        return [pytest.param(VECTORS / kind, id=f"{kind}-vectors-missing")]
    return [pytest.param(path, id=path.relative_to(VECTORS).as_posix()) for path in paths]


def _happy_paths(kind: str) -> list[Path]:
    # inclusion/<n>/ and consistency/<n>/ are built from the README's leaves;
    # "additional" and "single-entry" use made-up hashes.
    return [
        path
        for path in _vector_paths(kind)
        if path.name == "happy-path.json" and path.parent.name.isdigit()
    ]


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        pytest.fail(
            f"RFC 6962 conformance vectors not found under {path}; the shared conformance "
            "data (../shared/conformance/rfc6962 next to the project) must be present"
        )
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _proof(data: dict[str, Any]) -> list[bytes]:
    return [_b64(item) for item in data["proof"] or []]


def _raised(check: Any) -> ProofError | None:
    try:
        check()
    except ProofError as error:
        return error
    return None


@pytest.mark.parametrize("path", _params("inclusion", _vector_paths("inclusion")))
def test_inclusion_vector_is_accepted_exactly_when_it_should_be(path: Path) -> None:
    data = _load(path)
    error = _raised(
        lambda: verify_inclusion(
            _b64(data["leafHash"]),
            data["leafIdx"],
            data["treeSize"],
            _proof(data),
            _b64(data["root"]),
        )
    )
    if data["wantErr"]:
        assert error is not None, f"accepted a bad proof: {data['desc']}"
    else:
        assert error is None, f"rejected a good proof ({data['desc']}): {error}"


@pytest.mark.parametrize("path", _params("consistency", _vector_paths("consistency")))
def test_consistency_vector_is_accepted_exactly_when_it_should_be(path: Path) -> None:
    data = _load(path)
    error = _raised(
        lambda: verify_consistency(
            data["size1"],
            data["size2"],
            _proof(data),
            _b64(data["root1"]),
            _b64(data["root2"]),
        )
    )
    if data["wantErr"]:
        assert error is not None, f"accepted a bad proof: {data['desc']}"
    else:
        assert error is None, f"rejected a good proof ({data['desc']}): {error}"


@pytest.mark.parametrize("path", _params("inclusion", _happy_paths("inclusion")))
def test_our_tree_over_the_readme_leaves_reproduces_the_inclusion_happy_path(path: Path) -> None:
    data = _load(path)
    index, size = data["leafIdx"], data["treeSize"]
    assert LEAF_HASHES[index] == _b64(data["leafHash"])
    assert root_from_leaf_hashes(LEAF_HASHES[:size]) == _b64(data["root"])
    assert inclusion_proof_from_leaves(index, LEAF_HASHES[:size]) == _proof(data)


@pytest.mark.parametrize("path", _params("consistency", _happy_paths("consistency")))
def test_our_tree_over_the_readme_leaves_reproduces_the_consistency_happy_path(
    path: Path,
) -> None:
    data = _load(path)
    size1, size2 = data["size1"], data["size2"]
    assert root_from_leaf_hashes(LEAF_HASHES[:size1]) == _b64(data["root1"])
    assert root_from_leaf_hashes(LEAF_HASHES[:size2]) == _b64(data["root2"])
    assert consistency_proof_from_leaves(size1, LEAF_HASHES[:size2]) == _proof(data)


def test_the_vectors_cover_both_outcomes() -> None:
    outcomes = {
        _load(path)["wantErr"]
        for kind in ("inclusion", "consistency")
        for path in _vector_paths(kind)
    }
    assert outcomes == {True, False}, f"expected good and bad vectors under {VECTORS}"
