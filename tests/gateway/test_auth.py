"""JWT verification with real signed tokens: every algorithm, every rejection path."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from gateway.auth import (
    Authenticator,
    AuthError,
    ClaimRules,
    Identity,
    InvalidToken,
    KeyRing,
    MissingCredentials,
    NoAuthRule,
    PermissionDenied,
    TokenExpired,
    TokenVerifier,
    UnknownKey,
    UnusableKey,
    VerificationKey,
)
from gateway.policy import Policy
from switchboard.gateway.v1 import options_pb2
from tests.gateway.signing import (
    SECRET,
    SigningKey,
    claims,
    ec_key,
    ed_key,
    forged,
    hmac_key,
    rsa_key,
)


def verifier(*keys: SigningKey, rules: ClaimRules | None = None) -> TokenVerifier:
    return TokenVerifier(KeyRing(k.verification_key() for k in keys), rules)


def rejected(check: TokenVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        check.verify(token)
    error = caught.value
    if token:
        assert token not in str(error)
        assert token not in error.www_authenticate
    return error


@pytest.mark.parametrize(
    "key",
    [
        rsa_key(alg="RS256"),
        rsa_key(alg="RS384"),
        rsa_key(alg="RS512"),
        ec_key(alg="ES256"),
        ec_key(alg="ES384"),
        ed_key(),
        hmac_key(alg="HS256"),
        hmac_key(alg="HS384"),
        hmac_key(alg="HS512"),
    ],
    ids=lambda key: key.alg,
)
def test_every_supported_algorithm_verifies(key: SigningKey) -> None:
    token = key.sign(claims(roles=["member", "viewer"]))
    verified = verifier(key).verify(token)
    assert verified.subject == "alice"
    assert verified.roles == {"member", "viewer"}
    assert verified.expires_at > time.time()


def test_token_without_kid_is_tried_against_keys_allowing_its_alg() -> None:
    one, two = rsa_key(kid=None), ec_key(kid=None)
    assert verifier(one, two).verify(two.sign(claims())).subject == "alice"


def test_expired_token_says_so_in_www_authenticate() -> None:
    key = rsa_key()
    error = rejected(verifier(key), key.sign(claims(ttl=-120)))
    assert isinstance(error, TokenExpired)
    assert error.http_status == 401
    assert error.www_authenticate == (
        'Bearer error="invalid_token", error_description="token expired"'
    )


def test_leeway_accepts_recently_expired_tokens_only_within_it() -> None:
    key = rsa_key()
    token = key.sign(claims(ttl=-10))
    assert verifier(key, rules=ClaimRules(leeway=30)).verify(token).subject == "alice"
    assert isinstance(rejected(verifier(key, rules=ClaimRules(leeway=0)), token), TokenExpired)


def test_not_yet_valid_token_is_rejected() -> None:
    key = ec_key()
    error = rejected(verifier(key), key.sign(claims(nbf=int(time.time()) + 600)))
    assert error.description == "token not yet valid"


def test_token_issued_in_the_future_is_rejected() -> None:
    key = ed_key()
    error = rejected(verifier(key), key.sign(claims(iat=int(time.time()) + 600)))
    assert "not yet valid" in error.description or "iat" in error.description


def test_wrong_signature_is_rejected() -> None:
    trusted, impostor = ec_key(kid="k"), ec_key(kid="k")
    error = rejected(verifier(trusted), impostor.sign(claims()))
    assert error.description == "signature verification failed"


def test_tampered_payload_is_rejected() -> None:
    key = rsa_key()
    header, _, signature = key.sign(claims(roles=["viewer"])).split(".")
    other_payload = key.sign(claims(roles=["admin"])).split(".")[1]
    error = rejected(verifier(key), f"{header}.{other_payload}.{signature}")
    assert error.description == "signature verification failed"


def test_token_signed_with_another_key_type_for_the_kid_is_rejected() -> None:
    rsa, ec = rsa_key(kid="shared"), ec_key(kid="shared")
    error = rejected(verifier(rsa), ec.sign(claims()))
    assert error.description == "algorithm ES256 is not allowed for key 'shared'"


def test_alg_none_is_rejected() -> None:
    key = rsa_key()
    token = forged({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims(), None)
    error = rejected(verifier(key), token)
    assert "alg 'none'" in error.description


def test_hs256_signed_with_the_rsa_public_pem_is_rejected() -> None:
    key = rsa_key()
    confused = forged({"alg": "HS256", "kid": "rsa-1"}, claims(), key.public_pem())
    assert "HS256 is not allowed" in rejected(verifier(key), confused).description
    anonymous = forged({"alg": "HS256"}, claims(), key.public_pem())
    assert rejected(verifier(rsa_key(kid=None)), anonymous).description == (
        "no key accepts algorithm HS256"
    )


def test_unknown_kid_is_rejected_naming_the_kid() -> None:
    error = rejected(verifier(rsa_key()), rsa_key(kid="retired").sign(claims()))
    assert isinstance(error, UnknownKey)
    assert error.kid == "retired"
    assert "retired" in error.description


def test_unsupported_algorithm_is_rejected() -> None:
    token = forged({"alg": "PS256", "kid": "rsa-1"}, claims(), b"x")
    assert "'PS256' is not supported" in rejected(verifier(rsa_key()), token).description


@pytest.mark.parametrize(
    ("rules", "extra", "message"),
    [
        (ClaimRules(issuer="https://id.example"), {"iss": "https://evil.example"}, "issuer"),
        (ClaimRules(issuer="https://id.example"), {}, "'iss'"),
        (ClaimRules(audience=("switchboard",)), {"aud": "other"}, "audience"),
        (ClaimRules(audience=("switchboard",)), {}, "'aud'"),
    ],
)
def test_wrong_or_missing_issuer_and_audience(
    rules: ClaimRules, extra: dict[str, Any], message: str
) -> None:
    key = hmac_key()
    assert message in rejected(verifier(key, rules=rules), key.sign(claims(**extra))).description


def test_matching_issuer_and_one_of_the_audiences_pass() -> None:
    key = hmac_key()
    rules = ClaimRules(issuer="https://id.example", audience=("switchboard", "admin-ui"))
    token = key.sign(claims(iss="https://id.example", aud=["admin-ui"]))
    assert verifier(key, rules=rules).verify(token).subject == "alice"


def test_missing_sub_and_exp_are_rejected() -> None:
    key = hmac_key()
    assert rejected(verifier(key), key.sign(claims(sub=None))).description == (
        "token has no 'sub' claim"
    )
    no_exp = {k: v for k, v in claims().items() if k != "exp"}
    assert rejected(verifier(key), key.sign(no_exp)).description == "token has no 'exp' claim"


def test_sub_must_be_a_string() -> None:
    key = hmac_key()
    token = forged({"alg": "HS256", "kid": "hs-1"}, {**claims(), "sub": 42}, SECRET)
    assert "'sub'" in rejected(verifier(key), token).description


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "Bearer x", "x" * 20_000, "ÿ.ÿ.ÿ"],
)
def test_garbage_is_rejected_as_invalid_token(garbage: str) -> None:
    error = rejected(verifier(hmac_key()), garbage)
    assert isinstance(error, InvalidToken)


def test_roles_come_from_a_configurable_dotted_claim() -> None:
    key = hmac_key()
    token = key.sign(claims(realm_access={"roles": ["admin"]}))
    rules = ClaimRules(roles_claim="realm_access.roles")
    assert verifier(key, rules=rules).verify(token).roles == {"admin"}
    assert verifier(key).verify(key.sign(claims(roles=[]))).roles == frozenset()


def test_roles_claim_that_is_not_a_list_of_strings_is_rejected() -> None:
    key = hmac_key()
    error = rejected(verifier(key), key.sign({**claims(), "roles": "admin"}))
    assert error.description == "token 'roles' claim must be a list of strings"


def test_key_configuration_errors_name_the_key() -> None:
    with pytest.raises(UnusableKey, match="secret must be at least 32 bytes"):
        VerificationKey.from_secret("short", kid="k")
    with pytest.raises(UnusableKey, match=r"'rsa-1' is a RSA key: algorithm HS256 is not allowed"):
        VerificationKey(rsa_key().public, frozenset({"HS256"}), "rsa-1")
    with pytest.raises(UnusableKey, match="not a PEM public key"):
        VerificationKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nnope\n", kid="pem")


def test_pem_keys_default_to_their_family() -> None:
    key = rsa_key()
    loaded = VerificationKey.from_pem(key.public_pem(), kid="rsa-1")
    assert loaded.algorithms == {"RS256", "RS384", "RS512"}
    token = rsa_key(alg="RS512").sign(claims())
    assert TokenVerifier(KeyRing([loaded])).verify(token).subject == "alice"


# --- Authenticator: verification + policy ------------------------------------------------------

READ = options_pb2.AuthRule(permissions=["rooms.read"])
DELETE = options_pb2.AuthRule(permissions=["rooms.delete"])
PUBLIC = options_pb2.AuthRule(public=True)


def authenticator(key: SigningKey, **kwargs: Any) -> Authenticator:
    return Authenticator(verifier(key), Policy.default(), **kwargs)


async def test_authorize_grants_the_identity_with_resolved_permissions() -> None:
    key = rsa_key()
    identity = await authenticator(key).authorize(key.sign(claims(roles=["viewer"])), READ)
    assert identity is not None
    assert identity.user == "alice"
    assert identity.permissions == {"rooms.read", "messages.read"}
    assert identity.expires_at is not None
    assert identity.issued_at is not None


async def test_authorize_distinguishes_401_from_403() -> None:
    key = rsa_key()
    with pytest.raises(MissingCredentials) as missing:
        await authenticator(key).authorize(None, READ)
    assert missing.value.http_status == 401
    assert missing.value.www_authenticate == "Bearer"
    with pytest.raises(PermissionDenied) as denied:
        await authenticator(key).authorize(key.sign(claims(roles=["member"])), DELETE)
    assert denied.value.http_status == 403
    assert denied.value.grpc_status == "PERMISSION_DENIED"
    expected = "permission 'rooms.delete' required"
    assert denied.value.www_authenticate == (
        f'Bearer error="insufficient_scope", error_description="{expected}"'
    )


async def test_methods_without_a_rule_are_denied_even_to_admins() -> None:
    key = rsa_key()
    with pytest.raises(NoAuthRule):
        await authenticator(key).authorize(key.sign(claims(roles=["admin"])), None)
    with pytest.raises(NoAuthRule):
        await authenticator(key).authorize(None, None)


async def test_public_methods_need_no_token_but_reject_a_bad_one() -> None:
    key = rsa_key()
    assert await authenticator(key).authorize(None, PUBLIC) is None
    with pytest.raises(TokenExpired):
        await authenticator(key).authorize(key.sign(claims(ttl=-600)), PUBLIC)


async def test_unknown_kid_asks_the_hook_once_and_retries() -> None:
    ring = KeyRing()
    new = ec_key(kid="new")
    asked: list[str] = []

    async def refresh(kid: str) -> bool:
        asked.append(kid)
        ring.publish([new.verification_key()])
        return ring.has_kid(kid)

    check = Authenticator(TokenVerifier(ring), Policy.default(), on_unknown_kid=refresh)
    assert (await check.authenticate(new.sign(claims()))).user == "alice"
    with pytest.raises(UnknownKey):
        await check.authenticate(ec_key(kid="forged").sign(claims()))
    assert asked == ["new", "forged"]


def test_identity_permission_patterns() -> None:
    identity = Identity("bob", frozenset({"ops"}), frozenset({"rooms.*", "messages.read"}))
    assert identity.has_permission("rooms.delete")
    assert identity.has_permission("messages.read")
    assert not identity.has_permission("messages.post")
    assert not identity.has_permission("roomsx.read")
    assert Identity("root", permissions=frozenset({"*"})).has_permission("anything.at.all")


def test_jwt_library_refuses_pem_as_hmac_secret_too() -> None:
    """Belt and braces: even without our allowlist pyjwt would refuse the confusion."""
    with pytest.raises(jwt.InvalidKeyError):
        jwt.decode(
            forged({"alg": "HS256"}, claims(), rsa_key().public_pem()),
            rsa_key().public_pem(),
            algorithms=["HS256"],
        )
