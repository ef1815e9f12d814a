"""``python -m bench [--full] [--only NAME,...] [--profile]``: run the benchmarks, write results.

Quick profile (default, under 5 minutes on 2 cores): 100 and 1,000 SSE subscribers, 1,000
idle connections, short REST runs. ``--full``: 5,000 subscribers and idle connections,
longer runs. ``--only transcode,engine`` runs just those scenarios (results in
``<profile>-<names>.json``; summary.md, or summary-full.md for ``--full``, is written only
by a complete run). ``--profile`` records py-spy profiles of the gateway for every scenario
that missed its target.
A scenario that fails is recorded as an error with its traceback and the run goes on;
the exit status is 1 when any scenario failed to run (a missed target is not a failure).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import converse, engine, fanout, idle, machine, procs, report, rest, summary, transcode

RESULTS = Path(__file__).resolve().parent / "results"
Scenario = Callable[[bool, Path], dict[str, Any]]
SCENARIOS: dict[str, Scenario] = {
    "transcode": lambda full, scratch: transcode.run(full=full),
    "engine": lambda full, scratch: engine.run(full=full),
    "rest": lambda full, scratch: rest.run(full=full, scratch=scratch),
    "fanout": lambda full, scratch: fanout.run(full=full, scratch=scratch),
    "idle": lambda full, scratch: idle.run(full=full, scratch=scratch),
    "converse": lambda full, scratch: converse.run(full=full, scratch=scratch),
}


def _names(text: str | None) -> list[str]:
    if not text:
        return list(SCENARIOS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"python -m bench: unknown scenario(s) {', '.join(unknown)}; "
            f"known: {', '.join(SCENARIOS)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run Switchboard's benchmarks; results go to bench/results/.",
    )
    parser.add_argument(
        "--full", action="store_true", help="the full profile (5,000 connections, longer runs)"
    )
    parser.add_argument(
        "--only", metavar="NAME[,NAME]", help=f"run only these scenarios: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results directory (default bench/results)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy profile the gateway where a target is missed"
    )
    return parser


def _run_one(name: str, full: bool, scratch: Path) -> dict[str, Any]:
    print(f"bench: {name} …", flush=True)
    started = time.monotonic()
    try:
        data = SCENARIOS[name](full, scratch)
    except Exception as error:  # recorded in the results; the other scenarios still run
        data = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        print(f"bench: {name} FAILED: {data['error']}", flush=True)
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    data["load_average_after"] = machine.load_average()
    verdict = {True: "target met", False: "TARGET MISSED", None: ""}[data.get("target_met")]
    print(f"bench: {name} done in {data['elapsed_s']} s {verdict}", flush=True)
    return data


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = _names(args.only)
    profile = "full" if args.full else "quick"
    name = profile if args.only is None else f"{profile}-{'-'.join(names)}"
    fd_limit = procs.raise_fd_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    results: dict[str, Any] = {
        "name": name,
        "profile": profile,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine.describe(), "fd_limit": fd_limit},
        "scenarios": {},
    }
    for scenario in names:
        results["scenarios"][scenario] = _run_one(scenario, args.full, scratch)
    if args.profile:
        from bench import profiling

        results["profiles"] = profiling.profile_misses(results, args.out, scratch)
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["load_average_at_end"] = machine.load_average()
    report.write_json(results, args.out / f"{name}.json")
    plots = report.write_plots(results, args.out, name)
    text = summary.render(results)
    if args.only is None:  # the quick profile's page is summary.md, the full one's summary-full.md
        (args.out / ("summary-full.md" if args.full else "summary.md")).write_text(text)
    print(text)
    print(f"bench: wrote {args.out / (name + '.json')} and {len(plots)} plot(s)")
    failed = [n for n, data in results["scenarios"].items() if "error" in data]
    if failed:
        print(f"bench: server logs kept in {scratch}", file=sys.stderr)
        return 1
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
