"""Unit and property tests for parcelvault.ledger.merkle against a naive RFC 6962 model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parcelvault.ledger.merkle import (
    EMPTY_ROOT,
    InMemoryTree,
    ProofError,
    consistency_proof,
    consistency_proof_from_leaves,
    consistency_proof_nodes,
    hashes_created_by_append,
    inclusion_proof,
    inclusion_proof_from_leaves,
    inclusion_proof_nodes,
    interior_hashes_created_by_appends,
    leaf_hash,
    node_hash,
    nodes_created_by_append,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    root_from_nodes,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300

# --------------------------------------------------------------------------- reference model
# RFC 6962 §2.1 written out as recursively as the RFC states it.


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf *data* (not hashes)."""
    n = len(leaves)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + leaves[0])
    k = _k(n)
    return _sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, leaves, True)


# The same recursions, recording only the shape of the proof: for each element, bottom-up,
# whether it is the sibling on the Left or on the Right, and "*" for the old subtree that a
# consistency proof starts from. Verification cannot tell apart sizes with equal shapes.


def ref_path_shape(m: int, n: int) -> str:
    if n == 1:
        return ""
    k = _k(n)
    return ref_path_shape(m, k) + "R" if m < k else ref_path_shape(m - k, n - k) + "L"


def ref_proof_shape(m: int, n: int, b: bool = True) -> str:
    if m == n:
        return "" if b else "*"
    k = _k(n)
    return ref_proof_shape(m, k, b) + "R" if m <= k else ref_proof_shape(m - k, n - k, False) + "L"


# --------------------------------------------------------------------------- fixtures


def leaves_of(size: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(size)]


def hashes_of(size: int) -> list[bytes]:
    return [leaf_hash(leaf) for leaf in leaves_of(size)]


_TREE = InMemoryTree(hashes_of(MAX_SIZE))


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


sizes = st.integers(min_value=1, max_value=MAX_SIZE)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(sizes)
    return draw(st.integers(min_value=1, max_value=new)), new


# --------------------------------------------------------------------------- hashing


