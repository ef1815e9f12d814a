"""JSON Web Key Sets: parsing (pure) and keeping a ``KeyRing`` current from a file or URL.

``JwksRefresher`` loads the set once on entry (failing loudly), then refreshes it every
``refresh_seconds`` in a background task; each refresh replaces the ring's published keys, so a
new ``kid`` is picked up and a retired one dropped without a restart. ``refresh_for(kid)`` is
the ``Authenticator``'s unknown-kid hook: it fetches at most once per ``min_refresh_seconds``
however many unknown kids arrive (concurrent callers share one fetch), so a flood of forged
kids cannot hammer the identity provider. A failed background refresh keeps the old keys.

Keys are used only for signatures (``use`` absent or ``sig``) and only with the algorithms in
the allowlist: the JWK's own ``alg`` when it has one, else every algorithm its type permits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import aiohttp
import jwt

from gateway.auth import KeyRing, UnusableKey, VerificationKey, key_algorithms

__all__ = ["JwksError", "JwksFile", "JwksRefresher", "JwksSource", "JwksUrl", "parse_jwks"]

log = logging.getLogger(__name__)
MAX_JWKS_BYTES = 1024 * 1024


class JwksError(ValueError):
    """A key set that cannot be read or parsed; the message names its source."""


def parse_jwks(
    data: bytes | Mapping[str, Any], *, algorithms: frozenset[str], source: str = "jwks"
) -> tuple[list[VerificationKey], list[str]]:
    """The usable keys of a JWKS document and a note for each key skipped."""
    document = _document(data, source)
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(document["keys"]):
        try:
            key = _key(jwk, algorithms, source)
        except (UnusableKey, jwt.PyJWTError, TypeError, ValueError) as exc:
            skipped.append(f"{source}: key #{index}: {exc}")
            continue
        if key is not None:
            keys.append(key)
    return keys, skipped


def _document(data: bytes | Mapping[str, Any], source: str) -> Mapping[str, Any]:
    if isinstance(data, bytes):
        try:
            loaded = json.loads(data)
        except ValueError as exc:
            raise JwksError(f"{source}: not JSON: {exc}") from exc
    else:
        loaded = data
    if not isinstance(loaded, Mapping) or not isinstance(loaded.get("keys"), list):
        raise JwksError(f"{source}: a JWKS must be an object with a 'keys' list")
    return loaded


def _key(jwk: Any, allowed: frozenset[str], source: str) -> VerificationKey | None:
    if not isinstance(jwk, dict):
        raise TypeError("not an object")
    if jwk.get("use", "sig") != "sig":
        return None
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
    alg = jwk.get("alg")
    if alg is not None and alg not in allowed:
        raise UnusableKey(f"kid {kid!r}: algorithm {alg!r} is not allowed")
    parsed = jwt.PyJWK(jwk, algorithm=alg)
    key = parsed.key.encode() if isinstance(parsed.key, str) else parsed.key
    chosen = frozenset({alg}) if alg is not None else key_algorithms(key) & allowed
    if not chosen:
        raise UnusableKey(f"kid {kid!r}: no allowed algorithm fits this key type")
    return VerificationKey(key, chosen, kid, source)


class JwksSource(Protocol):
    """Where a JWKS document is read from; ``name`` appears in errors and logs."""

    name: str

    async def read(self) -> bytes: ...

    async def close(self) -> None: ...


class JwksFile:
    """A JWKS in a local file, re-read on every refresh (replace the file to rotate)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    async def read(self) -> bytes:
        try:
            return await asyncio.to_thread(self.path.read_bytes)
        except OSError as exc:
            raise JwksError(f"JWKS file {self.name!r}: {exc.strerror}") from exc

    async def close(self) -> None:
        return None


class JwksUrl:
    """A JWKS served over HTTP(S), fetched with aiohttp's client (one session per source)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.name = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def read(self) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(self.url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise JwksError(f"JWKS URL {self.url!r}: HTTP {resp.status}")
                body = await resp.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksError(f"JWKS URL {self.url!r}: {exc!r}") from exc
        if len(body) > MAX_JWKS_BYTES:
            raise JwksError(f"JWKS URL {self.url!r}: larger than {MAX_JWKS_BYTES} bytes")
        return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class JwksRefresher:
    """Keeps ``keyring``'s published keys equal to ``source``'s (see module docstring)."""

    def __init__(
        self,
        source: JwksSource,
        keyring: KeyRing,
        *,
        algorithms: frozenset[str],
        refresh_seconds: float = 300.0,
        min_refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.keyring = keyring
        self.algorithms = algorithms
        self.refresh_seconds = refresh_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.fetches = 0
        self._clock = clock
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None
        self._published: asyncio.Event | None = None

    async def refresh(self) -> None:
        """Fetch and publish now; raises ``JwksError`` (the ring keeps its keys then)."""
        self._last_attempt = self._clock()
        self.fetches += 1
        keys, skipped = parse_jwks(
            await self.source.read(), algorithms=self.algorithms, source=self.source.name
        )
        for note in skipped:
            log.warning("JWKS key skipped: %s", note)
        self.keyring.publish(keys)
        if self._published is not None:
            self._published.set()
        log.info("JWKS %s: %d key(s) published", self.source.name, len(keys))

    async def next_publish(self) -> None:
        """Wait until the next successful refresh has published its keys."""
        self._published = asyncio.Event()
        await self._published.wait()

    async def refresh_for(self, kid: str) -> bool:
        """Refresh because ``kid`` is unknown, rate-limited; whether ``kid`` is known after."""
        if self.keyring.has_kid(kid):
            return True
        if self._inflight is None:
            last = self._last_attempt
            if last is not None and self._clock() - last < self.min_refresh_seconds:
                return False
            self._inflight = asyncio.create_task(self._guarded_refresh())
        inflight = self._inflight
        await asyncio.shield(inflight)
        if self._inflight is inflight:
            self._inflight = None
        return self.keyring.has_kid(kid)

    async def _guarded_refresh(self) -> None:
        try:
            await self.refresh()
        except JwksError as exc:
            log.warning("JWKS refresh failed, keeping the previous keys: %s", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self._guarded_refresh()

    async def __aenter__(self) -> JwksRefresher:
        try:
            await self.refresh()
        except BaseException:
            await self.source.close()
            raise
        self._background = asyncio.create_task(self._run(), name=f"jwks-refresh {self.source.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in (self._background, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.source.close()
