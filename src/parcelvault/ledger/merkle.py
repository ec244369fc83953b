"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.

Standard library only. All hashes are SHA-256 (32 bytes).

Node addressing
---------------
Stored nodes are *complete* (perfect) subtrees, addressed as ``(level, index)``:

* level 0 holds the leaf hashes, ``(0, i)`` is the hash of leaf ``i``;
* node ``(l, i)`` covers the leaves ``[i * 2**l, (i + 1) * 2**l)`` and, for ``l > 0``,
  equals ``node_hash((l - 1, 2 * i), (l - 1, 2 * i + 1))``.

A node ``(l, i)`` exists in a tree of size ``n`` once ``(i + 1) * 2**l <= n`` and never
changes afterwards, so a store can write each one exactly once (see
:func:`nodes_created_by_append`). Everything else - the root of a tree whose size is not a
power of two, and proof elements on the right edge of such a tree - is computed from the
perfect subtrees given by the binary decomposition of the covered leaf range. Functions
that need the tree take a ``get_node(level, index) -> bytes`` callback; the ``*_nodes``
functions list the coordinates that callback will be asked for, so a storage layer can
fetch them all in one query and answer from a dict:
``inclusion_proof(i, n, lambda level, index: fetched[level, index])``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "GetNode",
    "InMemoryTree",
    "Node",
    "ProofError",
    "consistency_proof",
    "consistency_proof_from_leaves",
    "consistency_proof_nodes",
    "hashes_created_by_append",
    "inclusion_proof",
    "inclusion_proof_from_leaves",
    "inclusion_proof_nodes",
    "interior_hashes_created_by_appends",
    "leaf_hash",
    "node_hash",
    "nodes_created_by_append",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "root_from_nodes",
    "root_nodes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]
"""A complete subtree, as ``(level, index)``; see the module docstring."""

GetNode = Callable[[int, int], bytes]
"""Returns the hash of the complete subtree ``(level, index)``."""

_Range = tuple[int, int]


class ProofError(ValueError):
    """A Merkle proof failed verification or its inputs are malformed."""


# --------------------------------------------------------------------------- hashing


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """Merkle Tree Hash (MTH) of the given leaf hashes, in one pass with O(log n) memory.

    The empty tree hashes to SHA-256 of the empty string.
    """
    stack: list[bytes] = []
    for position, item in enumerate(hashes):
        _require_hash(item, "leaf hash")
        stack.append(item)
        completed = position + 1  # one merge per trailing zero bit of the new size
        while completed & 1 == 0:
            right = stack.pop()
            stack.append(node_hash(stack.pop(), right))
            completed >>= 1
    if not stack:
        return EMPTY_ROOT
    return _fold_right(stack)


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash perfect subtrees of strictly decreasing size into the MTH of their union."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _require_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


# --------------------------------------------------------------------------- addressing


