"""JWT verification and the verified caller's Identity (sans-IO; shared by gateway and service).

A ``TokenVerifier`` checks a compact JWS against a ``KeyRing`` and ``ClaimRules``; an
``Authenticator`` joins it with the RBAC ``Policy`` (gateway/policy.py) and an optional hook that
refreshes a JWKS when a token names an unknown ``kid``. The gateway and the service's interceptor
both call ``Authenticator.authorize`` — there is no second copy of these rules.

Invariants:
- Every key carries an explicit algorithm allowlist, fixed by its type: a secret allows only
  HS*, an RSA key only RS*, an EC key only the ES* of its curve, an Ed25519/Ed448 key only EdDSA.
  ``alg: none``, an unsupported alg, or an alg its key does not allow is rejected before any
  signature check, so HS/RS key confusion cannot happen.
- A token with a ``kid`` is checked only against keys with that ``kid``; an unknown ``kid`` is
  ``UnknownKey``. A token without ``kid`` is tried against every key allowing its alg.
- ``exp`` and ``sub`` are required; ``nbf``/``iat`` are honoured with ``leeway``; ``iss``/``aud``
  are checked when configured; roles come from ``roles_claim`` (a dotted path) as a list of strings.
- Error messages never contain the token (only short, sanitised header values such as a kid).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.types import Options

if TYPE_CHECKING:
    from gateway.policy import Policy
    from switchboard.gateway.v1 import options_pb2

__all__ = [
    "HMAC_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "AuthError",
    "Authenticator",
    "ClaimRules",
    "Identity",
    "InvalidRequest",
    "InvalidToken",
    "KeyRing",
    "MissingCredentials",
    "NoAuthRule",
    "PermissionDenied",
    "TokenExpired",
    "TokenVerifier",
    "UnknownKey",
    "UnusableKey",
    "VerificationKey",
    "VerifiedToken",
    "key_algorithms",
    "permission_granted",
]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384"}
EDDSA = "EdDSA"
SUPPORTED_ALGORITHMS = (
    HMAC_ALGORITHMS | RSA_ALGORITHMS | frozenset(EC_ALGORITHMS.values()) | {EDDSA}
)
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 §3.2
MAX_TOKEN_CHARS = 16 * 1024
_UNSAFE = re.compile(r"[^\x20-\x7e]|[\"\\]")


def _safe(text: object, limit: int = 64) -> str:
    """A header value fit to quote in an error message: printable ASCII, no quotes, short."""
    return _UNSAFE.sub("?", str(text))[:limit]


# --- errors -------------------------------------------------------------------------------------


class AuthError(Exception):
    """A request that may not proceed. Maps to HTTP ``http_status`` and gRPC ``grpc_status``."""

    http_status: ClassVar[int] = 401
    grpc_status: ClassVar[str] = "UNAUTHENTICATED"
    error_code: ClassVar[str | None] = "invalid_token"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    @property
    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` header value for this error (RFC 6750 §3)."""
        if self.error_code is None:
            return "Bearer"
        return (
            f'Bearer error="{self.error_code}", error_description="{_safe(self.description, 200)}"'
        )


class MissingCredentials(AuthError):
    """No token was sent (RFC 6750: a bare ``Bearer`` challenge, no error code)."""

    error_code = None


class InvalidRequest(AuthError):
    """The credentials are malformed (several tokens, ``Bearer`` with no token, ...)."""

    http_status = 400
    error_code = "invalid_request"


class InvalidToken(AuthError):
    """The token is malformed, has a bad signature, or fails a claim check."""


class TokenExpired(InvalidToken):
    """The token's ``exp`` has passed (also raised when a stream outlives its token)."""

    def __init__(self, description: str = "token expired") -> None:
        super().__init__(description)


class UnknownKey(InvalidToken):
    """The token names a ``kid`` that no configured key has."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"unknown key id {_safe(kid)!r}")
        self.kid = kid


class PermissionDenied(AuthError):
    """A verified caller lacks a permission the method requires."""

    http_status = 403
    grpc_status = "PERMISSION_DENIED"
    error_code = "insufficient_scope"


class NoAuthRule(PermissionDenied):
    """The method carries no auth rule: denied by default, whoever calls."""


class UnusableKey(ValueError):
    """A key that cannot be used as configured; the message names the key."""


# --- identity -----------------------------------------------------------------------------------


def permission_granted(pattern: str, permission: str) -> bool:
    """Whether a granted ``pattern`` covers ``permission``: exact, ``*``, or ``prefix.*``."""
    if pattern in ("*", permission):
        return True
    return pattern.endswith(".*") and permission.startswith(pattern[:-1])


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller: user id, roles, the permissions they grant, token times (epoch s).

    ``permissions`` holds what the policy grants, which may include patterns (``rooms.*``); ask
    ``has_permission`` rather than testing membership.
    """

    user: str
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()
    issued_at: int | None = None
    expires_at: int | None = None

    def has_permission(self, permission: str) -> bool:
        return any(permission_granted(pattern, permission) for pattern in self.permissions)


