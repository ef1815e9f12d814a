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


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _header(*names: str) -> list[str]:
    return [_row(*names), _row(*(["---"] * len(names)))]


def _rest(data: dict[str, Any]) -> list[str]:
    lines = ["## REST unary (wrk → front → service)", ""]
    lines += _header(
        "method", "front", "req/s", "p50 ms", "p99 ms", "front CPU ms/req", "service CPU ms/req"
    )
    for method, block in data["methods"].items():
        for front, run in block["runs"].items():
            lat = run["latency"]
            cpu = run.get("front_cpu_s_per_1k")
            lines.append(
                _row(method, front, _fmt(run["rps"]), _fmt(lat.get("p50_ms")),
                     _fmt(lat.get("p99_ms")), _fmt(cpu), _fmt(run.get("service_cpu_s_per_1k")))
            )  # fmt: skip
    lines.append("")
    for method, block in data["methods"].items():
        r = block["ratios"]
        lines.append(
            f"- {method}: gateway/aiohttp req/s **{_fmt(r['gateway_vs_aiohttp_rps'], 'x')}**, "
            f"gateway/direct gRPC {_fmt(r['gateway_vs_direct_grpc_rps'], 'x')}, "
            f"gateway/grpc-gateway {_fmt(r['gateway_vs_grpc_gateway_rps'], 'x')}, "
            f"CPU per request gateway/aiohttp {_fmt(r['gateway_vs_aiohttp_cpu_per_1k'], 'x')}; "
            f"aiohttp baseline/grpc-gateway {_fmt(r.get('aiohttp_vs_grpc_gateway_rps'), 'x')}; "
            f"gateway/gateway --no-tunnel {_fmt(r.get('gateway_vs_no_tunnel_rps'), 'x')}, "
            f"gateway --no-tunnel/aiohttp {_fmt(r.get('no_tunnel_vs_aiohttp_rps'), 'x')}"
        )
    lines.append(f"- grpc-gateway peer: {data.get('grpc_gateway')}")
    return lines


def _fanout(data: dict[str, Any]) -> list[str]:
    lines = ["## SSE fan-out (one room, publisher at a fixed rate)", ""]
    lines += _header(
        "subscribers", "path", "deliveries/s (offered)", "p50 ms", "p99 ms", "missing at stop",
        "order violations", "stream errors",
    )  # fmt: skip
    for count, block in data["runs"].items():
        for path in ("gateway_sse", "gateway_sse_private", "direct_grpc"):
            if path not in block:  # results written before --no-share existed
                continue
            run, lat = block[path], block[path]["latency"]
            rate = f"{_fmt(run['deliveries_per_s'])} ({_fmt(run['offered_deliveries_per_s'])})"
            lines.append(
                _row(count, path, rate, _fmt(lat.get("p50_ms")), _fmt(lat.get("p99_ms")),
                     run["missing_at_stop"], run["order_violations"], run["stream_errors"])
            )  # fmt: skip
        ratio = _fmt(block["sse_vs_grpc_deliveries_per_s"], "x")
        lines.append(_row(count, "SSE/gRPC ratio", ratio, "", "", "", "", ""))
        if "shared_vs_private_deliveries_per_s" in block:
            shared = _fmt(block["shared_vs_private_deliveries_per_s"], "x")
            lines.append(_row(count, "shared/private SSE ratio", shared, "", "", "", "", ""))
    lines.append("")
    for count, block in data["runs"].items():
        sse = block["gateway_sse"]
        cpu = sse.get("gateway_cpu_s_per_1k_deliveries")
        service_cpu = sse.get("service_cpu_s_per_1k_deliveries")
        line = (
            f"- {count} subscribers: exactly once in order: {sse['exactly_once_in_order']}; "
            f"CPU per delivery gateway {_fmt(cpu)} ms, service {_fmt(service_cpu)} ms"
        )
        private = block.get("gateway_sse_private")
        if private is not None:
            line += (
                f"; with --no-share: exactly once in order {private['exactly_once_in_order']}, "
                f"gateway {_fmt(private.get('gateway_cpu_s_per_1k_deliveries'))} ms, "
                f"service {_fmt(private.get('service_cpu_s_per_1k_deliveries'))} ms"
            )
        lines.append(line)
    return lines


