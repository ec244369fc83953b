"""JSON-lines logging with policy-driven redaction.

Log records carry ids and counts, never personal values: request bodies are not
logged and database errors hide their parameters. As a second line of defence,
every record passes a filter that replaces the value of any structured field named
like a personal field of the policy (`recipient.email`, `recipient_email`, `email`,
...) with "[redacted]", however deeply it is nested.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from parcelvault.privacy.policy import Policy

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}
"""Attributes every record has, not logged as fields (`color_message` is uvicorn's copy of
its message with terminal colours)."""
REDACTED = "[redacted]"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def personal_names(policy: Policy) -> frozenset[str]:
    """Every spelling of a personal field's name that a log field might use."""
    names: set[str] = set()
    for name in policy.fields:
        group, _, leaf = name.partition(".")
        names.update({name, name.replace(".", "_"), leaf, f"{group}_{leaf}"})
    return frozenset(names)


class Redact(logging.Filter):
    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.names = frozenset(n.lower() for n in names)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in self.names else self._clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._clean(item) for item in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        for key in list(record.__dict__):
            if key in _STANDARD:
                continue
            if key.lower() in self.names:
                record.__dict__[key] = REDACTED
            else:
                record.__dict__[key] = self._clean(record.__dict__[key])
        if isinstance(record.args, dict):
            record.args = self._clean(record.args)
        return True


def configure_logging(level: str = "INFO", policy: Policy | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    if policy is not None:
        handler.addFilter(Redact(personal_names(policy)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
