"""The standalone verifier (parcelvault.ledger.verify) stands alone and agrees with the
library: merkle.verify_inclusion on the RFC 6962 vectors, note.open_note on signed notes
and bundle.verify_bundle on bundles."""

from __future__ import annotations

import ast
import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from parcelvault.ledger import merkle, verify
from parcelvault.ledger.bundle import (
    Bundle,
    BundleError,
    Entry,
    format_bundle,
    verify_bundle,
)
from parcelvault.ledger.log import canonical
from parcelvault.ledger.note import (
    NoteError,
    Signer,
    format_checkpoint,
    format_verifier_key,
    generate_signer,
    open_note,
    parse_checkpoint,
    sign_note,
)

SOURCE = Path(verify.__file__)
VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "rfc6962"
ALLOWED = {"hashlib", "base64", "sys", "json", "argparse", "cryptography"}
ORIGIN = "ledger.example/log"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_the_standalone_verifier_imports_only_the_standard_modules_and_cryptography() -> None:
    imported = _imports(SOURCE)
    assert imported, "found no imports at all: the AST walk is broken"
    outside = {name for name in imported if name.split(".")[0] not in ALLOWED}
    assert not outside, f"verify.py imports {sorted(outside)}"


def test_a_module_importing_something_else_would_be_caught(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import hashlib\nfrom parcelvault.ledger import merkle\nfrom . import x\n")
    assert _imports(sample) == {"hashlib", "parcelvault.ledger", "."}


# --------------------------------------------------------------------------- RFC 6962


def _inclusion_vectors() -> list[Any]:
    paths = sorted((VECTORS / "inclusion").rglob("*.json"))
    if not paths:
        return [pytest.param(VECTORS / "inclusion", id="inclusion-vectors-missing")]
    return [pytest.param(p, id=p.relative_to(VECTORS).as_posix()) for p in paths]


def _outcome(error: type[Exception], check: Callable[..., object], *args: Any) -> str | None:
    """None if `check(*args)` passes, else the message of the `error` it raised."""
    try:
        check(*args)
    except error as raised:
        return str(raised) or type(raised).__name__
    return None


@pytest.mark.parametrize("path", _inclusion_vectors())
def test_the_standalone_inclusion_check_agrees_with_merkle_on_every_rfc6962_vector(
    path: Path,
) -> None:
    if not path.is_file():
        pytest.fail(f"RFC 6962 conformance vectors not found under {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    args = (
        base64.b64decode(data["leafHash"]),
        data["leafIdx"],
        data["treeSize"],
        [base64.b64decode(item) for item in data["proof"] or []],
        base64.b64decode(data["root"]),
    )
    ours = _outcome(verify.VerificationError, verify.verify_inclusion, *args)
    library = _outcome(merkle.ProofError, merkle.verify_inclusion, *args)
    assert (ours is None) == (library is None), f"{data['desc']}: {ours!r} vs {library!r}"
    assert (ours is not None) == data["wantErr"], data["desc"]


# --------------------------------------------------------------------------- signed notes


@pytest.fixture(scope="module")
def signer() -> Signer:
    return generate_signer(ORIGIN)


@pytest.fixture(scope="module")
def other() -> Signer:
    return generate_signer("witness.example/w1")


def _text() -> str:
    return format_checkpoint(ORIGIN, 7, bytes(range(32)))


def _notes(signer: Signer, other: Signer) -> dict[str, str]:
    good = sign_note(_text(), signer)
    same_name_other_key = generate_signer(ORIGIN)
    line = good.split("\n\n")[1]
    name, blob = line.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw = base64.b64decode(blob)
    forged = raw[:4] + bytes([raw[4] ^ 1]) + raw[5:]
    return {
        "good": good,
        "cosigned": sign_note(_text(), other, signer),
        "only another key": sign_note(_text(), other),
        "same name, another key": sign_note(_text(), same_name_other_key),
        "text altered": good.replace("\n7\n", "\n8\n"),
        "signature altered": _text() + f"\n\u2014 {name} {base64.b64encode(forged).decode()}\n",
        "hyphen instead of em dash": good.replace("\u2014", "-"),
        "no signature": _text() + "\n",
        "no blank line": _text(),
        "no final newline": good.rstrip("\n"),
        "bad base64": good.replace("=\n", "!\n"),
        "control character": good.replace(ORIGIN, ORIGIN + "\t", 1),
        "garbage line after": good + "hello\n",
        "too short signature": _text() + f"\n\u2014 {name} AAAA\n",
    }


def test_the_standalone_note_check_agrees_with_open_note(signer: Signer, other: Signer) -> None:
    key = verify.parse_key(format_verifier_key(signer.verifier))
    accepted = []
    for label, note in _notes(signer, other).items():
        ours = _outcome(verify.VerificationError, verify.open_note, note, key)
        library = _outcome(NoteError, open_note, note, [signer.verifier])
        assert (ours is None) == (library is None), f"{label}: {ours!r} vs {library!r}"
        if ours is None:
            accepted.append(label)
            assert verify.open_note(note, key) == open_note(note, [signer.verifier])[0]
    assert accepted == ["good", "cosigned"]


def test_a_key_whose_id_does_not_match_is_refused(signer: Signer) -> None:
    text = format_verifier_key(signer.verifier)
    name, key_id, payload = text.split("+", 2)
    wrong = f"{name}+{(int(key_id, 16) ^ 1):08x}+{payload}"
    with pytest.raises(verify.VerificationError, match="key ID does not match"):
        verify.parse_key(wrong)
    assert verify.parse_key(text)[0] == ORIGIN


# --------------------------------------------------------------------------- bundles


def _entries(count: int) -> list[Entry]:
    return [
        Entry(
            "event" if n % 3 else "access",
            bytes([n]) * 16,
            canonical({"n": n, "status": "in_transit"}),
        )
        for n in range(count)
    ]


def _bundle(signer: Signer, entries: list[Entry], index: int) -> Bundle:
    tree = merkle.InMemoryTree(entry.leaf_hash() for entry in entries)
    note = sign_note(format_checkpoint(ORIGIN, tree.size, tree.root()), signer)
    return Bundle(index, tuple(tree.inclusion_proof(index)), note, entries[index])


def _variants(signer: Signer, other: Signer) -> dict[str, str]:
    entries = _entries(11)
    good = _bundle(signer, entries, 6)
    text = format_bundle(good)
    flipped = bytes([good.proof[0][0] ^ 1]) + good.proof[0][1:]
    signed = parse_checkpoint(good.checkpoint.split("\n\n")[0] + "\n")
    foreign = sign_note(format_checkpoint("elsewhere.example/log", 11, signed.root), signer)
    return {
        "good": text,
        "first leaf": format_bundle(_bundle(signer, entries, 0)),
        "last leaf": format_bundle(_bundle(signer, entries, 10)),
        "single entry tree": format_bundle(_bundle(signer, entries[:1], 0)),
        "cosigned": format_bundle(
            replace(
                good, checkpoint=sign_note(good.checkpoint.split("\n\n")[0] + "\n", other, signer)
            )
        ),
        "body altered": format_bundle(
            replace(good, entry=replace(good.entry, body=good.entry.body.replace(b"6", b"7")))
        ),
        "salt altered": format_bundle(replace(good, entry=replace(good.entry, salt=bytes(16)))),
        "kind altered": format_bundle(replace(good, entry=replace(good.entry, kind="consent"))),
        "index altered": format_bundle(replace(good, index=7)),
        "proof hash altered": format_bundle(replace(good, proof=(flipped, *good.proof[1:]))),
        "proof truncated": format_bundle(replace(good, proof=good.proof[:-1])),
        "proof extended": format_bundle(replace(good, proof=(*good.proof, bytes(32)))),
        "entry of another bundle": format_bundle(replace(good, entry=entries[5])),
        "signed by another key": format_bundle(_bundle(other, entries, 6)),
        "checkpoint of another origin": format_bundle(replace(good, checkpoint=foreign)),
        "no extra line": "\n".join(
            line for line in text.split("\n") if not line.startswith("extra")
        ),
        "wrong header": text.replace("tlog-proof@v1", "tlog-proof@v2", 1),
        "leading zero index": text.replace("\nindex 6\n", "\nindex 06\n"),
        "no checkpoint": text.split("\n\n")[0] + "\n\n",
        "short proof hash": text.replace(
            base64.b64encode(good.proof[0]).decode(), base64.b64encode(good.proof[0][:31]).decode()
        ),
    }


def test_the_standalone_verifier_agrees_with_verify_bundle_on_made_bundles(
    signer: Signer, other: Signer
) -> None:
    key_text = format_verifier_key(signer.verifier)
    accepted = []
    for label, text in _variants(signer, other).items():
        ours = _outcome(verify.VerificationError, verify.verify_bundle, text, key_text)
        library = _outcome(BundleError, verify_bundle, text, [signer.verifier])
        assert (ours is None) == (library is None), f"{label}: {ours!r} vs {library!r}"
        if ours is None:
            accepted.append(label)
    assert accepted == ["good", "first leaf", "last leaf", "single entry tree", "cosigned"]


def test_a_bundle_follows_the_c2sp_tlog_proof_layout(signer: Signer) -> None:
    bundle = _bundle(signer, _entries(5), 2)
    lines = format_bundle(bundle).split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("extra ")
    extra = json.loads(base64.b64decode(lines[1].removeprefix("extra ")))
    assert extra == {
        "body": base64.b64encode(bundle.entry.body).decode(),
        "kind": "event",
        "salt": base64.b64encode(bundle.entry.salt).decode(),
    }
    assert lines[2] == "index 2"
    assert lines[3 : 3 + len(bundle.proof)] == [base64.b64encode(h).decode() for h in bundle.proof]
    assert lines[3 + len(bundle.proof)] == ""
    assert "\n".join(lines[4 + len(bundle.proof) :]) == bundle.checkpoint


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PARCELVAULT_")}
    env["PARCELVAULT_DATABASE_URL"] = "postgresql://nowhere.invalid:1/none"
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_module_and_a_lone_copy_of_its_file_print_ok_or_the_reason(
    signer: Signer, other: Signer, tmp_path: Path
) -> None:
    shutil.copy(SOURCE, tmp_path / "verify.py")
    good = tmp_path / "good.tlog-proof"
    good.write_text(format_bundle(_bundle(signer, _entries(9), 4)))
    key = format_verifier_key(signer.verifier)

    as_module = _run(["-m", "parcelvault.ledger.verify", str(good), "--key", key], tmp_path)
    assert as_module.returncode == 0, as_module.stdout + as_module.stderr
    assert as_module.stdout == f"OK: entry 4 (event) is in the log {ORIGIN} of 9 entries\n"

    alone = _run(["-I", "verify.py", str(good), "--key", key], tmp_path)
    assert (alone.returncode, alone.stdout) == (0, as_module.stdout), alone.stderr

    wrong_key = _run(
        ["-I", "verify.py", str(good), "--key", format_verifier_key(other.verifier)], tmp_path
    )
    assert wrong_key.returncode == 1
    assert wrong_key.stdout.startswith("FAILED: the checkpoint is not signed by the key")

    missing = _run(["-I", "verify.py", str(tmp_path / "nope"), "--key", key], tmp_path)
    assert missing.returncode == 1
    assert missing.stdout.startswith("FAILED: cannot read")
