import re
from pathlib import Path

from parcelvault.settings import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_setting_has_a_row_in_the_operations_guide() -> None:
    named = {
        name
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("| `PARCELVAULT_")
        for name in re.findall(r"`(PARCELVAULT_[A-Z0-9_]+)`", line.split("|")[1])
    }
    undocumented = [
        f"PARCELVAULT_{name.upper()}"
        for name in Settings.model_fields
        if f"PARCELVAULT_{name.upper()}" not in named
    ]
    assert undocumented == []
