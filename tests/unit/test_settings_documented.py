from pathlib import Path

from parcelvault.settings import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_setting_is_documented_in_the_operations_guide() -> None:
    guide = OPERATIONS.read_text()
    undocumented = [
        f"PARCELVAULT_{name.upper()}"
        for name in Settings.model_fields
        if f"`PARCELVAULT_{name.upper()}`" not in guide
    ]
    assert undocumented == []
