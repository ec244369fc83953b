"""`make bench`: run the benchmarks, print each median beside its ceiling, and write
the results into docs/benchmarks.md. `python -m bench --help` for the options."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench import (
    batch_api,
    ceiling,
    erasure,
    import_file,
    keys,
    ledger,
    lookup,
    report,
    retention,
)
from bench.common import BenchError, Result, log, machine

ALL = (
    "import",
    "batch",
    "lookup",
    "recipient",
    "merchant",
    "ledger",
    "keys",
    "retention",
    "erasure",
)
# benchmark name -> tier of the lookup benchmark
LOOKUPS = {"lookup": "public", "recipient": "recipient", "merchant": "merchant"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated: " + ", ".join(ALL))
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 10), metavar="1-9")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and one round; results not written"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a goal is missed")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in ALL]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ALL)}")
        return 2
    rounds = 1 if args.quick else args.rounds
    try:
        tiers = tuple(tier for name, tier in LOOKUPS.items() if name in chosen)
        if tiers:
            lookup.require_wrk()
        if "ledger" in chosen:
            ledger.require_pymerkle()
        about = machine()
        log("machine: " + ", ".join(f"{k} {v}" for k, v in about.items()))
        results: list[Result] = []
        began = time.monotonic()
        writes = {"import", "batch"} & set(chosen)
        ceiling_rows = ceiling.rows(20_000 if args.quick else 200_000) if writes else []
        with tempfile.TemporaryDirectory(prefix="parcelvault-bench-") as tmp:
            workdir = Path(tmp)
            if "import" in chosen:
                log("import:")
                if args.quick:
                    import_file.TARGET_EVENTS = 20_000
                results += import_file.run(workdir, rounds=rounds, ceiling_rows=ceiling_rows)
            if "batch" in chosen:
                log("batch API:")
                batches = 5 if args.quick else 40
                results += batch_api.run(
                    workdir, rounds=rounds, batches=batches, ceiling_rows=ceiling_rows
                )
            if tiers:
                log(f"lookups ({', '.join(tiers)}):")
                seconds = 3 if args.quick else 10
                results += lookup.run(
                    workdir, rounds=rounds, seconds=seconds, workers=(1, 2), tiers=tiers
                )
            if "ledger" in chosen:
                log("ledger:")
                results += ledger.run(workdir, rounds=rounds, quick=args.quick)
            if "keys" in chosen:
                log("key rotation:")
                results += keys.run(workdir, rounds=rounds, quick=args.quick)
            if "erasure" in chosen:
                log("erasure:")
                results += erasure.run(workdir, rounds=rounds, quick=args.quick)
            if "retention" in chosen:
                log("retention:")
                results += retention.run(workdir, rounds=rounds, quick=args.quick)
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    log(f"\nfinished in {time.monotonic() - began:.0f} s; medians of {rounds} round(s)\n")
    log(report.terminal_table(results))
    if not args.quick and not args.no_docs and set(chosen) == set(ALL):
        settings = "make bench" if argv == [] else "python -m bench " + " ".join(argv)
        log(f"\nwrote {report.write_doc(results, about, settings)}")
    missed = [r for r in results if r.passed is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