def test_leaf_and_node_hashes_use_the_rfc_6962_domain_prefixes() -> None:
    assert leaf_hash(b"abc") == _sha256(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == _sha256(b"\x01" + b"L" * 32 + b"R" * 32)


def test_the_empty_tree_hashes_to_sha256_of_nothing() -> None:
    assert root_from_leaf_hashes([]) == EMPTY_ROOT == _sha256(b"")
    assert root_from_nodes(0, _TREE.get_node) == EMPTY_ROOT


# Roots of the first n leaves of the RFC 6962 test vector set (certificate-transparency's
# merkle_tree_test), whose leaves are the ones listed in ../shared/conformance/README.md.
RFC6962_LEAVES = [
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
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_rfc_6962_test_leaves_match_the_published_values(size: int) -> None:
    hashes = [leaf_hash(leaf) for leaf in RFC6962_LEAVES[:size]]
    expected = bytes.fromhex(RFC6962_ROOTS[size - 1])
    assert root_from_leaf_hashes(hashes) == expected
    assert ref_mth(RFC6962_LEAVES[:size]) == expected


@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_the_streaming_root_equals_the_recursive_reference(size: int) -> None:
    assert root_from_leaf_hashes(hashes_of(size)) == ref_mth(leaves_of(size))


@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_the_root_from_complete_subtree_nodes_equals_the_root_from_leaves(size: int) -> None:
    expected = root_from_leaf_hashes(hashes_of(size))
    assert root_from_nodes(size, _TREE.get_node) == expected
    assert _TREE.root(size) == expected


def test_the_root_of_a_million_leaves_is_computed_without_recursion() -> None:
    root = root_from_leaf_hashes(leaf_hash(i.to_bytes(4, "big")) for i in range(1_000_000))
    assert len(root) == 32


def test_a_leaf_hash_of_the_wrong_length_is_refused_when_computing_a_root() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        root_from_leaf_hashes([b"short"])


# --------------------------------------------------------------------------- addressing


def test_root_nodes_follow_the_binary_decomposition_of_the_size() -> None:
    assert root_nodes(0) == []
    assert root_nodes(1) == [(0, 0)]
    assert root_nodes(8) == [(3, 0)]
    assert root_nodes(13) == [(3, 0), (2, 2), (0, 12)]


def test_an_append_creates_the_leaf_and_one_parent_per_completed_subtree() -> None:
    assert nodes_created_by_append(0) == [(0, 0)]
    assert nodes_created_by_append(1) == [(0, 1), (1, 0)]
    assert nodes_created_by_append(2) == [(0, 2)]
    assert nodes_created_by_append(7) == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert nodes_created_by_append(11) == [(0, 11), (1, 5), (2, 2)]


def test_every_complete_subtree_is_created_exactly_once() -> None:
    created = [node for index in range(64) for node in nodes_created_by_append(index)]
    expected = {(level, i) for level in range(7) for i in range(64 >> level)}
    assert len(created) == len(set(created))
    assert set(created) == expected


def test_an_append_reads_only_left_siblings_that_already_exist() -> None:
    reads: list[tuple[int, int]] = []

    def get_node(level: int, index: int) -> bytes:
        reads.append((level, index))
        return _TREE.get_node(level, index)

    new_leaf = _TREE.get_node(0, 7)
    created = hashes_created_by_append(7, new_leaf, get_node)
    assert reads == [(0, 6), (1, 2), (2, 0)]
    assert created == [(node, _TREE.get_node(*node)) for node in nodes_created_by_append(7)]


@given(two_sizes())
def test_a_batch_of_appends_creates_the_same_interior_nodes_as_one_append_at_a_time(
    case: tuple[int, int],
) -> None:
    start, end = case[0] - 1, case[1]  # from any size, including the empty tree
    reads: list[tuple[int, int]] = []

    def get_node(level: int, index: int) -> bytes:
        reads.append((level, index))
        return _TREE.get_node(level, index)

    new_leaves = [_TREE.get_node(0, i) for i in range(start, end)]
    created = interior_hashes_created_by_appends(start, new_leaves, get_node)
    one_by_one = [
        (node, _TREE.get_node(*node))
        for index in range(start, end)
        for node in nodes_created_by_append(index)[1:]
    ]
    assert sorted(created) == sorted(one_by_one)
    assert created == sorted(created)  # level by level, in index order
    assert set(reads) <= set(root_nodes(start))


def test_a_batch_of_appends_refuses_a_leaf_hash_of_the_wrong_length() -> None:
    with pytest.raises(ProofError):
        interior_hashes_created_by_appends(0, [b"\x00" * 32, b"short"], _TREE.get_node)


@given(size_and_index())
def test_an_inclusion_proof_reads_exactly_the_listed_nodes(case: tuple[int, int]) -> None:
    size, index = case
    reads: list[tuple[int, int]] = []

    def get_node(level: int, i: int) -> bytes:
        reads.append((level, i))
        return _TREE.get_node(level, i)

    inclusion_proof(index, size, get_node)
    assert reads == inclusion_proof_nodes(index, size)
    assert all((i + 1) << level <= size for level, i in reads)


@given(two_sizes())
def test_a_consistency_proof_reads_exactly_the_listed_nodes(case: tuple[int, int]) -> None:
    old, new = case
    fetched = {node: _TREE.get_node(*node) for node in consistency_proof_nodes(old, new)}
    proof = consistency_proof(old, new, lambda level, index: fetched[level, index])
    assert proof == _TREE.consistency_proof(old, new)
    assert all((i + 1) << level <= new for level, i in fetched)


def test_the_in_memory_tree_refuses_nodes_it_does_not_have() -> None:
    tree = InMemoryTree(hashes_of(3))
    with pytest.raises(LookupError):
        tree.get_node(1, 1)
    with pytest.raises(LookupError):
        tree.get_node(0, -1)
    with pytest.raises(ValueError, match="outside"):
        tree.root(4)


# --------------------------------------------------------------------------- proof generation


@given(size_and_index())
def test_inclusion_proofs_equal_the_reference_audit_path(case: tuple[int, int]) -> None:
    size, index = case
    assert _TREE.inclusion_proof(index, size) == ref_path(index, leaves_of(size))


@given(two_sizes())
def test_consistency_proofs_equal_the_reference_proof(case: tuple[int, int]) -> None:
    old, new = case
    assert _TREE.consistency_proof(old, new) == ref_proof(old, leaves_of(new))


def test_the_list_based_helpers_agree_with_the_tree() -> None:
    hashes = hashes_of(21)
    assert inclusion_proof_from_leaves(5, hashes) == _TREE.inclusion_proof(5, 21)
    assert consistency_proof_from_leaves(13, hashes) == _TREE.consistency_proof(13, 21)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (3, 3), (-1, 4)])
