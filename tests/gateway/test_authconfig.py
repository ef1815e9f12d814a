"""Auth settings from TOML and the environment, and the Authenticator they build."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gateway.auth import UnknownKey
from gateway.authconfig import (
    AuthConfig,
    AuthConfigError,
    KeyConfig,
    add_auth_arguments,
    auth_from_args,
    build_keyring,
    dev_secret,
    open_authenticator,
)
from tests.gateway.signing import SECRET, claims, ec_key, hmac_key, rsa_key


def test_toml_file_with_an_auth_table(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k1.pem").write_bytes(rsa_key().public_pem())
    path = tmp_path / "gateway.toml"
    path.write_text(
        """
        [auth]
        issuer = "https://id.example"
        audience = "switchboard"
        leeway_seconds = 5
        query_param = "access_token"
        strip_headers = ["x-tenant"]
        [[auth.keys]]
        kid = "k1"
        public_key_file = "keys/k1.pem"
        algorithms = ["RS256"]
        """
    )
    config = AuthConfig.load(path)
    assert config.audience == ("switchboard",)
    assert config.keys == (
        KeyConfig(kid="k1", algorithms=("RS256",), public_key_file=tmp_path / "keys/k1.pem"),
    )
    assert config.claim_rules.leeway == 5.0
    assert config.token_sources.query_param == "access_token"
    assert "x-tenant" in config.stripped_keys
    assert [key.kid for key in build_keyring(config).keys] == ["k1"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"isuer": "x"}, "unknown option 'isuer'"),
        ({"leeway_seconds": "5"}, "auth.leeway_seconds must be a number"),
        ({"dev": "yes"}, "auth.dev must be true or false"),
        ({"audience": [1]}, "auth.audience must be a string or a list"),
        ({"jwks_algorithms": ["none"]}, "unsupported algorithm 'none'"),
        ({"jwks_url": "https://a", "jwks_file": "b"}, "not both"),
        ({"keys": [{"kid": "a"}]}, "auth.keys[0]: set exactly one of"),
        ({"keys": [{"secret": "x", "colour": "red"}]}, "unknown option 'colour'"),
        ({"strip_headers": ["bad header"]}, "'bad header'"),
    ],
)
def test_invalid_settings_name_the_option(table: dict[str, object], message: str) -> None:
    with pytest.raises(AuthConfigError) as caught:
        AuthConfig.from_mapping(table)
    assert message in str(caught.value)


def test_environment_overrides_the_file() -> None:
    environ = {
        "SWITCHBOARD_JWT_SECRET": SECRET.decode(),
        "SWITCHBOARD_JWT_ISSUER": "https://env.example",
        "SWITCHBOARD_JWT_AUDIENCE": "a, b",
        "SWITCHBOARD_JWT_LEEWAY": "0",
        "SWITCHBOARD_AUTH_COOKIE": "sid",
    }
    config = AuthConfig(issuer="https://file.example").with_env(environ)
    assert (config.issuer, config.audience, config.leeway_seconds) == (
        "https://env.example",
        ("a", "b"),
        0.0,
    )
    assert config.cookie_name == "sid"
    keyring = build_keyring(config, environ)
    assert keyring.keys[0].algorithms == {"HS256"}
    with pytest.raises(AuthConfigError, match="expected a number"):
        AuthConfig().with_env({"SWITCHBOARD_JWT_LEEWAY": "soon"})


def test_key_errors_name_the_key(tmp_path: Path) -> None:
    short = AuthConfig(keys=(KeyConfig(secret="short"),))
    with pytest.raises(AuthConfigError, match=r"auth.keys\[0\]: .*at least 32 bytes"):
        build_keyring(short)
    missing = AuthConfig(keys=(KeyConfig(public_key_file=tmp_path / "gone.pem"),))
    with pytest.raises(AuthConfigError, match=r"gone\.pem"):
        build_keyring(missing)
    unset = AuthConfig(keys=(KeyConfig(secret_env="NOPE"),))
    with pytest.raises(AuthConfigError, match="NOPE is empty"):
        build_keyring(unset, {})


def test_dev_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    environ = {"XDG_STATE_HOME": str(tmp_path)}
    first = dev_secret(environ)
    assert dev_secret(environ) == first
    assert len(first) >= 32
    assert (tmp_path / "switchboard" / "dev-secret").stat().st_mode & 0o777 == 0o600
    assert dev_secret({**environ, "SWITCHBOARD_DEV_SECRET": "x" * 32}) == "x" * 32


async def test_open_authenticator_with_a_jwks_file_and_a_policy(tmp_path: Path) -> None:
    key = ec_key(kid="j1")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [key.jwk()]}))
    (tmp_path / "policy.toml").write_text('[roles]\nops = ["rooms.*"]\n')
    config = AuthConfig.from_mapping(
        {"jwks_file": "jwks.json", "policy": "policy.toml"}, base_dir=tmp_path
    )
    async with open_authenticator(config, {}) as authenticator:
        identity = await authenticator.authenticate(key.sign(claims(roles=["ops"])))
        assert identity.permissions == {"rooms.*"}
        with pytest.raises(UnknownKey):
            await authenticator.authenticate(hmac_key().sign(claims()))


async def test_bad_policy_path_fails_at_start(tmp_path: Path) -> None:
    config = AuthConfig(policy=tmp_path / "missing.toml")
    with pytest.raises(AuthConfigError, match=r"missing\.toml"):
        async with open_authenticator(config, {}):
            pass


def _flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_auth_arguments(parser)
    return parser.parse_args(argv)


def test_the_command_line_refuses_to_run_without_a_key_unless_told(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="--no-auth") as caught:
        auth_from_args(_flags(), environ={})
    assert "--dev-auth" in str(caught.value)
    assert "--auth-config" in str(caught.value)
    assert auth_from_args(_flags("--no-auth"), environ={"SWITCHBOARD_AUTH_DEV": "1"}) is None
    with pytest.raises(AuthConfigError, match="cannot be combined"):
        auth_from_args(_flags("--no-auth", "--dev-auth"), environ={})


def test_the_command_line_reads_the_file_the_environment_and_the_dev_flag(
    tmp_path: Path,
) -> None:
    path = tmp_path / "auth.toml"
    path.write_text('[auth]\nissuer = "https://file"\njwks_file = "jwks.json"\n')
    from_env = auth_from_args(_flags(), environ={"SWITCHBOARD_AUTH_CONFIG": str(path)})
    assert from_env is not None
    assert (from_env.issuer, from_env.jwks_file) == ("https://file", tmp_path / "jwks.json")
    env = {"SWITCHBOARD_JWT_ISSUER": "https://env"}
    overridden = auth_from_args(_flags("--auth-config", str(path), "--dev-auth"), environ=env)
    assert overridden is not None
    assert (overridden.issuer, overridden.dev) == ("https://env", True)
    base = AuthConfig(keys=(KeyConfig(secret="x" * 32),))
    assert auth_from_args(_flags(), base, environ={}) == base
