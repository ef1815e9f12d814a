"""RBAC: the shipped policy, rule checks, wildcards, policy file errors, rules from descriptors."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import (
    Identity,
    MissingCredentials,
    NoAuthRule,
    PermissionDenied,
    VerifiedToken,
    permission_granted,
)
from gateway.policy import Policy, PolicyError, auth_rule, methods_without_rule, rule_for_path
from switchboard.gateway.v1 import options_pb2
from switchboard.v1 import chat_pb2, presence_pb2, rooms_pb2

SWITCHBOARD = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (rooms_pb2, "RoomService"),
        (chat_pb2, "ChatService"),
        (presence_pb2, "PresenceService"),
    )
]


def rule(*permissions: str) -> options_pb2.AuthRule:
    return options_pb2.AuthRule(permissions=list(permissions))


def identity(policy: Policy, *roles: str) -> Identity:
    token = VerifiedToken("alice", frozenset(roles), 1, 2, {})
    return policy.identity_for(token)


def test_default_policy_grants_what_switchboard_documents() -> None:
    policy = Policy.default()
    assert policy.permissions_for(["viewer"]) == {"rooms.read", "messages.read"}
    assert policy.permissions_for(["member"]) == {
        "rooms.read",
        "rooms.create",
        "messages.read",
        "messages.post",
    }
    admin = policy.permissions_for(["admin"])
    assert {"messages.moderate", "rooms.delete", "rooms.update", "messages.import"} <= admin


def test_default_policy_covers_every_permission_the_api_requires() -> None:
    required = {
        permission
        for service in SWITCHBOARD
        for method in service.methods
        for permission in (auth_rule(method) or rule()).permissions
    }
    admin = identity(Policy.default(), "admin")
    assert required
    assert all(admin.has_permission(p) for p in required)


def test_check_requires_every_listed_permission() -> None:
    policy = Policy.default()
    member = identity(policy, "member")
    policy.check(member, rule("rooms.read", "messages.post"))
    with pytest.raises(PermissionDenied, match=r"'rooms\.delete' required"):
        policy.check(member, rule("rooms.read", "rooms.delete"))


def test_check_public_no_rule_and_anonymous() -> None:
    policy = Policy.default()
    policy.check(None, options_pb2.AuthRule(public=True))
    with pytest.raises(NoAuthRule, match="denied by default"):
        policy.check(identity(policy, "admin"), None)
    with pytest.raises(MissingCredentials):
        policy.check(None, rule("rooms.read"))


def test_unknown_roles_grant_nothing() -> None:
    policy = Policy.default()
    ghost = identity(policy, "superuser")
    assert ghost.permissions == frozenset()
    with pytest.raises(PermissionDenied):
        policy.check(ghost, rule("rooms.read"))


def test_wildcards_in_a_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[roles]\nops = ["rooms.*"]\nroot = ["*"]\n')
    policy = Policy.load(path)
    ops = identity(policy, "ops")
    policy.check(ops, rule("rooms.delete", "rooms.update"))
    with pytest.raises(PermissionDenied, match=r"messages\.read"):
        policy.check(ops, rule("messages.read"))
    policy.check(identity(policy, "root"), rule("messages.moderate"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[roles", "not valid TOML"),
        ('[roles]\nops = "rooms.read"\n', "role 'ops' must be a list"),
        ('[roles]\nops = ["rooms..read"]\n', "role 'ops': 'rooms..read' is not a permission"),
        ('[roles]\nops = ["rooms.*.read"]\n', "'rooms.*.read' is not a permission"),
        ('[groups]\nops = ["x"]\n', "unknown key 'groups'"),
        ("roles = 3\n", "'roles' must be a table"),
    ],
)
def test_policy_errors_name_the_file_role_and_value(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=r"my\.toml") as caught:
        Policy.from_toml(text, source="my.toml")
    assert message in str(caught.value)


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.toml"):
        Policy.load(tmp_path / "nope.toml")


def test_rules_come_from_the_method_options() -> None:
    rooms = rooms_pb2.DESCRIPTOR.services_by_name["RoomService"]
    delete = auth_rule(rooms.methods_by_name["DeleteRoom"])
    assert delete is not None
    assert list(delete.permissions) == ["rooms.delete"]
    pool = descriptor_pool.Default()
    subscribe = rule_for_path(pool, "/switchboard.v1.ChatService/Subscribe")
    assert subscribe is not None
    assert list(subscribe.permissions) == ["messages.read"]
    assert rule_for_path(pool, "/switchboard.v1.ChatService/Nope") is None
    assert rule_for_path(pool, "/no.such.Service/Method") is None


def test_methods_without_rule_lists_denied_methods() -> None:
    assert methods_without_rule(SWITCHBOARD) == []
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    assert "/grpc.health.v1.Health/Check" in methods_without_rule([health])


_WORD = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@settings(max_examples=200)
@given(prefix=st.lists(_WORD, min_size=1, max_size=3), rest=st.lists(_WORD, max_size=3))
def test_prefix_wildcard_matches_exactly_the_permissions_under_it(
    prefix: list[str], rest: list[str]
) -> None:
    pattern = ".".join(prefix) + ".*"
    permission = ".".join(prefix + rest)
    assert permission_granted(pattern, permission) == bool(rest)
    assert not permission_granted(pattern, ".".join(prefix) + "x.y")
