"""The privacy policy model and its loader.

The policy is the single declaration of personal fields. Sealing, disclosure and
(later) retention, export and the notice page all read it; no other module lists
personal fields. Loading is strict: an unknown field, tier, exposure or mask, or a
missing key, is an error that names the source and the key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources

RECORD_FIELDS: dict[str, frozenset[str]] = {
    "shipment": frozenset(
        {
            "recipient.name",
            "recipient.email",
            "recipient.phone",
            "destination.street",
            "destination.postcode",
            "destination.notes",
            "origin.postcode",
        }
    ),
    "event": frozenset({"proof.received_by", "proof.signature", "proof.photo", "proof.geo"}),
}
"""Fields of each record that storage keeps only sealed. The policy must cover each."""

CATEGORIES = frozenset({"identity", "contact", "address", "location", "proof_of_delivery"})
PURPOSES = frozenset({"delivery", "notification", "support", "legal", "analytics"})
LEGAL_BASES = frozenset(
    {"contract", "legitimate_interest", "consent", "legal_obligation", "vital_interest"}
)
KNOWN_TIERS = (
    "public",
    "recipient",
    "merchant",
    "carrier",
    "courier",
    "support",
    "auditor",
    "admin",
)
STAFF_TIERS = frozenset({"support", "auditor", "admin"})
_RETENTION = re.compile(r"^(\d{1,5})d after (created|delivered)$")


class Exposure(StrEnum):
    FULL = "full"
    MASKED = "masked"
    GENERALIZED = "generalized"
    HIDDEN = "hidden"


class Mask(StrEnum):
    INITIALS = "initials"
    EMAIL = "email"
    LAST_DIGITS = "last_digits"
    POSTCODE_PREFIX = "postcode_prefix"
    ROUND_1KM = "round_1km"
    SIGNED_FOR = "signed_for"
    HIDDEN = "hidden"


class PolicyError(ValueError):
    def __init__(self, source: str, key: str, message: str, line: int | None = None) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {message}")
        self.source = source
        self.key = key
        self.line = line
        self.message = message


_SYNTAX_LINE = re.compile(r"at line (\d+)")
_FIELD_KEY = re.compile(r"^fields\.(?P<field>[a-z_]+\.[a-z_]+)(?:\.(?P<rest>[a-z_.]+))?")


def locate(text: str, key: str) -> int | None:
    """The 1-based line of a dotted policy key (e.g. `fields.recipient.name.mask`) in
    the policy text, best effort: the key's own line, else its table's header."""
    lines = text.splitlines()
    match = _FIELD_KEY.match(key)
    if match is None:
        top = key.split(".")[0]
        for number, line in enumerate(lines, 1):
            if line.startswith("["):
                break
            if line.split("=")[0].strip() == top:
                return number
        return None
    field_header = f'[fields."{match.group("field")}"]'
    rest = key[match.end("field") + 1 :].split(".") if match.group("rest") else []
    if len(rest) > 1:
        sub_header = f'[fields."{match.group("field")}".{rest[0]}]'
        found = _key_line(lines, sub_header, rest[1])
        if found is not None:
            return found
    return _key_line(lines, field_header, rest[0] if rest else None)


def _key_line(lines: list[str], header: str, name: str | None) -> int | None:
    start = next((n for n, line in enumerate(lines, 1) if line.strip() == header), None)
    if start is None or name is None:
        return start
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if line.startswith("["):
            break
        if line.split("=")[0].strip() == name:
            return number
    return start


@dataclass(frozen=True)
class Retention:
    days: int
    after: str

    def __str__(self) -> str:
        return f"{self.days}d after {self.after}"


@dataclass(frozen=True)
class FieldRule:
    name: str
    label: str
    record: str
    category: str
    purposes: tuple[str, ...]
    legal_basis: str
    retention: Retention
    mask: Mask
    exposure: dict[str, Exposure]
    reveal: frozenset[str] = frozenset()

    def exposure_for(self, tier: str) -> Exposure:
        return self.exposure.get(tier, Exposure.HIDDEN)


@dataclass(frozen=True)
class Policy:
    version: int
    tiers: tuple[str, ...]
    fields: dict[str, FieldRule]
    digest: str = ""
    """SHA-256 (hex) of the policy file's text, for the ledger's policy_change entries."""

    def fields_of(self, record: str) -> tuple[FieldRule, ...]:
        return self._by_record.get(record, ())

    def visible_fields(self, record: str, tier: str) -> frozenset[str]:
        """Fields of a record that a tier sees in some form (not hidden)."""
        key = (record, tier)
        if key not in self._visible:
            self._visible[key] = frozenset(
                rule.name
                for rule in self.fields_of(record)
                if rule.exposure_for(tier) is not Exposure.HIDDEN
            )
        return self._visible[key]

    @functools.cached_property
    def _visible(self) -> dict[tuple[str, str], frozenset[str]]:
        return {}

    @functools.cached_property
    def _by_record(self) -> dict[str, tuple[FieldRule, ...]]:
        grouped: dict[str, list[FieldRule]] = {}
        for rule in self.fields.values():
            grouped.setdefault(rule.record, []).append(rule)
        return {record: tuple(rules) for record, rules in grouped.items()}

    def is_personal(self, name: str) -> bool:
        return name in self.fields


def load_policy_text(text: str, source: str) -> Policy:
    try:
        policy = _load(text, source)
        return dataclasses.replace(policy, digest=hashlib.sha256(text.encode()).hexdigest())
    except PolicyError as exc:
        if exc.line is None:
            raise PolicyError(source, exc.key, exc.message, locate(text, exc.key)) from None
        raise


def _load(text: str, source: str) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _SYNTAX_LINE.search(str(exc))
        line = int(found.group(1)) if found else None
        raise PolicyError(source, "(syntax)", str(exc), line) from exc
    version = data.get("version")
    if version != 1:
        raise PolicyError(source, "version", "must be 1")
    tiers = data.get("tiers")
    if not isinstance(tiers, list) or not tiers:
        raise PolicyError(source, "tiers", "must be a non-empty list")
    for tier in tiers:
        if tier not in KNOWN_TIERS:
            raise PolicyError(source, "tiers", f"unknown tier {tier!r}")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict):
        raise PolicyError(source, "fields", "missing table [fields.*]")
    rules = {name: _field_rule(source, name, raw, tuple(tiers)) for name, raw in raw_fields.items()}
    for record, names in RECORD_FIELDS.items():
        for name in sorted(names - rules.keys()):
            raise PolicyError(source, f"fields.{name}", f"personal {record} field has no rule")
    return Policy(version=1, tiers=tuple(tiers), fields=rules)


def _field_rule(source: str, name: str, raw: object, tiers: tuple[str, ...]) -> FieldRule:
    key = f"fields.{name}"
    if not isinstance(raw, dict):
        raise PolicyError(source, key, "must be a table")
    record = next((rec for rec, names in RECORD_FIELDS.items() if name in names), None)
    if record is None:
        raise PolicyError(source, key, "unknown field")
    if raw.get("record", record) != record:
        raise PolicyError(source, f"{key}.record", f"must be {record!r}")
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip():
        raise PolicyError(source, f"{key}.label", "missing: how the privacy notice names it")
    category = _one_of(source, f"{key}.category", raw.get("category"), CATEGORIES)
    purposes = raw.get("purposes")
    if not isinstance(purposes, list) or not purposes:
        raise PolicyError(source, f"{key}.purposes", "must be a non-empty list")
    for purpose in purposes:
        _one_of(source, f"{key}.purposes", purpose, PURPOSES)
    legal_basis = _one_of(source, f"{key}.legal_basis", raw.get("legal_basis"), LEGAL_BASES)
    retention_text = raw.get("retention")
    if not isinstance(retention_text, str):
        raise PolicyError(source, f"{key}.retention", "missing (e.g. '90d after delivered')")
    match = _RETENTION.match(retention_text)
    if match is None:
        raise PolicyError(source, f"{key}.retention", f"cannot read {retention_text!r}")
    mask_name = _one_of(source, f"{key}.mask", raw.get("mask"), frozenset(Mask))
    exposure_raw = raw.get("exposure")
    if not isinstance(exposure_raw, dict):
        raise PolicyError(source, f"{key}.exposure", "must be a table of tier = exposure")
    exposure: dict[str, Exposure] = {}
    for tier, value in exposure_raw.items():
        if tier not in tiers:
            raise PolicyError(source, f"{key}.exposure.{tier}", "unknown tier")
        exposure[tier] = Exposure(
            _one_of(source, f"{key}.exposure.{tier}", value, frozenset(Exposure))
        )
    for tier in tiers:
        if tier not in exposure:
            raise PolicyError(source, f"{key}.exposure.{tier}", "missing")
    reveal = raw.get("reveal", [])
    if not isinstance(reveal, list):
        raise PolicyError(source, f"{key}.reveal", "must be a list of staff tiers")
    for tier in reveal:
        if tier not in STAFF_TIERS or tier not in tiers:
            raise PolicyError(
                source, f"{key}.reveal", f"{tier!r} is not a staff tier of this policy"
            )
    return FieldRule(
        name=name,
        label=label,
        record=record,
        category=category,
        purposes=tuple(purposes),
        legal_basis=legal_basis,
        retention=Retention(days=int(match.group(1)), after=match.group(2)),
        mask=Mask(mask_name),
        exposure=exposure,
        reveal=frozenset(reveal),
    )


def _one_of(source: str, key: str, value: object, allowed: frozenset[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(sorted(allowed))
        raise PolicyError(source, key, f"{value!r} is not one of: {choices}")
    return value


def default_policy_text() -> str:
    return resources.files("parcelvault.privacy").joinpath("default_policy.toml").read_text()


def load_default_policy() -> Policy:
    return load_policy_text(default_policy_text(), "default_policy.toml")


def risky_choices(policy: Policy) -> list[str]:
    """Warnings about a valid policy that exposes more than a tracking page should."""
    warnings = []
    for rule in policy.fields.values():
        public = rule.exposure_for("public")
        if public is Exposure.FULL:
            warnings.append(
                f"fields.{rule.name}: anyone with a tracking number sees it in full "
                f"({rule.category}); tracking numbers get shared and guessed"
            )
        elif public is not Exposure.HIDDEN and rule.category in ("contact", "proof_of_delivery"):
            warnings.append(f"fields.{rule.name}: shown to the public in part ({public.value})")
        if rule.retention.days > 3 * 365:
            warnings.append(f"fields.{rule.name}: kept for {rule.retention.days} days")
    return warnings
