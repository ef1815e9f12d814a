"""What the numbers were measured on: CPU, memory, versions, and how busy the machine was."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from typing import Any

import psutil


def _version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "absent"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return (
        (done.stdout or done.stderr).strip().splitlines()[0]
        if (done.stdout or done.stderr)
        else "?"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, Any]:
    import aiohttp
    import google.protobuf
    import grpc

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "aiohttp": aiohttp.__version__,
        "wrk": _version(["wrk", "--version"]),
        "go": _version(["go", "version"]),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews absolute numbers."""
    return [round(x, 2) for x in os.getloadavg()]
