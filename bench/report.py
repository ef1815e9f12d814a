"""Writing a run's results: <name>.json (every number), <name>-<scenario>.png, summary.md.

The plots are side by side by construction: each puts the Switchboard figure next to the
alternative measured in the same run. ``summary.md`` holds the ratios and the targets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

COLORS = {
    "gateway": "#1f77b4",
    "aiohttp-baseline": "#ff7f0e",
    "grpc-gateway": "#2ca02c",
    "direct-grpc": "#7f7f7f",
}


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def _bars(axes: Axes, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        xs = [g + index * width for g in range(len(groups))]
        axes.bar(xs, values, width, label=label, color=COLORS.get(label))
    axes.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=8)


def _plot_rest(data: dict[str, Any], axes: list[Axes]) -> None:
    methods = list(data["methods"])
    fronts = list(next(iter(data["methods"].values()))["runs"])
    rps = {f: [data["methods"][m]["runs"][f]["rps"] for m in methods] for f in fronts}
    p99 = {
        f: [data["methods"][m]["runs"][f]["latency"].get("p99_ms", 0) for m in methods]
        for f in fronts
    }
    _bars(axes[0], methods, rps, "requests/s")
    axes[0].set_title("REST unary: requests/s")
    _bars(axes[1], methods, p99, "p99 latency (ms)")
    axes[1].set_title("REST unary: p99 latency")
    cpu_fronts = [f for f in fronts if f != "direct-grpc"]
    cpu = {
        f: [data["methods"][m]["runs"][f].get("front_cpu_s_per_1k") or 0 for m in methods]
        for f in cpu_fronts
    }
    _bars(axes[2], methods, cpu, "front CPU ms per request")
    axes[2].set_title("REST unary: front CPU per request")


def _plot_fanout(data: dict[str, Any], axes: list[Axes]) -> None:
    counts = list(data["runs"])
    paths = {
        "gateway SSE (shared)": "gateway_sse",
        "gateway SSE (--no-share)": "gateway_sse_private",
        "direct gRPC": "direct_grpc",
    }
    paths = {k: v for k, v in paths.items() if all(v in data["runs"][c] for c in data["runs"])}
    rate = {
        k: [data["runs"][c][v]["deliveries_per_s"] or 0 for c in counts] for k, v in paths.items()
    }
    p99 = {
        k: [data["runs"][c][v]["latency"].get("p99_ms", 0) for c in counts]
        for k, v in paths.items()
    }
    _bars(axes[0], [f"{c} subs" for c in counts], rate, "deliveries/s")
    axes[0].axhline(20_000, color="red", linestyle="--", linewidth=1)
    axes[0].set_title("Fan-out: deliveries/s (target line 20,000)")
    _bars(axes[1], [f"{c} subs" for c in counts], p99, "publish→receive p99 (ms)")
    axes[1].set_title("Fan-out: p99 latency")


def _plot_idle(data: dict[str, Any], axes: list[Axes]) -> None:
    kinds = list(data["runs"])
    values = {"KB per connection": [data["runs"][k]["total_kb_per_connection"] for k in kinds]}
    _bars(axes[0], kinds, values, "KB per idle connection (gateway + service)")
    axes[0].axhline(50, color="red", linestyle="--", linewidth=1)
    axes[0].set_title(f"Idle connections at {data['connections']:,} (SSE target line 50 KB)")


def _plot_converse(data: dict[str, Any], axes: list[Axes]) -> None:
    paths = {"gateway WebSocket": data["gateway_websocket"], "direct gRPC": data["direct_grpc"]}
    _bars(
        axes[0], ["round trips/s"], {k: [v["round_trips_per_s"]] for k, v in paths.items()}, "per s"
    )
    axes[0].set_title("Converse: post→own event round trips/s")
    lat = {
        k: [v["latency"].get("p50_ms", 0), v["latency"].get("p99_ms", 0)] for k, v in paths.items()
    }
    _bars(axes[1], ["p50", "p99"], lat, "ms")
    axes[1].set_title("Converse: round trip latency")


def _plot_transcode(data: dict[str, Any], axes: list[Axes]) -> None:
    rows = [r for r in data["rows"] if r.get("speedup")]
    axes[0].barh([r["case"] for r in rows], [r["speedup"] for r in rows], color=COLORS["gateway"])
    axes[0].axvline(1.0, color="red", linestyle="--", linewidth=1)
    axes[0].set_xlabel("speedup over json_format (>1: gateway faster)")
    axes[0].set_title("Transcoding: gateway vs json_format")
    axes[0].tick_params(axis="y", labelsize=7)


def _plot_engine(data: dict[str, Any], axes: list[Axes]) -> None:
    engines = {k: v for k, v in data["engines"].items() if isinstance(v, dict)}
    rows = engines["memory"]["publish"]
    labels = [f"{r['subscribers']} subs" for r in rows]
    series = {
        f"{k} engine": [r.get("publishes_per_s") or 0 for r in v["publish"]]
        for k, v in engines.items()
    }
    _bars(axes[0], labels, series, "publishes/s")
    axes[0].set_title("Engine: publishes/s by live subscribers")


PLOTS: dict[str, tuple[int, Callable[[dict[str, Any], list[Axes]], None]]] = {
    "rest": (3, _plot_rest),
    "fanout": (2, _plot_fanout),
    "idle": (1, _plot_idle),
    "converse": (2, _plot_converse),
    "transcode": (1, _plot_transcode),
    "engine": (1, _plot_engine),
}


def write_plots(results: dict[str, Any], directory: Path, name: str) -> list[Path]:
    written = []
    for scenario, data in results["scenarios"].items():
        if scenario not in PLOTS or "error" in data:
            continue
        panels, draw = PLOTS[scenario]
        height = 6 if scenario == "transcode" else 4
        figure, axes = plt.subplots(1, panels, figsize=(6 * panels, height), squeeze=False)
        try:
            draw(data, list(axes[0]))
            figure.tight_layout()
            path = directory / f"{name}-{scenario}.png"
            figure.savefig(path, dpi=90)
            written.append(path)
        except (KeyError, TypeError) as error:  # a partial result: say so, keep the others
            print(f"bench: no {scenario} plot ({type(error).__name__}: {error})")
        finally:
            plt.close(figure)
    return written
