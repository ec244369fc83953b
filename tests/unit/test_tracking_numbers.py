from __future__ import annotations

import random
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parcelvault.domain import tracking_numbers as tn


def test_an_issued_number_has_80_random_bits_and_a_check_symbol() -> None:
    number = tn.issue(secrets.randbits)
    assert len(number) == 17
    assert set(number) <= set(tn.ALPHABET)
    assert tn.is_valid_issued(number)


def test_issued_numbers_do_not_repeat_in_a_large_sample() -> None:
    numbers = {tn.issue(secrets.randbits) for _ in range(20_000)}
    assert len(numbers) == 20_000


@given(st.integers(min_value=0, max_value=2**80 - 1), st.integers(min_value=0, max_value=16))
def test_every_single_symbol_typo_is_caught(value: int, position: int) -> None:
    number = tn.issue(lambda _bits: value)
    for replacement in tn.ALPHABET:
        if replacement != number[position]:
            typo = number[:position] + replacement + number[position + 1 :]
            assert not tn.is_valid_issued(typo)


@given(st.integers(min_value=0, max_value=2**80 - 1), st.integers(min_value=0, max_value=15))
def test_every_swap_of_two_different_neighbours_is_caught(value: int, position: int) -> None:
    number = tn.issue(lambda _bits: value)
    a, b = number[position], number[position + 1]
    if a != b:
        swapped = number[:position] + b + a + number[position + 2 :]
        assert not tn.is_valid_issued(swapped)


def test_every_swap_of_every_pair_of_symbols_is_caught_at_every_position() -> None:
    body = "0" * 16
    for position in range(16):
        for a in tn.ALPHABET:
            for b in tn.ALPHABET:
                if a == b:
                    continue
                candidate = body[:position] + a + b + body[position + 2 :]
                number = candidate[:16] + tn.check_symbol(candidate[:16])
                if number[position] == number[position + 1]:
                    continue
                swapped = (
                    number[:position]
                    + number[position + 1]
                    + number[position]
                    + number[position + 2 :]
                )
                assert not tn.is_valid_issued(swapped), (position, a, b)


def test_reading_forgives_case_separators_and_look_alike_letters() -> None:
    number = tn.issue(random.Random(7).getrandbits)
    typed = tn.grouped(number).lower().replace("-", " ")
    assert tn.canonical_issued(typed) == number
    with_o = number.replace("0", "O")
    assert tn.canonical_issued(with_o) == number


def test_numbers_are_grouped_in_fours_for_reading() -> None:
    number = tn.issue(random.Random(1).getrandbits)
    grouped = tn.grouped(number)
    assert grouped.split("-") == [number[0:4], number[4:8], number[8:12], number[12:16], number[16]]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1z 999 aa1 0123 4567 84", "1Z999AA10123456784"), ("jd-0146-0001", "JD01460001")],
)
def test_a_carriers_own_number_is_only_normalized(raw: str, expected: str) -> None:
    assert tn.for_lookup(raw) == expected
    assert tn.grouped(expected) == expected


@pytest.mark.parametrize("raw", ["", "ab", "x" * 41, "12/34", "<script>"])
def test_strings_that_cannot_be_numbers_are_refused(raw: str) -> None:
    assert tn.for_lookup(raw) is None
