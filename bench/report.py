"""The final table, on the terminal and in docs/benchmarks.md (between the result
markers; the hand-written rest of that file is left alone)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Result, fmt

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START = "<!-- results:start (written by `make bench`) -->"
END = "<!-- results:end -->"


def _verdict(result: Result) -> str:
    passed = result.passed
    return "-" if passed is None else ("pass" if passed else "FAIL")


def rows(results: Sequence[Result]) -> list[list[str]]:
    return [
        [
            r.name,
            f"{fmt(r.value)} {r.unit}",
            f"{fmt(r.ceiling)} {r.unit if r.unit != 'events/s' else 'rows/s'}",
            f"{r.ratio:.2f}×" if r.ratio < 10 else f"{r.ratio:.1f}×",
            r.goal_text(),
            _verdict(r),
        ]
        for r in results
    ]


HEADER = ["figure (median)", "measured", "ceiling (same run)", "ratio", "goal", "result"]


def terminal_table(results: Sequence[Result]) -> str:
    table = [HEADER, *rows(results)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = []
    for n, row in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("ceilings:")
    for name in dict.fromkeys(r.ceiling_name for r in results):
        lines.append(f"  {name}")
    return "\n".join(lines)


def _rounds(values: Sequence[float]) -> str:
    return ", ".join(fmt(v) for v in values)


def markdown(results: Sequence[Result], machine: dict[str, str], settings: str) -> str:
    out = [
        START,
        "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} with `{settings}`.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine.items()),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(row) + " |" for row in rows(results)),
        "",
        "Every round, figure and ceiling:",
        "",
        "| figure | rounds | ceiling | ceiling rounds |",
        "|---|---|---|---|",
        *(
            f"| {r.name} | {_rounds(r.rounds)} | {r.ceiling_name} | {_rounds(r.ceiling_rounds)} |"
            for r in results
        ),
        "",
        END,
    ]
    return "\n".join(out)


def write_doc(results: Sequence[Result], machine: dict[str, str], settings: str) -> Path:
    block = markdown(results, machine, settings)
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    return DOC
