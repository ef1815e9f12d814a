"""What the backend receives: client identity keys stripped, the verified identity added."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from gateway.auth import Identity
from gateway.identity_metadata import identity_metadata, stripped_keys, with_identity

ALICE = Identity(
    "alice@example.com",
    frozenset({"member", "viewer"}),
    frozenset({"rooms.read", "messages.post"}),
    issued_at=1700000000,
    expires_at=1700003600,
)


def test_spoofed_identity_keys_are_replaced_by_the_verified_ones() -> None:
    client = [
        ("x-user-id", "mallory"),
        ("X-Roles", "admin"),
        ("x-permissions", "*"),
        ("x-token-issued-at", "0"),
        ("authorization", "Bearer client-sent"),
        ("x-request-id", "r1"),
        ("x-tenant", "t"),
    ]
    out = dict(with_identity(client, ALICE, "the.real.token", strip=stripped_keys(["X-Tenant"])))
    assert out == {
        "x-request-id": "r1",
        "authorization": "Bearer the.real.token",
        "x-user-id": "alice@example.com",
        "x-roles": "member,viewer",
        "x-permissions": "messages.post,rooms.read",
        "x-token-issued-at": "1700000000",
    }


def test_anonymous_calls_carry_no_identity_and_no_authorization() -> None:
    client = [("x-user-id", "mallory"), ("authorization", "Bearer junk"), ("x-a", "1")]
    assert with_identity(client, None, None) == (("x-a", "1"),)


def test_values_are_percent_encoded_ascii() -> None:
    odd = Identity("zoë,%", frozenset({"a,b"}), frozenset(), None, None)
    out = dict(identity_metadata(odd, "t.t.t"))
    assert out["x-user-id"].isascii()
    assert unquote(out["x-user-id"]) == "zoë,%"
    assert [unquote(role) for role in out["x-roles"].split(",")] == ["a,b"]
    assert "x-token-issued-at" not in out


def test_invalid_extra_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'x tenant'"):
        stripped_keys(["x tenant"])