def test_an_inclusion_proof_for_a_leaf_outside_the_tree_cannot_be_generated(
    index: int, size: int
) -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(index, size, _TREE.get_node)


@pytest.mark.parametrize(("old", "new"), [(0, 0), (0, 5), (5, 4)])
def test_a_consistency_proof_from_empty_or_larger_tree_cannot_be_generated(
    old: int, new: int
) -> None:
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(old, new, _TREE.get_node)


def test_a_consistency_proof_between_equal_sizes_is_empty() -> None:
    assert _TREE.consistency_proof(17, 17) == []


# --------------------------------------------------------------------------- inclusion checks


@settings(max_examples=200)
@given(size_and_index())
def test_every_generated_inclusion_proof_verifies(case: tuple[int, int]) -> None:
    size, index = case
    proof = _TREE.inclusion_proof(index, size)
    verify_inclusion(_TREE.get_node(0, index), index, size, proof, _TREE.root(size))
    assert root_from_inclusion_proof(_TREE.get_node(0, index), index, size, proof) == (
        _TREE.root(size)
    )


def test_every_inclusion_proof_of_small_trees_verifies() -> None:
    for size in range(1, 40):
        root = _TREE.root(size)
        for index in range(size):
            verify_inclusion(
                _TREE.get_node(0, index), index, size, _TREE.inclusion_proof(index, size), root
            )


@given(size_and_index(), st.data())
def test_a_proof_with_one_flipped_byte_is_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    size, index = case
    proof = _TREE.inclusion_proof(index, size)
    if not proof:
        return
    element = data.draw(st.integers(0, len(proof) - 1))
    position = data.draw(st.integers(0, 31))
    proof[element] = flip(proof[element], position)
    with pytest.raises(ProofError):
        verify_inclusion(_TREE.get_node(0, index), index, size, proof, _TREE.root(size))


@given(size_and_index(), st.integers(0, 31))
def test_an_inclusion_proof_for_a_different_leaf_hash_is_rejected(
    case: tuple[int, int], position: int
) -> None:
    size, index = case
    proof = _TREE.inclusion_proof(index, size)
    wrong_leaf = flip(_TREE.get_node(0, index), position)
    with pytest.raises(ProofError, match="expected root"):
        verify_inclusion(wrong_leaf, index, size, proof, _TREE.root(size))


@given(size_and_index(), st.data())
def test_an_inclusion_proof_checked_at_another_index_is_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    size, index = case
    other = data.draw(st.integers(0, size + 4).filter(lambda i: i != index))
    proof = _TREE.inclusion_proof(index, size)
    with pytest.raises(ProofError):
        verify_inclusion(_TREE.get_node(0, index), other, size, proof, _TREE.root(size))


@given(size_and_index(), st.data())
def test_an_inclusion_proof_checked_against_another_size_fails_unless_the_path_has_the_same_shape(
    case: tuple[int, int], data: st.DataObject
) -> None:
    size, index = case
    other = data.draw(st.integers(0, MAX_SIZE).filter(lambda n: n != size))
    proof = _TREE.inclusion_proof(index, size)
    args = (_TREE.get_node(0, index), index, other, proof, _TREE.root(size))
    if index < other and ref_path_shape(index, other) == ref_path_shape(index, size):
        verify_inclusion(*args)
    else:
        with pytest.raises(ProofError):
            verify_inclusion(*args)


