"""Switchboard's generic gRPC gateway: REST/JSON (and streaming bridges) for any gRPC backend
whose methods carry ``google.api.http`` rules.

The public surface is below; everything else is internal. Names are imported lazily, so
importing a sans-IO module (``gateway.httprule``, ``gateway.policy``…) never loads aiohttp or
grpc.aio through this package.

    from gateway import Settings, build_app
    app = build_app(Settings(backends={"*": ("127.0.0.1:50051",)}))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import build_app
    from gateway.bridges import CallContext, register
    from gateway.config import ConfigError, Settings, settings_from_args, settings_from_toml
    from gateway.descriptors import (
        DescriptorError,
        from_descriptor_set,
        from_modules,
        from_reflection,
    )
    from gateway.routes import Cardinality, Route, RouteError, build_route_table
    from gateway.upstream import Upstream

__all__ = [
    "CallContext",
    "Cardinality",
    "ConfigError",
    "DescriptorError",
    "Route",
    "RouteError",
    "Settings",
    "Upstream",
    "build_app",
    "build_route_table",
    "from_descriptor_set",
    "from_modules",
    "from_reflection",
    "register",
    "settings_from_args",
    "settings_from_toml",
]

_HOMES = {
    "build_app": "gateway.app",
    "CallContext": "gateway.bridges",
    "register": "gateway.bridges",
    "ConfigError": "gateway.config",
    "Settings": "gateway.config",
    "settings_from_args": "gateway.config",
    "settings_from_toml": "gateway.config",
    "DescriptorError": "gateway.descriptors",
    "from_descriptor_set": "gateway.descriptors",
    "from_modules": "gateway.descriptors",
    "from_reflection": "gateway.descriptors",
    "Cardinality": "gateway.routes",
    "Route": "gateway.routes",
    "RouteError": "gateway.routes",
    "build_route_table": "gateway.routes",
    "Upstream": "gateway.upstream",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
