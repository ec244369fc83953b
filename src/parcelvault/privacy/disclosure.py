"""Disclosure: the only step that turns sealed-and-opened personal values into what
a viewer tier may see. Views are built from its output, never from raw values."""

from __future__ import annotations

from collections.abc import Mapping

from parcelvault.privacy import masking
from parcelvault.privacy.policy import Exposure, Policy


def disclose(
    values: Mapping[str, str], *, record: str, tier: str, policy: Policy
) -> dict[str, str]:
    """The form of each personal value of one record that `tier` may see.

    Fields the policy hides from the tier are absent from the result; a field the
    policy does not know is never passed through.
    """
    shown: dict[str, str] = {}
    for rule in policy.fields_of(record):
        value = values.get(rule.name)
        if value is None:
            continue
        exposure = rule.exposure_for(tier)
        if exposure is Exposure.FULL:
            shown[rule.name] = value
        elif exposure in (Exposure.MASKED, Exposure.GENERALIZED):
            masked = masking.apply(rule.mask, value)
            if masked:
                shown[rule.name] = masked
    return shown


def fields_needed(*, record: str, tier: str, policy: Policy) -> frozenset[str]:
    """Personal fields worth opening for a tier: the ones it sees in some form."""
    return policy.visible_fields(record, tier)