# --- keys ---------------------------------------------------------------------------------------


def key_algorithms(key: object) -> frozenset[str]:
    """Every algorithm a key of this type may verify."""
    if isinstance(key, bytes):
        return HMAC_ALGORITHMS
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHMS.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({EDDSA})
    return frozenset()


def _kind(key: object) -> str:
    if isinstance(key, bytes):
        return "secret"
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    return "EC" if isinstance(key, ec.EllipticCurvePublicKey) else "EdDSA"


@dataclass(frozen=True)
class VerificationKey:
    """One key and the algorithms it may verify; ``origin`` says where it came from (for errors)."""

    key: Any  # bytes (a secret) or a cryptography public key
    algorithms: frozenset[str]
    kid: str | None = None
    origin: str = "config"

    def __post_init__(self) -> None:
        family = key_algorithms(self.key)
        name = f"key {self.kid or self.origin!r}"
        if not family:
            raise UnusableKey(f"{name}: unsupported key type {type(self.key).__name__}")
        if not self.algorithms:
            raise UnusableKey(f"{name}: no algorithm allowed")
        wrong = sorted(self.algorithms - family)
        if wrong:
            allowed = ", ".join(sorted(family))
            raise UnusableKey(
                f"{name} is a {_kind(self.key)} key: algorithm {', '.join(wrong)} is not allowed"
                f" with it (allowed: {allowed})"
            )
        if isinstance(self.key, bytes):
            need = max(MIN_SECRET_BYTES[alg] for alg in self.algorithms)
            if len(self.key) < need:
                raise UnusableKey(
                    f"{name}: secret must be at least {need} bytes, got {len(self.key)}"
                )

    @classmethod
    def from_secret(
        cls,
        secret: str | bytes,
        *,
        kid: str | None = None,
        algorithms: Iterable[str] = ("HS256",),
        origin: str = "secret",
    ) -> VerificationKey:
        raw = secret.encode() if isinstance(secret, str) else secret
        return cls(raw, frozenset(algorithms), kid, origin)

    @classmethod
    def from_pem(
        cls,
        pem: bytes,
        *,
        kid: str | None = None,
        algorithms: Iterable[str] = (),
        origin: str = "pem",
    ) -> VerificationKey:
        """A public key (or certificate) in PEM; ``algorithms`` defaults to the key's family."""
        try:
            if b"CERTIFICATE" in pem:
                from cryptography import x509

                key: object = x509.load_pem_x509_certificate(pem).public_key()
            else:
                key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise UnusableKey(
                f"key {kid or origin!r}: not a PEM public key or certificate"
            ) from exc
        chosen = frozenset(algorithms) or key_algorithms(key)
        return cls(key, chosen, kid, origin)


class KeyRing:
    """The keys a verifier trusts: configured ones plus the latest published JWKS."""

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        self._configured = tuple(keys)
        self._published: tuple[VerificationKey, ...] = ()

    @property
    def keys(self) -> tuple[VerificationKey, ...]:
        return self._configured + self._published

    def publish(self, keys: Iterable[VerificationKey]) -> None:
        """Replace the JWKS-sourced keys (rotation: old kids disappear, new ones appear)."""
        self._published = tuple(keys)

    def has_kid(self, kid: str) -> bool:
        return any(key.kid == kid for key in self.keys)

    def select(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """The keys to try for a token with header ``kid`` and ``alg``."""
        if kid is not None:
            named = [key for key in self.keys if key.kid == kid]
            if not named:
                raise UnknownKey(kid)
            usable = [key for key in named if alg in key.algorithms]
            if not usable:
                raise InvalidToken(f"algorithm {alg} is not allowed for key {_safe(kid)!r}")
            return usable
        usable = [key for key in self.keys if alg in key.algorithms]
        if not usable:
            raise InvalidToken(f"no key accepts algorithm {alg}")
        return usable


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimRules:
    """How claims are checked: leeway (s) for exp/nbf/iat, expected iss and aud, roles claim."""

    leeway: float = 30.0
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    roles_claim: str = "roles"


@dataclass(frozen=True)
class VerifiedToken:
    """The claims of a token whose signature and claims checked out."""

    subject: str
    roles: frozenset[str]
    issued_at: int | None
    expires_at: int
    claims: Mapping[str, Any] = field(repr=False)


_JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuedAtError, "token 'iat' claim is invalid"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.exceptions.InvalidSubjectError, "token 'sub' claim must be a non-empty string"),
    (jwt.InvalidSignatureError, "signature verification failed"),
)


