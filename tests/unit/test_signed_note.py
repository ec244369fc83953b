"""Tests for parcelvault.ledger.note: C2SP signed notes, key strings and checkpoints."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from parcelvault.ledger.note import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    ed25519_key_id,
    format_checkpoint,
    format_signer_key,
    format_verifier_key,
    generate_signer,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)

# Published example from golang.org/x/mod/sumdb/note (the reference implementation the
# C2SP spec was written from): the key pair and the note it signs. Ed25519 is
# deterministic, so our signer must reproduce the note byte for byte.
PETER_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_NOTE = (
    PETER_TEXT + "\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)

# The example checkpoint body from c2sp.org/tlog-checkpoint.
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

TEXT = "parcelvault.example/log\n3\n" + base64.b64encode(bytes(range(32))).decode() + "\n"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return generate_signer("parcelvault.example/log")


@pytest.fixture(scope="module")
def witness() -> Signer:
    return generate_signer("witness.example/w1")


def _signature_line(note: str, number: int = 0) -> str:
    return note.split("\n\n")[-1].splitlines()[number]


# --------------------------------------------------------------------------- published vector


def test_the_published_example_note_verifies() -> None:
    text, names = open_note(PETER_NOTE, [parse_verifier_key(PETER_VERIFIER)])
    assert text == PETER_TEXT
    assert names == ["PeterNeumann"]


def test_the_published_example_key_pair_reproduces_the_note_byte_for_byte() -> None:
    signer = parse_signer_key(PETER_SIGNER)
    assert format_signer_key(signer) == PETER_SIGNER
    assert format_verifier_key(signer.verifier) == PETER_VERIFIER
    assert sign_note(PETER_TEXT, signer) == PETER_NOTE


def test_the_published_example_rejects_a_changed_letter() -> None:
    tampered = PETER_NOTE.replace("cryptography", "cryptographY")
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(tampered, [parse_verifier_key(PETER_VERIFIER)])


# --------------------------------------------------------------------------- key ids and strings


def test_the_key_id_is_the_first_four_bytes_of_sha256_of_name_newline_type_and_key() -> None:
    public_key = bytes(range(32))
    digest = hashlib.sha256(b"example.com/log" + b"\x0a" + b"\x01" + public_key).digest()
    assert ed25519_key_id("example.com/log", public_key) == int.from_bytes(digest[:4], "big")


def test_the_published_verifier_key_id_matches_an_independent_computation() -> None:
    name, key_id, payload = PETER_VERIFIER.split("+", 2)
    raw = base64.b64decode(payload)
    digest = hashlib.sha256(name.encode() + b"\n" + raw).digest()  # raw = 0x01 || key
    assert digest[:4].hex() == key_id
    assert parse_verifier_key(PETER_VERIFIER).key_id == int(key_id, 16)


def test_generated_keys_round_trip_through_their_strings(signer: Signer) -> None:
    signer_key = format_signer_key(signer)
    verifier_key = format_verifier_key(signer.verifier)
    assert signer_key.startswith(f"PRIVATE+KEY+{signer.name}+{signer.key_id:08x}+")
    assert verifier_key.startswith(f"{signer.name}+{signer.key_id:08x}+")
    assert parse_signer_key(signer_key) == signer
    assert parse_verifier_key(verifier_key) == signer.verifier


def test_the_verifier_key_holds_the_signers_public_key(signer: Signer) -> None:
    public_key = Ed25519PublicKey.from_public_bytes(signer.verifier.public_key)
    public_key.verify(signer.sign(b"message"), b"message")


def test_a_signers_repr_does_not_reveal_the_seed(signer: Signer) -> None:
    assert signer.seed.hex() not in repr(signer)
    assert base64.b64encode(signer.seed).decode() not in repr(signer)


def _mangle(text: str, position: int) -> str:
    return text[:position] + chr(ord(text[position]) + 1) + text[position + 1 :]


@pytest.mark.parametrize(
    "key",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a3+",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW==",
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy1 0TW",
        PETER_SIGNER,
    ],
)
def test_a_malformed_verifier_key_is_rejected(key: str) -> None:
    with pytest.raises(NoteError):
        parse_verifier_key(key)


def test_every_substring_and_single_character_change_of_a_verifier_key_is_rejected() -> None:
    for start in range(len(PETER_VERIFIER)):
        for end in range(start + 1, len(PETER_VERIFIER) + 1):
            if (start, end) != (0, len(PETER_VERIFIER)):
                with pytest.raises(NoteError):
                    parse_verifier_key(PETER_VERIFIER[start:end])
    for position in range(len(PETER_VERIFIER)):
        with pytest.raises(NoteError):
            parse_verifier_key(_mangle(PETER_VERIFIER, position))


@pytest.mark.parametrize(
    "key",
    [
        PETER_VERIFIER,
        "PRIVATE+KEY+" + PETER_VERIFIER,
        "PRIVATE+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDF",
        "PRIVATE+KEY+Peter+Neumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    ],
)
def test_a_malformed_signer_key_is_rejected(key: str) -> None:
    with pytest.raises(NoteError):
        parse_signer_key(key)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "nbsp\u00a0", "ctl\x01"])
def test_invalid_key_names_are_rejected(name: str) -> None:
    with pytest.raises(NoteError, match="name"):
        generate_signer(name)


# --------------------------------------------------------------------------- signing and opening


def test_a_signed_note_round_trips(signer: Signer) -> None:
    note = sign_note(TEXT, signer)
    assert note.startswith(TEXT + "\n\u2014 parcelvault.example/log ")
    assert open_note(note, [signer.verifier]) == (TEXT, [signer.name])
    assert open_note(note.encode("utf-8"), [signer.verifier]) == (TEXT, [signer.name])


def test_the_signature_carries_the_key_id_and_an_ed25519_signature(signer: Signer) -> None:
    line = _signature_line(sign_note(TEXT, signer))
    blob = base64.b64decode(line.split(" ")[-1])
    assert blob[:4] == signer.key_id.to_bytes(4, "big")
    Ed25519PublicKey.from_public_bytes(signer.verifier.public_key).verify(blob[4:], TEXT.encode())


def test_text_with_blank_lines_and_unicode_round_trips(signer: Signer) -> None:
    text = "Ognuno sta solo\n\ned \u00e8 subito sera.\n\n"
    assert open_note(sign_note(text, signer), [signer.verifier]) == (text, [signer.name])


def test_tampered_text_is_rejected(signer: Signer) -> None:
    note = sign_note(TEXT, signer)
    tampered = note.replace("\n3\n", "\n4\n", 1)
    with pytest.raises(NoteError, match="invalid signature from known key"):
        open_note(tampered, [signer.verifier])


def test_a_tampered_signature_is_rejected(signer: Signer) -> None:
    note = sign_note(TEXT, signer)
    line = _signature_line(note)
    blob = bytearray(base64.b64decode(line.split(" ")[-1]))
    blob[10] ^= 0x01
    forged = line.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(blob)).decode()
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(note.replace(line, forged), [signer.verifier])


def test_a_second_unknown_signer_is_ignored(signer: Signer, witness: Signer) -> None:
    note = sign_note(TEXT, signer, witness)
    assert len(note.split("\n\n")[-1].splitlines()) == 2
    assert open_note(note, [signer.verifier]) == (TEXT, [signer.name])
    assert open_note(note, [witness.verifier]) == (TEXT, [witness.name])
    _, names = open_note(note, [witness.verifier, signer.verifier])
    assert names == [signer.name, witness.name]


def test_an_unparseable_signature_from_another_algorithm_is_still_ignored(signer: Signer) -> None:
    foreign = "\u2014 other.example/cosigner " + base64.b64encode(b"\xde\xad\xbe\xef" * 20).decode()
    note = sign_note(TEXT, signer) + foreign + "\n"
    assert open_note(note, [signer.verifier]) == (TEXT, [signer.name])


def test_a_note_signed_only_by_unknown_keys_is_rejected(signer: Signer, witness: Signer) -> None:
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(sign_note(TEXT, witness), [signer.verifier])
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(sign_note(TEXT, signer), [])


def test_a_signature_with_the_right_name_but_the_wrong_key_id_is_not_accepted(
    signer: Signer,
) -> None:
    note = sign_note(TEXT, signer)
    line = _signature_line(note)
    blob = bytearray(base64.b64decode(line.split(" ")[-1]))
    blob[0] ^= 0xFF
    wrong_id = line.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(blob)).decode()
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(note.replace(line, wrong_id), [signer.verifier])


def test_a_key_with_the_same_name_but_another_id_does_not_verify_the_note(signer: Signer) -> None:
    impostor = generate_signer(signer.name)
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(sign_note(TEXT, impostor), [signer.verifier])


@pytest.mark.parametrize(
    "bad_line",
    [
        "\u2014 name\n",
        "\u2014 name \n",
        "\u2014 \n",
        "- name AAAAAAA=\n",
        "\u2014name AAAAAAA=\n",
        "\u2014 name not base64!\n",
        "\u2014 name AAAAAAA\n",
        "\u2014 name AAAAAAB=\n",
        "\u2014 name AAAAAA==\n",
        "\u2014 na+me AAAAAAA=\n",
        "\u2014 name AAAAAAA= extra\n",
        "\u2014 name\u00a0AAAAAAA=\n",
    ],
)
def test_a_malformed_signature_line_rejects_the_note_even_beside_a_valid_one(
    bad_line: str, signer: Signer
) -> None:
    valid = sign_note(TEXT, signer)
    good_line = _signature_line(valid) + "\n"
    for note in (TEXT + "\n" + bad_line + good_line, valid + bad_line):
        with pytest.raises(NoteError):
            open_note(note, [signer.verifier])


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda note: note[:-1], "newline-terminated signature line"),
        (lambda note: note + "\n", "newline-terminated signature line"),
        (lambda note: note.replace("\n\n", "\n"), "no blank line"),
        (lambda note: note.replace("log\n", "log\x07\n"), "control character"),
        (lambda note: note.replace("log\n", "log\r\n"), "control character"),
        (lambda note: note.replace("log", "\udc80"), "not valid UTF-8"),
    ],
)
def test_malformed_notes_are_rejected_before_any_signature_is_checked(
    mangle: Callable[[str], str], message: str, signer: Signer
) -> None:
    with pytest.raises(NoteError, match=message):
        open_note(mangle(sign_note(TEXT, signer)), [signer.verifier])


def test_a_note_given_as_bytes_must_be_utf_8(signer: Signer) -> None:
    note = sign_note(TEXT, signer).encode().replace(b"log", b"l\xffg")
    with pytest.raises(NoteError, match="not valid UTF-8"):
        open_note(note, [signer.verifier])


def test_a_flood_of_signatures_is_rejected(signer: Signer, witness: Signer) -> None:
    note = sign_note(TEXT, signer, *[witness] * MAX_SIGNATURES)
    with pytest.raises(NoteError, match="more than"):
        open_note(note, [signer.verifier])


def test_sixteen_signatures_are_accepted(signer: Signer, witness: Signer) -> None:
    note = sign_note(TEXT, *[witness] * 15, signer)
    assert open_note(note, [signer.verifier]) == (TEXT, [signer.name])


@pytest.mark.parametrize("text", ["", "no final newline", "tab\there\n", "nul\x00\n", "\ud800\n"])
def test_text_that_cannot_be_a_note_is_not_signed(text: str, signer: Signer) -> None:
    with pytest.raises(NoteError):
        sign_note(text, signer)


def test_signing_needs_a_signer() -> None:
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note(TEXT)


def test_two_different_verifiers_claiming_the_same_name_and_id_are_refused(
    signer: Signer,
) -> None:
    clash = Verifier(signer.name, bytes(32))
    object.__setattr__(clash, "key_id", signer.key_id)
    with pytest.raises(NoteError, match="share"):
        open_note(sign_note(TEXT, signer), [signer.verifier, clash])


# --------------------------------------------------------------------------- checkpoints


def test_the_spec_example_checkpoint_parses() -> None:
    checkpoint = parse_checkpoint(SPEC_CHECKPOINT)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.extensions == ()
    assert format_checkpoint(checkpoint.origin, checkpoint.size, checkpoint.root) == (
        SPEC_CHECKPOINT
    )


def test_a_checkpoint_round_trips_with_extension_lines() -> None:
    root = hashlib.sha256(b"").digest()
    text = format_checkpoint("log.example", 0, root, ["ext one", "ext two"])
    assert text == f"log.example\n0\n{base64.b64encode(root).decode()}\next one\next two\n"
    assert parse_checkpoint(text) == Checkpoint("log.example", 0, root, ("ext one", "ext two"))


def test_a_signed_checkpoint_opens_to_the_same_checkpoint(signer: Signer) -> None:
    root = hashlib.sha256(b"root").digest()
    note = sign_note(format_checkpoint(signer.name, 42, root), signer)
    text, _ = open_note(note, [signer.verifier])
    assert parse_checkpoint(text) == Checkpoint(signer.name, 42, root)


ROOT64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"\n1\n{ROOT64}\n",
        f"origin\n01\n{ROOT64}\n",
        f"origin\n00\n{ROOT64}\n",
        f"origin\n-1\n{ROOT64}\n",
        f"origin\n+1\n{ROOT64}\n",
        f"origin\n 1\n{ROOT64}\n",
        f"origin\n1.0\n{ROOT64}\n",
        f"origin\n\u0661\n{ROOT64}\n",
        f"origin\n{2**64}\n{ROOT64}\n",
        f"origin\n\n{ROOT64}\n",
        "origin\n1\n\n",
        f"origin\n1\n{base64.b64encode(bytes(31)).decode()}\n",
        f"origin\n1\n{base64.b64encode(bytes(33)).decode()}\n",
        f"origin\n1\n{ROOT64.rstrip('=')}\n",
        "origin\n1\n",
        f"origin\n1\n{ROOT64}",
        f"origin\n1\n{ROOT64}\n\n",
        f"origin\n1\n{ROOT64}\next\n\n",
        f"origin\n1\n{ROOT64}\r\n",
    ],
)
def test_a_malformed_checkpoint_is_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_the_largest_64_bit_tree_size_is_accepted() -> None:
    assert parse_checkpoint(f"origin\n{2**64 - 1}\n{ROOT64}\n").size == 2**64 - 1


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [("", 1, bytes(32)), ("a\nb", 1, bytes(32)), ("o", -1, bytes(32)), ("o", 1, bytes(31))],
)
def test_an_invalid_checkpoint_is_not_formatted(origin: str, size: int, root: bytes) -> None:
    with pytest.raises(NoteError):
        format_checkpoint(origin, size, root)