def test_sizes_that_share_an_audit_path_shape_are_bound_only_by_the_signed_root() -> None:
    # Leaf 0 of 129 and of 130 leaves both have seven right siblings: the size is only
    # meaningful together with the root it was signed with (RFC 9162 §2.1.3.2 by design).
    proof = _TREE.inclusion_proof(0, 129)
    verify_inclusion(_TREE.get_node(0, 0), 0, 130, proof, _TREE.root(129))
    with pytest.raises(ProofError):
        verify_inclusion(_TREE.get_node(0, 0), 0, 130, proof, _TREE.root(130))
    consistency = _TREE.consistency_proof(1, 33)
    verify_consistency(1, 34, consistency, _TREE.root(1), _TREE.root(33))
    with pytest.raises(ProofError):
        verify_consistency(1, 34, consistency, _TREE.root(1), _TREE.root(34))


@given(size_and_index(), st.data())
def test_a_truncated_or_extended_inclusion_proof_is_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    size, index = case
    proof = _TREE.inclusion_proof(index, size)
    leaf, root = _TREE.get_node(0, index), _TREE.root(size)
    if proof:
        cut = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, proof[:cut], root)
    extra = data.draw(st.binary(min_size=32, max_size=32))
    where = data.draw(st.integers(0, len(proof)))
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, [*proof[:where], extra, *proof[where:]], root)


def test_an_inclusion_proof_against_the_root_of_another_size_is_rejected() -> None:
    proof = _TREE.inclusion_proof(3, 10)
    with pytest.raises(ProofError, match="expected root"):
        verify_inclusion(_TREE.get_node(0, 3), 3, 10, proof, _TREE.root(11))


@pytest.mark.parametrize("length", [0, 31, 33])
def test_a_leaf_hash_that_is_not_32_bytes_is_rejected(length: int) -> None:
    with pytest.raises(ProofError, match="leaf hash must be 32 bytes"):
        verify_inclusion(b"\x00" * length, 0, 1, [], b"\x00" * length)


