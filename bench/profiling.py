"""``--profile``: where the time goes when a target is missed.

- rest (also when req/s met the target but the gateway spends > 5 % more CPU per request
  than the baseline): py-spy samples the gateway (and, separately, the aiohttp baseline) while
  wrk drives each method; the collapsed stacks go to results/profiles/, and the top functions by own
  time and by inclusive time go into the results.
- fanout: py-spy samples the gateway and the service while 1,000 SSE subscribers receive.
- transcode: cProfile of every case slower than json_format.
- idle: no sampler; the per-process KB split in the results is the evidence.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench import fanout, loadgen, rest, transcode
from bench.procs import Server, stack, start_aiohttp_baseline

SAMPLE_S = 8
RATE_HZ = 250
TOP = 15
PROJECT_CODE = ("gateway/", "services/", "bench/baselines/")
ENTRY_FRAMES = ("<module> ", "main ")  # process entry points: on every stack, say nothing
_LINE = re.compile(r":\d+\)$")


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


class Sampler:
    """py-spy recording one process for SAMPLE_S seconds in a background thread."""

    def __init__(self, server: Server, output: Path) -> None:
        self.output = output
        self.argv = [
            _py_spy() or "py-spy", "record", "--pid", str(server.pid), "--duration", str(SAMPLE_S),
            "--rate", str(RATE_HZ), "--nonblocking", "--format", "raw", "--output", str(output),
        ]  # fmt: skip
        self.error = ""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        done = subprocess.run(
            self.argv, capture_output=True, text=True, timeout=SAMPLE_S + 60, check=False
        )
        if done.returncode != 0:
            self.error = done.stderr.strip()[-500:]

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


def _without_line(frame: str) -> str:
    """``name (file.py:12)`` → ``name (file.py)``: inclusive time per function, not per line."""
    return _LINE.sub(")", frame)


def top_functions(collapsed: Path) -> dict[str, Any]:
    """Per function, the percentage of samples: own (innermost frame) for all code, and
    inclusive (anywhere on the stack) for the project's own functions."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        total += count
        own[frames[-1]] += count
        for function in {_without_line(frame) for frame in frames}:
            inclusive[function] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return (
            [(f, round(n / total * 100, 1)) for f, n in counter.most_common(TOP)] if total else []
        )

    ours = Counter(
        {
            f: n
            for f, n in inclusive.items()
            if any(p in f for p in PROJECT_CODE) and not f.startswith(ENTRY_FRAMES)
        }
    )
    return {
        "samples": total,
        "own_percent": share(own),
        "inclusive_percent_project_code": share(ours),
    }


def _sample_during(servers: list[Server], directory: Path, label: str, load: Any) -> dict[str, Any]:
    samplers = [Sampler(s, directory / f"{label}-{s.name}.txt") for s in servers]
    for sampler in samplers:
        sampler.__enter__()
    load()
    for sampler in samplers:
        sampler.__exit__()
    out: dict[str, Any] = {}
    for sampler, server in zip(samplers, servers, strict=True):
        if sampler.error or not sampler.output.exists():
            out[server.name] = {"error": sampler.error or "py-spy wrote nothing"}
        else:
            out[server.name] = {"collapsed": str(sampler.output), **top_functions(sampler.output)}
    return out


def _rest(directory: Path, scratch: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with stack(scratch) as (service, gateway):
        assert gateway is not None
        rest.create_room(service.address, rest.ROOM_ID)
        baseline = start_aiohttp_baseline(scratch, service.address)
        try:
            for name, template in rest.METHODS.items():
                for front in (gateway, baseline):
                    target = loadgen.HttpTarget(
                        template.method, front.url + template.url, template.body
                    )

                    def load(target: loadgen.HttpTarget = target) -> None:
                        loadgen.wrk_run(
                            target,
                            scratch,
                            connections=rest.CONNECTIONS,
                            warmup_s=0,
                            duration_s=SAMPLE_S,
                        )

                    label = f"rest-{name}"
                    found[label] = _sample_during([front], directory, label, load)[front.name]
        finally:
            baseline.stop()
    return found


def _fanout(directory: Path, scratch: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def observe(servers: list[Server], publish: Any) -> None:
        found["profiles"] = _sample_during(servers, directory, "fanout-1000", publish)

    found["run_while_sampled"] = fanout._one_run("sse", 1_000, SAMPLE_S, scratch, observe=observe)
    return found


def _transcode(data: dict[str, Any], directory: Path) -> dict[str, Any]:
    slow = {
        row["case"]
        for row in data.get("rows", [])
        if row.get("speedup") is not None and row["speedup"] < 1.0
    }
    cases = [c for c in transcode.all_cases() if c.name in slow and c.in_target]
    found = {}
    for case in cases:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5_000):
            case.gateway()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(TOP)
        path = directory / f"transcode-{case.name.replace(' ', '_')}.txt"
        path.write_text(text.getvalue())
        found[case.name] = {"cprofile": str(path), "top": text.getvalue().splitlines()[:40]}
    return found


def _costlier(data: dict[str, Any]) -> bool:
    """REST that met its req/s target but spends over 5 % more CPU per request than the
    baseline is profiled too: on a busier machine that is where the ratio tips."""
    methods = data.get("methods", {}).values()
    cpu = [m.get("ratios", {}).get("gateway_vs_aiohttp_cpu_per_1k") for m in methods]
    return any(value is not None and value > 1.05 for value in cpu)


def profile_misses(results: dict[str, Any], out: Path, scratch: Path) -> dict[str, Any]:
    if _py_spy() is None:
        return {"error": "py-spy absent: pip install py-spy (in the [bench] extra)"}
    directory = out / "profiles"
    directory.mkdir(parents=True, exist_ok=True)
    scenarios = results["scenarios"]
    found: dict[str, Any] = {}
    for name, data in scenarios.items():
        if data.get("target_met") is not False and not _costlier(data):
            continue
        print(f"bench: profiling {name} (target missed) …", flush=True)
        try:
            if name == "rest":
                found[name] = _rest(directory, scratch)
            elif name == "fanout":
                found[name] = _fanout(directory, scratch)
            elif name == "transcode":
                found[name] = _transcode(data, directory)
        except Exception as error:  # a failed profile is reported, the results still written
            found[name] = {"error": f"{type(error).__name__}: {error}"}
    return found