def _largest_power_of_two_below(n: int) -> int:
    """The split point k of RFC 6962 §2.1: the largest power of two strictly below n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_nodes(start: int, end: int) -> list[Node]:
    """Perfect subtrees, largest first, whose concatenation is the leaf range [start, end).

    Only valid for the ranges RFC 6962 hashes as one subtree: ``start`` is a multiple of
    a power of two that is at least ``end - start``.
    """
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def _range_hash(start: int, end: int, get_node: GetNode) -> bytes:
    return _fold_right([get_node(level, index) for level, index in _range_nodes(start, end)])


def root_nodes(size: int) -> list[Node]:
    """The perfect subtrees (largest first) whose hashes make up the root of tree ``size``."""
    _require_non_negative(size, "tree size")
    return _range_nodes(0, size)


def root_from_nodes(size: int, get_node: GetNode) -> bytes:
    """Root of the tree of ``size`` leaves, from its :func:`root_nodes`."""
    nodes = root_nodes(size)
    if not nodes:
        return EMPTY_ROOT
    return _fold_right([get_node(level, index) for level, index in nodes])


def nodes_created_by_append(index: int) -> list[Node]:
    """Complete subtrees that appending leaf ``index`` (tree size ``index`` -> ``index + 1``)
    completes, bottom-up: the leaf ``(0, index)`` and one parent per trailing one bit."""
    _require_non_negative(index, "leaf index")
    nodes: list[Node] = [(0, index)]
    level, size = 0, index + 1
    while size & 1 == 0:
        level += 1
        size >>= 1
        nodes.append((level, index >> level))
    return nodes


def hashes_created_by_append(
    index: int, new_leaf_hash: bytes, get_node: GetNode
) -> list[tuple[Node, bytes]]:
    """Hashes of :func:`nodes_created_by_append`; ``get_node`` is asked for the left
    siblings ``(l - 1, 2 * i)``, which already exist in the tree of size ``index``."""
    _require_hash(new_leaf_hash, "leaf hash")
    created = nodes_created_by_append(index)
    current = new_leaf_hash
    result: list[tuple[Node, bytes]] = [(created[0], current)]
    for level, node_index in created[1:]:
        current = node_hash(get_node(level - 1, 2 * node_index), current)
        result.append(((level, node_index), current))
    return result


def interior_hashes_created_by_appends(
    start: int, new_leaf_hashes: Sequence[bytes], get_node: GetNode
) -> list[tuple[Node, bytes]]:
    """Every interior node (level >= 1) that appending ``new_leaf_hashes`` to the tree of
    ``start`` leaves completes, level by level and in index order within a level.

    One pass per level pairs the new nodes of that level; a level whose first new node
    is a right child takes its left sibling from ``get_node``, which is asked only for
    the old tree's :func:`root_nodes`. The same hashes as calling
    :func:`hashes_created_by_append` once per leaf, without the per-leaf bookkeeping.
    """
    _require_non_negative(start, "tree size")
    for item in new_leaf_hashes:
        _require_hash(item, "leaf hash")
    sha256 = hashlib.sha256
    created: list[tuple[Node, bytes]] = []
    level, first, row = 0, start, list(new_leaf_hashes)
    while row:
        if first & 1:  # the row starts with a right child: fetch its left sibling
            first -= 1
            row = [get_node(level, first), *row]
        pairs = len(row) // 2
        if not pairs:
            break
        row = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(row[0 : 2 * pairs : 2], row[1 : 2 * pairs : 2], strict=True)
        ]
        level += 1
        first >>= 1
        created.extend(((level, first + offset), value) for offset, value in enumerate(row))
    return created


def _require_non_negative(value: int, what: str) -> None:
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")


# --------------------------------------------------------------------------- proof generation


def _inclusion_ranges(index: int, size: int) -> list[_Range]:
    """Leaf ranges of the PATH(index, D[0:size]) elements of RFC 9162 §2.1.3.1, bottom-up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[_Range] = []
    low, high = 0, size
    while high - low > 1:
        split = low + _largest_power_of_two_below(high - low)
        if index < split:
            ranges.append((split, high))
            high = split
        else:
            ranges.append((low, split))
            low = split
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[_Range]:
    """Leaf ranges of the PROOF(old_size, D[0:new_size]) elements of RFC 9162 §2.1.4.1."""
    if not 0 < old_size <= new_size:
        raise ValueError(
            f"no consistency proof from size {old_size} to size {new_size} "
            "(need 0 < old size <= new size)"
        )
    ranges: list[_Range] = []
    low, high = 0, new_size
    whole_subtree = True  # the SUBPROOF flag b: are we still on the left edge?
    while old_size != high:
        split = low + _largest_power_of_two_below(high - low)
        if old_size <= split:
            ranges.append((split, high))
            high = split
        else:
            ranges.append((low, split))
            low = split
            whole_subtree = False
    if not whole_subtree:
        ranges.append((low, high))
    ranges.reverse()
    return ranges


def _flatten(ranges: Iterable[_Range]) -> list[Node]:
    return [node for start, end in ranges for node in _range_nodes(start, end)]


def inclusion_proof_nodes(index: int, size: int) -> list[Node]:
    """Every node :func:`inclusion_proof` reads, for fetching them in one query."""
    return _flatten(_inclusion_ranges(index, size))


def consistency_proof_nodes(old_size: int, new_size: int) -> list[Node]:
    """Every node :func:`consistency_proof` reads, for fetching them in one query."""
    return _flatten(_consistency_ranges(old_size, new_size))


def inclusion_proof(index: int, size: int, get_node: GetNode) -> list[bytes]:
    """Audit path for leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1)."""
    return [_range_hash(start, end, get_node) for start, end in _inclusion_ranges(index, size)]


def consistency_proof(old_size: int, new_size: int, get_node: GetNode) -> list[bytes]:
    """Consistency proof from tree size ``old_size`` to ``new_size`` (RFC 9162 §2.1.4.1).

    Empty when the sizes are equal; a proof from the empty tree is meaningless and
    rejected with ``ValueError``, as :func:`verify_consistency` would reject it too.
    """
    ranges = _consistency_ranges(old_size, new_size)
    return [_range_hash(start, end, get_node) for start, end in ranges]


