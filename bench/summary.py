"""summary.md: one short page of ratios and targets from a run's results."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}{suffix}" if value < 100 else f"{value:,.0f}{suffix}"
    return f"{value:,}{suffix}" if isinstance(value, int) else f"{value}{suffix}"


def _verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**MISSED**", None: "not measured at the stated size"}[met]


def _rest(data: dict[str, Any]) -> list[str]:
    lines = ["## REST unary (wrk → front → service)", ""]
    lines += ["| method | front | req/s | p50 ms | p99 ms | front CPU s/1k req |", "|---|---|---|---|---|---|"]
    for method, block in data["methods"].items():
        for front, run in block["runs"].items():
            lat = run["latency"]
            lines.append(
                f"| {method} | {front} | {_fmt(run['rps'])} | {_fmt(lat.get('p50_ms'))} | "
                f"{_fmt(lat.get('p99_ms'))} | {_fmt(run.get('front_cpu_s_per_1k'))} |"
            )
    lines.append("")
    for method, block in data["methods"].items():
        r = block["ratios"]
        lines.append(
            f"- {method}: gateway/aiohttp req/s **{_fmt(r['gateway_vs_aiohttp_rps'], '×')}**, "
            f"gateway/direct gRPC {_fmt(r['gateway_vs_direct_grpc_rps'], '×')}, "
            f"gateway/grpc-gateway {_fmt(r['gateway_vs_grpc_gateway_rps'], '×')}, "
            f"CPU per request gateway/aiohttp {_fmt(r['gateway_vs_aiohttp_cpu_per_1k'], '×')}"
        )
    lines.append(f"- grpc-gateway peer: {data.get('grpc_gateway')}")
    return lines


def _fanout(data: dict[str, Any]) -> list[str]:
    lines = ["## SSE fan-out (one room, publisher at a fixed rate)", ""]
    lines += [
        "| subscribers | path | deliveries/s (offered) | p50 ms | p99 ms | lost | order violations | stream errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count, block in data["runs"].items():
        for path in ("gateway_sse", "direct_grpc"):
            run = block[path]
            lines.append(
                f"| {count} | {path} | {_fmt(run['deliveries_per_s'])} ({_fmt(run['offered_deliveries_per_s'])}) | "
                f"{_fmt(run['latency'].get('p50_ms'))} | {_fmt(run['latency'].get('p99_ms'))} | "
                f"{run['lost']} | {run['order_violations']} | {run['stream_errors']} |"
            )
        lines.append(f"| {count} | SSE/gRPC ratio | {_fmt(block['sse_vs_grpc_deliveries_per_s'], '×')} | | | | | |")
    return lines


def _idle(data: dict[str, Any]) -> list[str]:
    lines = [f"## Idle connections ({data['connections']:,} each)", ""]
    lines += ["| kind | KB/conn total | gateway | service | all subscribed |", "|---|---|---|---|---|"]
    for kind, run in data["runs"].items():
        lines.append(
            f"| {kind} | {_fmt(run['total_kb_per_connection'])} | "
            f"{_fmt(run.get('gateway_kb_per_connection'))} | {_fmt(run.get('service_kb_per_connection'))} | "
            f"{run['all_subscribed']} |"
        )
    lines.append(f"- SSE/direct gRPC memory: {_fmt(data['sse_vs_direct_grpc_kb'], '×')}; "
                 f"WebSocket/SSE: {_fmt(data['websocket_vs_sse_kb'], '×')}")  # fmt: skip
    return lines


def _converse(data: dict[str, Any]) -> list[str]:
    ws, direct = data["gateway_websocket"], data["direct_grpc"]
    return [
        "## WebSocket Converse (100 conversations, post → own event)", "",
        "| path | round trips/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|",
        f"| gateway WebSocket | {_fmt(ws['round_trips_per_s'])} | {_fmt(ws['latency'].get('p50_ms'))} | "
        f"{_fmt(ws['latency'].get('p99_ms'))} | {ws['errors']} |",
        f"| direct gRPC | {_fmt(direct['round_trips_per_s'])} | {_fmt(direct['latency'].get('p50_ms'))} | "
        f"{_fmt(direct['latency'].get('p99_ms'))} | {direct['errors']} |",
        f"- WebSocket/gRPC round trips/s: **{_fmt(data['websocket_vs_grpc_round_trips_per_s'], '×')}**",
    ]  # fmt: skip


def _transcode(data: dict[str, Any]) -> list[str]:
    lines = ["## Transcoding (µs per message; speedup = json_format / gateway)", ""]
    lines += ["| case | gateway µs | json_format µs | speedup | identical |", "|---|---|---|---|---|"]
    for row in data["rows"]:
        lines.append(
            f"| {row['case']} | {_fmt(row.get('gateway_us'))} | {_fmt(row.get('json_format_us'))} | "
            f"{_fmt(row.get('speedup'), '×')} | {row['identical_output']} |"
        )
    return lines


def _engine(data: dict[str, Any]) -> list[str]:
    memory = data["engines"]["memory"]
    lines = ["## Engine (in process)", ""]
    for row in memory["publish"]:
        lines.append(
            f"- memory, {row['subscribers']} subscribers: {_fmt(row['publishes_per_s'])} publishes/s "
            f"({_fmt(row['vs_no_subscribers'], '×')} of no subscribers), lost {row['lost']}"
        )
    for row in memory["resume"]:
        lines.append(
            f"- resume after {row['missed_events']} missed events: p50 {_fmt(row['resume']['p50_ms'])} ms "
            f"({_fmt(row['resume_vs_fresh_p50'], '×')} a fresh subscribe)"
        )
    lines.append(f"- redis: {data['engines']['redis']}")
    return lines


SECTIONS = {
    "rest": _rest,
    "fanout": _fanout,
    "idle": _idle,
    "converse": _converse,
    "transcode": _transcode,
    "engine": _engine,
}


def targets(results: dict[str, Any]) -> list[str]:
    lines = ["| target | result |", "|---|---|"]
    for name, data in results["scenarios"].items():
        if "target" in data:
            lines.append(f"| {name}: {data['target']} | {_verdict(data.get('target_met'))} |")
        elif "error" in data:
            lines.append(f"| {name} | **FAILED TO RUN**: {data['error'][:200]} |")
    return lines


def render(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"# Benchmark summary — {results['profile']} profile, {results['finished_at']}",
        "",
        f"{machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, grpcio "
        f"{machine['grpcio']}; load average at start {machine['load_average_at_start']}, at end "
        f"{results['load_average_at_end']}. Every figure is measured in this one run; compare "
        "ratios, not absolute numbers, across machines. Full numbers: "
        f"`{results['name']}.json`; plots: `{results['name']}-*.png`.",
        "",
        "## Targets",
        "",
        *targets(results),
    ]
    for name, data in results["scenarios"].items():
        if name in SECTIONS and "error" not in data:
            lines += ["", *SECTIONS[name](data)]
    return "\n".join(lines) + "\n"
