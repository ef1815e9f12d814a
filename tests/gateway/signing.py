"""Real signing keys for the auth tests: RSA, EC, Ed25519 and HMAC, each able to mint JWTs.

Keys are generated with ``cryptography`` once per test session (RSA generation is slow).
``deployment_config``, ``token`` and ``bad_tokens`` describe one deployment (an RSA key file and
an HS256 secret, an issuer and an audience) that the gateway and service integration tests run
both processes with.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth import VerificationKey
from gateway.authconfig import AuthConfig, KeyConfig

SECRET = b"s" * 64  # long enough for HS512


@dataclass(frozen=True)
class SigningKey:
    """A private key (or secret), its public half, the algorithm it signs with, its kid."""

    private: Any
    public: Any
    alg: str
    kid: str | None

    def sign(self, claims: dict[str, Any], *, kid: str | bool | None = True) -> str:
        headers = {} if kid is False or self.kid is None else {"kid": self.kid}
        if isinstance(kid, str):
            headers = {"kid": kid}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)

    def verification_key(self, kid: str | bool | None = True) -> VerificationKey:
        chosen = self.kid if kid is True else (None if kid is False else kid)
        if isinstance(self.public, bytes):
            return VerificationKey.from_secret(self.public, kid=chosen, algorithms=[self.alg])
        return VerificationKey(self.public, frozenset({self.alg}), chosen)

    def public_pem(self) -> bytes:
        return bytes(
            self.public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        data: dict[str, Any] = dict(algorithm.to_jwk(self.public, as_dict=True))
        data["kid"] = self.kid
        data["use"] = "sig"
        if with_alg:
            data["alg"] = self.alg
        return data


@functools.cache
def _rsa(seed: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_key(kid: str | None = "rsa-1", alg: str = "RS256", *, seed: str = "a") -> SigningKey:
    private = _rsa(seed)
    return SigningKey(private, private.public_key(), alg, kid)


def ec_key(kid: str | None = "ec-1", alg: str = "ES256") -> SigningKey:
    curve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
    private = ec.generate_private_key(curve)
    return SigningKey(private, private.public_key(), alg, kid)


def ed_key(kid: str | None = "ed-1") -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(private, private.public_key(), "EdDSA", kid)


def hmac_key(kid: str | None = "hs-1", alg: str = "HS256", secret: bytes = SECRET) -> SigningKey:
    return SigningKey(secret, secret, alg, kid)


def claims(
    sub: str | None = "alice", roles: list[str] | None = None, ttl: int = 300, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {"iat": now, "exp": now + ttl, **extra}
    if sub is not None:
        out["sub"] = sub
    out["roles"] = ["member"] if roles is None else roles
    return out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token signed by hand: HMAC-SHA256 with ``secret`` (any bytes), or unsigned."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


# --- one deployment's keys, shared by the gateway and service integration tests -----------------

ISSUER = "https://id.switchboard.test"
AUDIENCE = "switchboard"
RSA_KID = "rsa-1"
HS_KID = "hs-1"


def deployment_config(tmp_path: Path, **changes: Any) -> AuthConfig:
    """What both processes run with: an RSA public key file and an HS256 secret, iss and aud."""
    pem = tmp_path / f"{RSA_KID}.pem"
    pem.write_bytes(rsa_key(RSA_KID).public_pem())
    keys = (
        KeyConfig(kid=RSA_KID, public_key_file=pem),
        KeyConfig(kid=HS_KID, secret=SECRET.decode(), algorithms=("HS256",)),
    )
    config = AuthConfig(keys=keys, issuer=ISSUER, audience=(AUDIENCE,), leeway_seconds=5)
    return replace(config, **changes)


def token(
    sub: str | None = "alice",
    roles: tuple[str, ...] = ("member",),
    *,
    ttl: int = 300,
    key: SigningKey | None = None,
    **extra: Any,
) -> str:
    """A token the deployment accepts (unless ``extra`` spoils it): RS256, right iss and aud."""
    payload = claims(sub, list(roles), ttl, **{"iss": ISSUER, "aud": AUDIENCE, **extra})
    return (key or rsa_key(RSA_KID)).sign(payload)


def bad_tokens() -> dict[str, tuple[str, str]]:
    """name → (token, what the rejection says): every way a token must fail, for real."""
    now = int(time.time())
    good = claims("alice", ["admin"], 300, iss=ISSUER, aud=AUDIENCE)
    pem = rsa_key(RSA_KID).public_pem()
    return {
        "expired": (token(ttl=-120), "token expired"),
        "not yet valid": (token(nbf=now + 120), "token not yet valid"),
        "wrong signature": (rsa_key(RSA_KID, seed="other").sign(good), "signature verification"),
        "wrong key type": (
            ec_key(kid=RSA_KID).sign(good),
            f"algorithm ES256 is not allowed for key '{RSA_KID}'",
        ),
        "alg none": (forged({"alg": "none", "kid": RSA_KID}, good, None), "alg 'none'"),
        "HS/RS confusion": (
            forged({"alg": "HS256", "kid": RSA_KID}, good, pem),
            f"algorithm HS256 is not allowed for key '{RSA_KID}'",
        ),
        "HS/RS confusion, no kid": (forged({"alg": "HS256"}, good, pem), "signature verification"),
        "unknown kid": (hmac_key(kid="retired").sign(good), "unknown key id 'retired'"),
        "wrong issuer": (token(iss="https://evil.test"), "issuer not accepted"),
        "wrong audience": (token(aud="someone-else"), "audience not accepted"),
        "missing sub": (token(sub=None), "no 'sub' claim"),
        "garbage": ("garbage", "token is malformed"),
    }