# --------------------------------------------------------------------------- in memory


class InMemoryTree:
    """Keeps every complete subtree of a growing tree in lists, one per level."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = []
        for item in leaf_hashes:
            self.append(item)

    @property
    def size(self) -> int:
        return len(self._levels[0]) if self._levels else 0

    def append(self, new_leaf_hash: bytes) -> None:
        for (level, index), value in hashes_created_by_append(
            self.size, new_leaf_hash, self.get_node
        ):
            if level == len(self._levels):
                self._levels.append([])
            assert index == len(self._levels[level])
            self._levels[level].append(value)

    def get_node(self, level: int, index: int) -> bytes:
        if not (0 <= level < len(self._levels) and 0 <= index < len(self._levels[level])):
            raise LookupError(f"no complete subtree ({level}, {index}) in a tree of {self.size}")
        return self._levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return root_from_nodes(self._size_or_current(size), self.get_node)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self._size_or_current(size), self.get_node)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof(old_size, self._size_or_current(new_size), self.get_node)

    def _size_or_current(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size


def inclusion_proof_from_leaves(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Inclusion proof for ``leaf_hashes[index]`` in the tree of all ``leaf_hashes``."""
    return InMemoryTree(leaf_hashes).inclusion_proof(index)


def consistency_proof_from_leaves(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Consistency proof from ``leaf_hashes[:old_size]`` to all of ``leaf_hashes``."""
    return InMemoryTree(leaf_hashes).consistency_proof(old_size)


# --------------------------------------------------------------------------- verification


def _shift_until_odd_or_zero(fn: int, sn: int) -> tuple[int, int]:
    while fn & 1 == 0 and fn != 0:
        fn >>= 1
        sn >>= 1
    return fn, sn


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Root implied by an inclusion proof: RFC 9162 §2.1.3.2 steps 1-5, minus the final
    comparison. Raises ProofError if the proof cannot belong to a tree of ``size``."""
    if index < 0 or size < 0:
        raise ProofError(f"negative leaf index {index} or tree size {size}")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _require_hash(leaf, "leaf hash")
    fn, sn = index, size - 1
    result = leaf
    for position, element in enumerate(proof):
        _require_hash(element, f"proof element {position}")
        if sn == 0:
            raise ProofError(f"inclusion proof is too long: {len(proof)} elements")
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            fn, sn = _shift_until_odd_or_zero(fn, sn)
        else:
            result = node_hash(result, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short: {len(proof)} elements")
    return result


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf *hash*) is at ``index`` in the tree of ``size`` with
    ``root`` (RFC 9162 §2.1.3.2). Raises ProofError on any failure."""
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if not hmac.compare_digest(computed, root):
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of the tree of ``size2``
    with ``root2`` (RFC 9162 §2.1.4.2). Raises ProofError on any failure.

    A proof from size 0 is always rejected, even 0 -> 0: it proves nothing. Equal sizes
    need an empty proof and equal roots.
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"negative tree size {size1} or {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if size2 < size1:
        raise ProofError(f"tree size {size2} is smaller than the old size {size1}")
    if size1 == size2:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if not hmac.compare_digest(root1, root2):
            raise ProofError("roots differ for the same tree size")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    for position, element in enumerate(proof):
        _require_hash(element, f"proof element {position}")
    first, second = _roots_from_consistency_proof(size1, size2, proof, root1)
    if not hmac.compare_digest(first, root1):
        raise ProofError("consistency proof does not lead to the old root")
    if not hmac.compare_digest(second, root2):
        raise ProofError("consistency proof does not lead to the new root")


def _roots_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, bytes]:
    """RFC 9162 §2.1.4.2 steps 2-6, for 0 < size1 < size2 and a non-empty proof."""
    if not (0 < size1 < size2 and proof):
        raise ProofError(f"no consistency check from size {size1} to {size2}")  # loop guard
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for element in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof is too long: {len(proof)} elements")
        if fn & 1 or fn == sn:
            first = node_hash(element, first)
            second = node_hash(element, second)
            fn, sn = _shift_until_odd_or_zero(fn, sn)
        else:
            second = node_hash(second, element)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof is too short: {len(proof)} elements")
    return first, second
