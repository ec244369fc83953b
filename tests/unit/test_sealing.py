from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parcelvault.crypto import keyed_hash
from parcelvault.crypto.keyring import KeyFolderError, Keyring, Keys, create_key_folder
from parcelvault.crypto.sealing import SealError, associated_data, open_records, open_sealed, seal


@pytest.fixture
def cipher() -> AESGCM:
    return AESGCM(AESGCM.generate_key(bit_length=256))


def test_a_sealed_value_opens_in_its_own_place(cipher: AESGCM) -> None:
    ad = associated_data("subject", "record", "recipient.name")
    sealed = seal(cipher, "Jane Doe", ad)
    assert b"Jane" not in sealed
    assert open_sealed(cipher, sealed, ad) == "Jane Doe"


@pytest.mark.parametrize(
    "elsewhere",
    [
        ("other-subject", "record", "recipient.name"),
        ("subject", "other-record", "recipient.name"),
        ("subject", "record", "recipient.email"),
    ],
)
def test_a_sealed_value_moved_to_another_subject_record_or_field_fails(
    cipher: AESGCM, elsewhere: tuple[str, str, str]
) -> None:
    sealed = seal(cipher, "Jane Doe", associated_data("subject", "record", "recipient.name"))
    with pytest.raises(SealError):
        open_sealed(cipher, sealed, associated_data(*elsewhere))


def test_a_flipped_bit_is_detected(cipher: AESGCM) -> None:
    ad = associated_data("s", "r", "f")
    sealed = bytearray(seal(cipher, "value", ad))
    sealed[-1] ^= 1
    with pytest.raises(SealError):
        open_sealed(cipher, bytes(sealed), ad)


def test_sealing_the_same_value_twice_gives_different_bytes(cipher: AESGCM) -> None:
    ad = associated_data("s", "r", "f")
    assert seal(cipher, "same", ad) != seal(cipher, "same", ad)


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    written = create_key_folder(folder)
    assert {p.name for p in written} == {"kek.key", "lookup.key", "session.key"}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = {p: p.read_bytes() for p in written}
    with pytest.raises(KeyFolderError, match="refusing to overwrite"):
        create_key_folder(folder)
    assert {p: p.read_bytes() for p in written} == before


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    create_key_folder(folder)
    os.chmod(folder / "kek.key", 0o644)
    with pytest.raises(KeyFolderError, match="readable by others"):
        Keys.load(folder)


def test_a_wrapped_data_key_only_unwraps_for_its_own_subject(tmp_path: Path) -> None:
    create_key_folder(tmp_path / "k")
    keyring = Keyring(Keys.load(tmp_path / "k"))
    data_key = keyring.new_data_key()
    wrapped = keyring.wrap(data_key, "subject-a")
    sealed = seal(AESGCM(data_key), "x", b"ad")
    assert open_sealed(keyring.unwrap(wrapped, "subject-a"), sealed, b"ad") == "x"
    with pytest.raises(SealError):
        keyring.unwrap(wrapped, "subject-b")


def test_a_subject_is_the_same_for_any_spelling_of_its_email() -> None:
    key = os.urandom(32)
    a = keyed_hash.subject_id(key, email="Jane@Example.org ", phone=None)
    b = keyed_hash.subject_id(key, email="jane@example.org", phone="+44 1")
    assert a == b
    assert keyed_hash.subject_id(os.urandom(32), email="jane@example.org", phone=None) != a


def test_a_subject_falls_back_to_the_phone_and_to_none() -> None:
    key = os.urandom(32)
    spaced = keyed_hash.subject_id(key, email=None, phone="+44 7700 900123")
    assert spaced == keyed_hash.subject_id(key, email=None, phone="+447700900123")
    assert keyed_hash.subject_id(key, email=None, phone=None) is None


def test_postcode_digests_ignore_spacing_and_case_but_not_the_shipment() -> None:
    key = os.urandom(32)
    a = keyed_hash.postcode_digest(key, record_id="r1", postcode="LS1 4AP")
    assert keyed_hash.digests_match(
        a, keyed_hash.postcode_digest(key, record_id="r1", postcode="ls14ap")
    )
    assert not keyed_hash.digests_match(
        a, keyed_hash.postcode_digest(key, record_id="r2", postcode="LS1 4AP")
    )
    assert not keyed_hash.digests_match(
        a, keyed_hash.postcode_digest(key, record_id="r1", postcode="LS1 4AQ")
    )


def test_a_service_secret_opens_only_for_its_own_purpose(tmp_path: Path) -> None:
    create_key_folder(tmp_path / "k")
    keyring = Keyring(Keys.load(tmp_path / "k"))
    sealed = keyring.seal_secret(b"totp-seed", "totp:7")
    assert b"totp-seed" not in sealed
    assert keyring.open_secret(sealed, "totp:7") == b"totp-seed"
    with pytest.raises(SealError):
        keyring.open_secret(sealed, "totp:8")


def test_open_records_groups_values_by_record_and_names_what_failed_to_open() -> None:
    cipher = AESGCM(AESGCM.generate_key(bit_length=256))

    class Row:
        def __init__(self, record_id: str, field: str, value: bytes) -> None:
            self.record_id, self.field, self.value = record_id, field, value

    good = Row(
        "r1", "recipient.name", seal(cipher, "Ann", associated_data("s", "r1", "recipient.name"))
    )
    moved = Row("r2", "recipient.name", good.value)
    opened, failed = open_records(cipher, "s", [good, moved])
    assert opened == {"r1": {"recipient.name": "Ann"}}
    assert failed == [("r2", "recipient.name")]
