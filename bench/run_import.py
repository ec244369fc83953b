"""`python -m bench.run_import FILE TENANT`: run the importer's `import_file` in a
fresh process (settings from PARCELVAULT_* variables), for builds whose CLI has no
`import` command yet."""

from __future__ import annotations

import sys
from pathlib import Path

from parcelvault.services.importer import import_file
from parcelvault.services.vault import build
from parcelvault.settings import Settings


def main() -> None:
    path, tenant = Path(sys.argv[1]), sys.argv[2]
    report = import_file(vault=build(Settings()), tenant_name=tenant, path=path)
    print(f"events {report.events_accepted} rejected lines {report.rejected_lines}")


if __name__ == "__main__":
    main()