def _idle(data: dict[str, Any]) -> list[str]:
    lines = [f"## Idle connections ({data['connections']:,} each)", ""]
    lines += _header(
        "kind", "KB/conn total", "gateway KB", "service KB", "gateway idle CPU %",
        "service idle CPU %", "all subscribed",
    )  # fmt: skip
    for kind, run in data["runs"].items():
        lines.append(
            _row(kind, _fmt(run["total_kb_per_connection"]),
                 _fmt(run.get("gateway_kb_per_connection")),
                 _fmt(run.get("service_kb_per_connection")),
                 _fmt(run.get("gateway_idle_cpu_percent")),
                 _fmt(run.get("service_idle_cpu_percent")), run["all_subscribed"])
        )  # fmt: skip
    lines.append("")
    lines.append(
        f"- SSE/direct gRPC memory: {_fmt(data['sse_vs_direct_grpc_kb'], 'x')}; "
        f"shared/private SSE memory: {_fmt(data.get('shared_vs_private_sse_kb'), 'x')}; "
        f"WebSocket/SSE: {_fmt(data['websocket_vs_sse_kb'], 'x')}"
    )
    return lines


def _converse(data: dict[str, Any]) -> list[str]:
    lines = ["## WebSocket Converse (100 conversations, post → own event)", ""]
    lines += _header("path", "round trips/s", "p50 ms", "p99 ms", "errors")
    for label, key in (("gateway WebSocket", "gateway_websocket"), ("direct gRPC", "direct_grpc")):
        run = data[key]
        lines.append(
            _row(label, _fmt(run["round_trips_per_s"]), _fmt(run["latency"].get("p50_ms")),
                 _fmt(run["latency"].get("p99_ms")), run["errors"])
        )  # fmt: skip
    ratio = _fmt(data["websocket_vs_grpc_round_trips_per_s"], "x")
    lines.append("")
    lines.append(f"- WebSocket/gRPC round trips/s: **{ratio}**")
    return lines


def _transcode(data: dict[str, Any]) -> list[str]:
    lines = ["## Transcoding (µs per message; speedup = json_format / gateway)", ""]
    lines += _header("case", "gateway µs", "json_format µs", "speedup", "identical")
    for row in data["rows"]:
        lines.append(
            _row(row["case"], _fmt(row.get("gateway_us")), _fmt(row.get("json_format_us")),
                 _fmt(row.get("speedup"), "x"), row["identical_output"])
        )  # fmt: skip
    return lines


def _engine_lines(name: str, engine: dict[str, Any]) -> list[str]:
    lines = [f"- {name} ({engine['clock']}):"]
    for row in engine["publish"]:
        if "error" in row:
            lines.append(f"  - {row['subscribers']} subscribers: **FAILED**: {row['error']}")
            continue
        lines.append(
            f"  - {row['subscribers']} subscribers: {_fmt(row['publishes_per_s'])} publishes/s "
            f"({_fmt(row['vs_no_subscribers'], 'x')} of no subscribers), all delivered at "
            f"{_fmt(row['all_delivered_per_s'])}/s, lost {row['lost']}"
        )
    for row in engine["resume"]:
        if "error" in row:
            lines.append(f"  - resume after {row['missed_events']}: **FAILED**: {row['error']}")
            continue
        lines.append(
            f"  - resume after {row['missed_events']} missed events: p50 "
            f"{_fmt(row['resume']['p50_ms'])} ms "
            f"({_fmt(row['resume_vs_fresh_p50'], 'x')} a fresh subscribe)"
        )
    return lines


def _engine(data: dict[str, Any]) -> list[str]:
    engines = data["engines"]
    lines = ["## Engine (in process)", "", *_engine_lines("memory", engines["memory"])]
    if isinstance(engines.get("redis"), dict):
        lines += _engine_lines("redis", engines["redis"])
        ratio = _fmt(engines.get("redis_vs_memory_publishes"), "x")
        lines.append(f"- redis/memory publishes/s (no subscribers): {ratio}")
    else:
        lines.append(f"- redis: {engines.get('redis')}")
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
            verdict = _verdict(data.get("target_met"))
            if data.get("target_note"):
                verdict += f" ({data['target_note']})"
            lines.append(f"| {name}: {data['target']} | {verdict} |")
        elif "error" in data:
            first_line = data["error"].splitlines()[0][:200]
            lines.append(f"| {name} | **FAILED TO RUN**: {first_line} (see the JSON) |")
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
