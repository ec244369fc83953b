"""Tracking numbers.

Numbers parcelvault issues carry 80 random bits written as 16 Crockford base32
symbols, followed by one check symbol, and are shown in groups of four for reading
(``G2J5-3JDW-E0F7-X90S-N``). The check symbol makes the whole number a code word
over GF(32): reading each symbol as an element of GF(2^5) and weighting position j
(of 17, left to right) with alpha^(16-j), the weighted sum is zero. Every weight is
distinct and non-zero and neighbouring weights differ by the factor alpha != 1, so
every single-symbol typo and every swap of two different neighbouring symbols
(the check symbol included) is caught. Crockford's own mod-37 check symbols
(``* ~ $ = U``) were avoided because they are awkward in URLs and on phone keyboards,
and a Luhn mod 32 check would miss swaps of ``0`` and ``Z``.

Parsing is forgiving the way Crockford intends: case is ignored, hyphens and spaces
are dropped, ``O`` reads as ``0`` and ``I``/``L`` as ``1``.

Numbers a tenant supplies (a carrier's own) are only normalized: upper-cased,
spaces and hyphens removed, 4-40 symbols of ``A-Z0-9``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
_SYMBOLS = frozenset(ALPHABET)
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
RANDOM_BITS = 80
BODY_LENGTH = RANDOM_BITS // 5
ISSUED_LENGTH = BODY_LENGTH + 1
_SUPPLIED = re.compile(r"^[A-Z0-9]{4,40}$")
_SEPARATORS = re.compile(r"[\s\-]+")


_POLYNOMIAL = 0b100101  # x^5 + x^2 + 1, primitive over GF(2)


def _powers_of_alpha() -> list[int]:
    powers, value = [], 1
    for _ in range(31):
        powers.append(value)
        value <<= 1
        if value & 0b100000:
            value ^= _POLYNOMIAL
    return powers


_EXP = _powers_of_alpha()
_LOG = {value: power for power, value in enumerate(_EXP)}


def _times_alpha_to(power: int, value: int) -> int:
    return 0 if value == 0 else _EXP[(_LOG[value] + power) % 31]


# _WEIGHTED[offset - 1][symbol] = alpha^offset * (the symbol's value), for the symbol
# `offset` places left of the check symbol (alpha^31 = 1, so the weights repeat).
_WEIGHTED = [
    {symbol: _times_alpha_to(offset % 31, value) for symbol, value in _VALUE.items()}
    for offset in range(1, 64)
]


def check_symbol(body: str) -> str:
    """The symbol that makes `body` + symbol a code word (see the module docstring)."""
    if len(body) > len(_WEIGHTED):
        raise ValueError("a tracking number body has at most 63 symbols")
    total = 0
    for weights, symbol in zip(_WEIGHTED, reversed(body), strict=False):
        total ^= weights[symbol]
    return ALPHABET[total]


def issue(randbits: Callable[[int], int]) -> str:
    """A new tracking number in canonical (ungrouped) form; pass `secrets.randbits`."""
    value = randbits(RANDOM_BITS)
    body = "".join(ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(BODY_LENGTH)))
    return body + check_symbol(body)


def is_valid_issued(canonical: str) -> bool:
    if len(canonical) != ISSUED_LENGTH or not _SYMBOLS.issuperset(canonical):
        return False
    return check_symbol(canonical[:-1]) == canonical[-1]


def normalize(raw: str) -> str:
    """Canonical form of any tracking number a person or client typed."""
    return _SEPARATORS.sub("", raw).upper()


@functools.lru_cache(maxsize=1 << 16)
def canonical_issued(raw: str) -> str | None:
    """The canonical issued number `raw` denotes, or None if it is not a valid one.
    Cached: ingest checks each shipment's number twice (to store it and to look it up)
    and each event's once, at a few microseconds each."""
    candidate = normalize(raw).translate(_ALIASES)
    return candidate if is_valid_issued(candidate) else None


def is_valid_supplied(canonical: str) -> bool:
    return bool(_SUPPLIED.match(canonical))


def for_lookup(raw: str) -> str | None:
    """Canonical form to look a number up by, or None if it cannot be a number at all."""
    issued = canonical_issued(raw)
    if issued is not None:
        return issued
    candidate = normalize(raw)
    return candidate if is_valid_supplied(candidate) else None


def grouped(canonical: str) -> str:
    """Issued numbers in groups of four for reading; supplied numbers unchanged."""
    if not is_valid_issued(canonical):
        return canonical
    return "-".join(canonical[i : i + 4] for i in range(0, len(canonical), 4))
