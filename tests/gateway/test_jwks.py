"""JWKS: parsing, rotation from a file and from a URL (a real aiohttp server), rate limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.auth import Authenticator, KeyRing, TokenVerifier, UnknownKey
from gateway.jwks import JwksError, JwksFile, JwksRefresher, JwksUrl, parse_jwks
from gateway.policy import Policy
from tests.gateway.signing import SigningKey, claims, ec_key, ed_key, hmac_key, rsa_key

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"})
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


def document(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.jwk() for key in keys]}


def authenticator(ring: KeyRing, refresher: JwksRefresher) -> Authenticator:
    return Authenticator(
        TokenVerifier(ring), Policy.default(), on_unknown_kid=refresher.refresh_for
    )


def test_parse_uses_the_jwk_alg_or_the_key_type() -> None:
    rsa, ec, ed = rsa_key(kid="r"), ec_key(kid="e", alg="ES384"), ed_key(kid="d")
    data = {"keys": [rsa.jwk(with_alg=False), ec.jwk(), ed.jwk(with_alg=False)]}
    keys, skipped = parse_jwks(json.dumps(data).encode(), algorithms=ASYMMETRIC)
    assert skipped == []
    assert {key.kid: key.algorithms for key in keys} == {
        "r": {"RS256", "RS384", "RS512"},
        "e": {"ES384"},
        "d": {"EdDSA"},
    }


def test_parse_skips_encryption_keys_and_disallowed_algorithms() -> None:
    enc = {**rsa_key(kid="enc").jwk(), "use": "enc"}
    secret = {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI", "kid": "hs"}
    keys, skipped = parse_jwks(
        {"keys": [enc, hmac_key().jwk() | {"kid": "hs-alg"}, secret, ec_key(kid="ok").jwk()]},
        algorithms=ASYMMETRIC,
    )
    assert [key.kid for key in keys] == ["ok"]
    assert len(skipped) == 2
    assert "'HS256' is not allowed" in skipped[0]
    assert "no allowed algorithm" in skipped[1]


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"keys": 3}'])
def test_parse_rejects_documents_that_are_not_a_jwks(data: bytes) -> None:
    with pytest.raises(JwksError, match="idp"):
        parse_jwks(data, algorithms=ASYMMETRIC, source="idp")


async def test_file_rotation_picks_up_a_new_kid_without_restart(tmp_path: Path) -> None:
    old, new = ec_key(kid="2026-01"), ec_key(kid="2026-02")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document(old)))
    ring = KeyRing()
    refresher = JwksRefresher(JwksFile(path), ring, algorithms=ASYMMETRIC, min_refresh_seconds=0)
    async with refresher:
        check = authenticator(ring, refresher)
        assert (await check.authenticate(old.sign(claims()))).user == "alice"
        replacement = tmp_path / "jwks.json.new"
        replacement.write_text(json.dumps(document(new)))
        replacement.replace(path)
        assert (await check.authenticate(new.sign(claims()))).user == "alice"
        with pytest.raises(UnknownKey):
            await check.authenticate(old.sign(claims()))


async def test_missing_file_fails_at_start(tmp_path: Path) -> None:
    refresher = JwksRefresher(JwksFile(tmp_path / "none.json"), KeyRing(), algorithms=ASYMMETRIC)
    with pytest.raises(JwksError, match=r"none\.json"):
        async with refresher:
            pass


class Idp:
    """A JWKS endpoint whose document the test rotates; counts fetches."""

    def __init__(self, *keys: SigningKey) -> None:
        self.document = document(*keys)
        self.hits = 0
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response(self.document, status=self.status)


async def serve(idp: Idp, aiohttp_server: ServerFactory) -> str:
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", idp.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/.well-known/jwks.json"))


async def test_url_rotation_and_one_rate_limited_refresh(aiohttp_server: ServerFactory) -> None:
    first, second = rsa_key(kid="k1"), ed_key(kid="k2")
    idp = Idp(first)
    url = await serve(idp, aiohttp_server)
    now = [1000.0]
    ring = KeyRing()
    refresher = JwksRefresher(
        JwksUrl(url), ring, algorithms=ASYMMETRIC, min_refresh_seconds=60, clock=lambda: now[0]
    )
    async with refresher:
        check = authenticator(ring, refresher)
        assert (await check.authenticate(first.sign(claims()))).user == "alice"
        idp.document = document(first, second)
        with pytest.raises(UnknownKey):  # within a minute of the last fetch: no refetch
            await check.authenticate(second.sign(claims()))
        assert idp.hits == 1
        now[0] += 61
        forged = [ec_key(kid=f"forged-{i}").sign(claims()) for i in range(5)]
        results = await asyncio.gather(
            check.authenticate(second.sign(claims())),
            *(check.authenticate(token) for token in forged),
            return_exceptions=True,
        )
        assert idp.hits == 2  # one refresh served the flood of unknown kids
        assert not isinstance(results[0], BaseException)
        assert results[0].user == "alice"
        assert all(isinstance(result, UnknownKey) for result in results[1:])


async def test_failed_refresh_keeps_the_previous_keys(aiohttp_server: ServerFactory) -> None:
    key = ec_key(kid="stable")
    idp = Idp(key)
    url = await serve(idp, aiohttp_server)
    ring = KeyRing()
    refresher = JwksRefresher(JwksUrl(url), ring, algorithms=ASYMMETRIC, min_refresh_seconds=0)
    async with refresher:
        idp.status = 503
        assert not await refresher.refresh_for("other")
        assert idp.hits == 2
        check = authenticator(ring, refresher)
        assert (await check.authenticate(key.sign(claims()))).user == "alice"


async def test_background_refresh_publishes_new_keys(aiohttp_server: ServerFactory) -> None:
    old, new = ec_key(kid="old"), ec_key(kid="new")
    idp = Idp(old)
    url = await serve(idp, aiohttp_server)
    ring = KeyRing()
    refresher = JwksRefresher(JwksUrl(url), ring, algorithms=ASYMMETRIC, refresh_seconds=0.05)
    async with refresher:
        idp.document = document(new)
        async with asyncio.timeout(5):
            await refresher.next_publish()
    assert not ring.has_kid("old")


async def test_unreachable_url_fails_at_start_naming_it() -> None:
    refresher = JwksRefresher(
        JwksUrl("http://127.0.0.1:9/jwks.json", timeout=2), KeyRing(), algorithms=ASYMMETRIC
    )
    with pytest.raises(JwksError, match=r"127\.0\.0\.1:9"):
        async with refresher:
            pass