def test_a_proof_element_that_is_not_32_bytes_is_rejected() -> None:
    proof = _TREE.inclusion_proof(0, 2)
    with pytest.raises(ProofError, match="proof element 0"):
        verify_inclusion(_TREE.get_node(0, 0), 0, 2, [proof[0] + b"\x00"], _TREE.root(2))


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (5, 3), (-1, 3)])
def test_an_index_outside_the_tree_is_rejected(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(_TREE.get_node(0, 0), index, size, [], _TREE.root(1))


def test_a_single_leaf_tree_proves_its_leaf_with_an_empty_proof() -> None:
    verify_inclusion(_TREE.get_node(0, 0), 0, 1, [], _TREE.root(1))


# --------------------------------------------------------------------------- consistency checks


@settings(max_examples=200)
@given(two_sizes())
def test_every_generated_consistency_proof_verifies(case: tuple[int, int]) -> None:
    old, new = case
    proof = _TREE.consistency_proof(old, new)
    verify_consistency(old, new, proof, _TREE.root(old), _TREE.root(new))


def test_every_consistency_proof_between_small_trees_verifies() -> None:
    for new in range(1, 40):
        for old in range(1, new + 1):
            proof = _TREE.consistency_proof(old, new)
            verify_consistency(old, new, proof, _TREE.root(old), _TREE.root(new))


@given(two_sizes(), st.data())
def test_a_consistency_proof_with_one_flipped_byte_is_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    old, new = case
    proof = _TREE.consistency_proof(old, new)
    if not proof:
        return
    element = data.draw(st.integers(0, len(proof) - 1))
    proof[element] = flip(proof[element], data.draw(st.integers(0, 31)))
    with pytest.raises(ProofError):
        verify_consistency(old, new, proof, _TREE.root(old), _TREE.root(new))


def _consistency_shape(old: int, new: int) -> str | None:
    return ref_proof_shape(old, new) if 0 < old <= new else None


@given(two_sizes(), st.data())
def test_a_consistency_proof_checked_against_other_sizes_fails_unless_it_has_the_same_shape(
    case: tuple[int, int], data: st.DataObject
) -> None:
    old, new = case
    proof = _TREE.consistency_proof(old, new)
    roots = _TREE.root(old), _TREE.root(new)
    other_old = data.draw(st.integers(0, MAX_SIZE).filter(lambda n: n != old))
    other_new = data.draw(st.integers(0, MAX_SIZE).filter(lambda n: n != new))
    for size1, size2 in ((other_old, new), (old, other_new)):
        if _consistency_shape(size1, size2) == _consistency_shape(old, new):
            verify_consistency(size1, size2, proof, *roots)
        else:
            with pytest.raises(ProofError):
                verify_consistency(size1, size2, proof, *roots)


@given(two_sizes(), st.data())
def test_a_truncated_or_extended_consistency_proof_is_rejected(
    case: tuple[int, int], data: st.DataObject
) -> None:
    old, new = case
    proof = _TREE.consistency_proof(old, new)
    root_old, root_new = _TREE.root(old), _TREE.root(new)
    if proof:
        cut = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            verify_consistency(old, new, proof[:cut], root_old, root_new)
    extra = data.draw(st.binary(min_size=32, max_size=32))
    where = data.draw(st.integers(0, len(proof)))
    with pytest.raises(ProofError):
        verify_consistency(old, new, [*proof[:where], extra, *proof[where:]], root_old, root_new)


@given(two_sizes().filter(lambda c: c[0] < c[1]), st.integers(0, 31))
def test_a_consistency_proof_with_a_wrong_root_is_rejected(
    case: tuple[int, int], position: int
) -> None:
    old, new = case
    proof = _TREE.consistency_proof(old, new)
    root_old, root_new = _TREE.root(old), _TREE.root(new)
    # When old is a power of two, root1 is itself the first path element, so a wrong old
    # root shows up as a wrong new root.
    with pytest.raises(ProofError, match="root"):
        verify_consistency(old, new, proof, flip(root_old, position), root_new)
    with pytest.raises(ProofError, match="new root"):
        verify_consistency(old, new, proof, root_old, flip(root_new, position))


def test_a_forked_tree_is_not_consistent_with_the_original() -> None:
    forked = InMemoryTree(hashes_of(10))
    forked.append(leaf_hash(b"something else"))
    proof = forked.consistency_proof(10, 11)
    with pytest.raises(ProofError):
        verify_consistency(10, 11, proof, _TREE.root(10), _TREE.root(11))
    verify_consistency(10, 11, proof, _TREE.root(10), forked.root())


@pytest.mark.parametrize("new", [0, 1, 5])
def test_a_consistency_proof_from_the_empty_tree_is_always_rejected(new: int) -> None:
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, new, [], EMPTY_ROOT, _TREE.root(new))


def test_equal_sizes_need_an_empty_proof_and_equal_roots() -> None:
    root = _TREE.root(6)
    verify_consistency(6, 6, [], root, root)
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(6, 6, [root], root, root)
    with pytest.raises(ProofError, match="roots differ"):
        verify_consistency(6, 6, [], root, _TREE.root(5))


def test_a_shrinking_tree_is_rejected() -> None:
    with pytest.raises(ProofError, match="smaller"):
        verify_consistency(6, 5, [], _TREE.root(6), _TREE.root(5))


def test_an_empty_proof_between_different_sizes_is_rejected() -> None:
    with pytest.raises(ProofError, match="empty"):
        verify_consistency(4, 8, [], _TREE.root(4), _TREE.root(8))


def test_a_proof_with_an_element_too_many_is_reported_as_too_long() -> None:
    extra = leaf_hash(b"extra")
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(_TREE.get_node(0, 2), 2, 7, [*_TREE.inclusion_proof(2, 7), extra], b"")
    with pytest.raises(ProofError, match="too long"):
        verify_consistency(3, 7, [*_TREE.consistency_proof(3, 7), extra], b"", b"")


def test_a_proof_with_an_element_too_few_is_reported_as_too_short() -> None:
    with pytest.raises(ProofError, match="too short"):
        verify_inclusion(_TREE.get_node(0, 2), 2, 7, _TREE.inclusion_proof(2, 7)[:-1], b"")
    with pytest.raises(ProofError, match="too short"):
        verify_consistency(3, 7, _TREE.consistency_proof(3, 7)[:-1], b"", b"")
