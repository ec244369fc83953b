from __future__ import annotations

import logging

import orjson

from parcelvault.logging_setup import REDACTED, JsonLines, Redact, personal_names
from parcelvault.privacy.policy import load_default_policy

NAMES = personal_names(load_default_policy())


def _emit(message: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.makeLogRecord(
        {"name": "t", "levelno": 20, "levelname": "INFO", "msg": message, "args": args, **extra}
    )
    assert Redact(NAMES).filter(record)
    parsed: dict[str, object] = orjson.loads(JsonLines().format(record))
    return parsed


def test_fields_named_like_personal_fields_are_redacted_in_every_spelling() -> None:
    line = _emit(
        "shipment created",
        email="jane@example.org",
        recipient_phone="+44 7700 900123",
        shipment="abc123",
    )
    assert line["email"] == REDACTED
    assert line["recipient_phone"] == REDACTED
    assert line["shipment"] == "abc123"


def test_nested_personal_fields_are_redacted_too() -> None:
    line = _emit(
        "payload",
        payload={
            "recipient": {"name": "Jane Doe", "city": "Leeds"},
            "items": [{"street": "12 Example Street"}],
        },
    )
    assert line["payload"] == {
        "recipient": {"name": REDACTED, "city": "Leeds"},
        "items": [{"street": REDACTED}],
    }


def test_the_redaction_names_come_from_the_policy() -> None:
    assert {"recipient.email", "recipient_email", "email", "street", "received_by"} <= NAMES
    assert "city" not in NAMES
