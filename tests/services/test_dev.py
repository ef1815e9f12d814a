"""``make run``'s launcher: what it prints is a working development token and how to use it."""

from __future__ import annotations

import re

import pytest

from gateway.auth import TokenVerifier
from gateway.authconfig import AuthConfig, build_keyring
from services.auth import mint_dev_token
from services.dev import DEV_ROLES, DEV_TTL, DEV_USER, dev_banner


def test_the_banner_carries_a_token_the_dev_key_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_DEV_SECRET", "x" * 48)
    minted = mint_dev_token(DEV_USER, DEV_ROLES, ttl=DEV_TTL)
    banner = dev_banner("127.0.0.1:50051", "127.0.0.1:8080", minted)
    match = re.search(r"export TOKEN=(\S+)", banner)
    assert match is not None
    verified = TokenVerifier(build_keyring(AuthConfig(dev=True))).verify(match.group(1))
    assert (verified.subject, verified.roles) == ("alice", frozenset({"member"}))
    assert verified.expires_at - (verified.issued_at or 0) == DEV_TTL
    assert 'curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/v1/rooms' in banner
    assert 'grpcurl -plaintext -H "authorization: Bearer $TOKEN" 127.0.0.1:50051' in banner
    assert "python -m services token --sub alice --roles member" in banner
