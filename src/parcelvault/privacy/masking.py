"""Lower-tier forms of personal values. Each returns a value safe for the tier that
the policy gives the `masked` exposure; none of them returns its input unchanged."""

from __future__ import annotations

import re

from parcelvault.privacy.policy import Mask


def initials(name: str) -> str:
    parts = [p for p in re.split(r"[\s\-]+", name.strip()) if p]
    if not parts:
        return ""
    chosen = [parts[0], parts[-1]] if len(parts) > 1 else parts[:1]
    return " ".join(f"{p[0].upper()}." for p in chosen)


def email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}…@{domain}" if domain else "…"


def last_digits(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return f"…{digits[-2:]}" if len(digits) >= 4 else "…"


def postcode_prefix(postcode: str) -> str:
    """The outward part of a postcode with a space (UK 'SW1A 1AA' -> 'SW1A'), else the
    first two characters ('10115' -> '10…')."""
    cleaned = postcode.strip().upper()
    if " " in cleaned:
        return cleaned.split()[0]
    return f"{cleaned[:2]}…" if len(cleaned) > 2 else "…"


def round_1km(geo: str) -> str:
    """'lat,lon' rounded to two decimals (about 1 km)."""
    try:
        lat_text, lon_text = geo.split(",")
        return f"{round(float(lat_text), 2):.2f},{round(float(lon_text), 2):.2f}"
    except ValueError:
        return ""


def apply(mask: Mask, value: str) -> str | None:
    if mask is Mask.INITIALS:
        return initials(value)
    if mask is Mask.EMAIL:
        return email(value)
    if mask is Mask.LAST_DIGITS:
        return last_digits(value)
    if mask is Mask.POSTCODE_PREFIX:
        return postcode_prefix(value)
    if mask is Mask.ROUND_1KM:
        return round_1km(value)
    if mask is Mask.SIGNED_FOR:
        return "signed for"
    return None