class TokenVerifier:
    """Checks compact JWS tokens against a ``KeyRing`` and ``ClaimRules`` (see module docstring)."""

    def __init__(self, keys: KeyRing, rules: ClaimRules | None = None) -> None:
        self.keys = keys
        self.rules = rules or ClaimRules()

    def verify(self, token: str) -> VerifiedToken:
        alg, kid = self._header(token)
        candidates = self.keys.select(kid, alg)
        return self._verified(self._decode(token, alg, candidates))

    def _header(self, token: str) -> tuple[str, str | None]:
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken(f"token longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("token is malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise InvalidToken("unsigned tokens (alg 'none') are not accepted")
        if alg not in SUPPORTED_ALGORITHMS:
            raise InvalidToken(f"algorithm {_safe(alg)!r} is not supported")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("token 'kid' header must be a string")
        return alg, kid

    def _decode(self, token: str, alg: str, keys: Sequence[VerificationKey]) -> dict[str, Any]:
        rules = self.rules
        options: Options = {
            "require": ["exp", "sub"],
            "verify_iss": rules.issuer is not None,
            "verify_aud": bool(rules.audience),
        }
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    options=options,
                    audience=list(rules.audience) or None,
                    issuer=rules.issuer,
                    leeway=rules.leeway,
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.MissingRequiredClaimError as exc:
                raise InvalidToken(f"token has no {exc.claim!r} claim") from None
            except jwt.PyJWTError as exc:
                raise _rejection(exc) from None
        raise InvalidToken("signature verification failed")

    def _verified(self, claims: dict[str, Any]) -> VerifiedToken:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("token 'sub' claim must be a non-empty string")
        iat = claims.get("iat")
        return VerifiedToken(
            subject=subject,
            roles=_roles(claims, self.rules.roles_claim),
            issued_at=int(iat) if isinstance(iat, int | float) else None,
            expires_at=int(claims["exp"]),
            claims=claims,
        )


def _rejection(exc: Exception) -> InvalidToken:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return TokenExpired()
    text = next((text for kind, text in _JWT_ERRORS if isinstance(exc, kind)), "token is malformed")
    return InvalidToken(text)


def _roles(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
        raise InvalidToken(f"token {path!r} claim must be a list of strings")
    return frozenset(value)


# --- the one entry point ------------------------------------------------------------------------

UnknownKidHook = Callable[[str], Awaitable[bool]]


class Authenticator:
    """Verifier + policy: the one decision both the gateway and the service interceptor make.

    ``on_unknown_kid(kid)`` (a JWKS refresher) may fetch new keys and says whether ``kid`` is now
    known; the token is then verified once more. It is the refresher's job to rate-limit.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        policy: Policy,
        *,
        on_unknown_kid: UnknownKidHook | None = None,
    ) -> None:
        self.verifier = verifier
        self.policy = policy
        self._on_unknown_kid = on_unknown_kid

    async def authenticate(self, token: str) -> Identity:
        """The identity a token proves; raises ``InvalidToken`` (or a subclass)."""
        try:
            verified = self.verifier.verify(token)
        except UnknownKey as exc:
            if self._on_unknown_kid is None or not await self._on_unknown_kid(exc.kid):
                raise
            verified = self.verifier.verify(token)
        return self.policy.identity_for(verified)

    async def authorize(
        self, token: str | None, rule: options_pb2.AuthRule | None
    ) -> Identity | None:
        """Decide a call: ``None`` for an anonymous call to a public method, else the identity.

        No rule → ``NoAuthRule`` (403). Public → allowed without a token, but a token that is sent
        must be valid. Otherwise a missing token is 401 and a missing permission 403.
        """
        if rule is None or token is None:  # no rule: denied before any work on the token
            self.policy.check(None, rule)
            return None
        identity = await self.authenticate(token)
        self.policy.check(identity, rule)
        return identity
