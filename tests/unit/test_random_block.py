from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parcelvault.crypto import randomness
from parcelvault.crypto.keyring import Keyring
from parcelvault.crypto.randomness import RandomBlock
from parcelvault.crypto.sealing import NONCE_BYTES, associated_data, open_sealed, seal


def test_a_block_hands_out_consecutive_slices_of_what_the_kernel_gave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[bytes] = []

    def urandom(n: int) -> bytes:
        drawn.append(bytes(range(len(drawn) * 7 % 256, 256)) * (n // 200 + 1))
        return drawn[-1][:n]

    monkeypatch.setattr(os, "urandom", urandom)
    block = RandomBlock()
    first, second = block.take(12), block.take(20)
    assert len(drawn) == 1
    assert first + second == drawn[0][:32]


def test_a_block_draws_again_when_a_request_does_not_fit_what_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def urandom(n: int) -> bytes:
        calls.append(n)
        return bytes([len(calls)]) * n

    monkeypatch.setattr(os, "urandom", urandom)
    block = RandomBlock()
    block.take(randomness.BLOCK_BYTES - 4)
    tail = block.take(8)
    huge = block.take(randomness.BLOCK_BYTES * 2)
    assert calls == [randomness.BLOCK_BYTES, randomness.BLOCK_BYTES, randomness.BLOCK_BYTES * 2]
    assert tail == bytes([2]) * 8
    assert huge == bytes([3]) * (randomness.BLOCK_BYTES * 2)


def test_a_block_never_repeats_a_nonce_over_thousands_of_seals() -> None:
    cipher = AESGCM(AESGCM.generate_key(bit_length=256))
    block = RandomBlock()
    ad = associated_data("s", "r", "f")
    sealed = [seal(cipher, "same", ad, block.take) for _ in range(5000)]
    nonces = {value[1 : 1 + NONCE_BYTES] for value in sealed}
    assert len(nonces) == len(sealed)
    assert all(open_sealed(cipher, value, ad) == "same" for value in sealed)


def test_a_negative_request_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        RandomBlock().take(-1)


def test_data_keys_from_a_block_are_256_bit_and_distinct() -> None:
    block = RandomBlock()
    keys = {Keyring.new_data_key(block.take) for _ in range(1000)}
    assert len(keys) == 1000
    assert {len(key) for key in keys} == {32}
