"""Tracking numbers.

Numbers parcelvault issues carry 80 random bits written as 16 Crockford base32
symbols, followed by one check symbol, and are shown in groups of four for reading
(``7KQ2-M9XD-3TAB-R0VW-C``). The check symbol is computed with the Luhn mod N
algorithm over the 32-symbol Crockford alphabet, which catches every single-symbol
typo and every swap of two neighbouring symbols; Crockford's own mod-37 check
symbols (``* ~ $ = U``) were avoided because they are awkward in URLs and on phone
keyboards.

Parsing is forgiving the way Crockford intends: case is ignored, hyphens and spaces
are dropped, ``O`` reads as ``0`` and ``I``/``L`` as ``1``.

Numbers a tenant supplies (a carrier's own) are only normalized: upper-cased,
spaces and hyphens removed, 4-40 symbols of ``A-Z0-9``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
RANDOM_BITS = 80
BODY_LENGTH = RANDOM_BITS // 5
ISSUED_LENGTH = BODY_LENGTH + 1
_SUPPLIED = re.compile(r"^[A-Z0-9]{4,40}$")
_SEPARATORS = re.compile(r"[\s\-]+")


def check_symbol(body: str) -> str:
    """Luhn mod 32 check symbol of a Crockford base32 string."""
    factor = 2
    total = 0
    for symbol in reversed(body):
        addend = factor * _VALUE[symbol]
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return ALPHABET[(32 - total % 32) % 32]


def issue(randbits: Callable[[int], int]) -> str:
    """A new tracking number in canonical (ungrouped) form; pass `secrets.randbits`."""
    value = randbits(RANDOM_BITS)
    body = "".join(ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(BODY_LENGTH)))
    return body + check_symbol(body)


def is_valid_issued(canonical: str) -> bool:
    if len(canonical) != ISSUED_LENGTH or any(c not in _VALUE for c in canonical):
        return False
    return check_symbol(canonical[:-1]) == canonical[-1]


def normalize(raw: str) -> str:
    """Canonical form of any tracking number a person or client typed."""
    return _SEPARATORS.sub("", raw).upper()


def canonical_issued(raw: str) -> str | None:
    """The canonical issued number `raw` denotes, or None if it is not a valid one."""
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
