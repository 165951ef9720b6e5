"""``private_key_jwt``: a client proves who it is with a JWT signed by one of its keys.

RFC 7523 §2.2 and §3, OIDC Core §9; docs/security.md "Client assertions". The request carries
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and
``client_assertion``, a JWS whose

- signature verifies with a key of the client's configured ``jwks``, chosen by ``kid`` (a set
  of one key needs none), with an algorithm among ``ES256``, ``PS256``, ``RS256`` — and the
  key's own ``alg`` when it names one; ``none`` and HMAC never verify;
- ``iss`` and ``sub`` are both the client id;
- ``aud`` names this broker: its issuer, or the URL of an endpoint that authenticates clients
  (``/token``, ``/revoke``, ``/introspect``, ``/auth/oauth2/refresh``);
- ``exp`` has not passed and is at most ``BROKER_CLIENT_ASSERTION_MAX_LIFETIME`` seconds ahead
  (an hour by default, what authlib and Google's client libraries sign: a long-lived assertion
  would be a password in all but name); ``nbf`` and ``iat``, when present, are not in the
  future (``CLOCK_LEEWAY`` either way);
- ``jti`` is present, and never seen before for this client: :func:`record_assertion` inserts
  it into ``client_assertions`` under a unique key, so of two brokers handed the same assertion
  at the same moment exactly one insert succeeds. The row lives until the assertion expires
  (plus the leeway), then the housekeeping job purges it.

Why the database and not Redis for the ``jti`` records: a replay defence must not forget. Redis
holds only what can be rebuilt (a restart or eviction there would reopen every assertion still
inside its ``exp``), and the counters in Redis fail open when it is down; a row in the database
is committed before the client is let in, on every replica alike, at the cost of one insert per
assertion — a service asks for a token once per token lifetime, not once per call.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from shared.db.tables import CLIENT_ASSERTIONS
from shared.settings import ClientConfig, Settings
from shared.settings.client_keys import ASSERTION_ALGORITHMS, key_algorithms
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.http.errors import InvalidClient

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_LEEWAY = 30
MAX_JTI_LENGTH = 256
# Every endpoint that authenticates clients; an assertion may name any as its audience.
CLIENT_AUTH_PATHS = ("/token", "/revoke", "/introspect", "/auth/oauth2/refresh")


@dataclass(frozen=True)
class VerifiedAssertion:
    """A client assertion whose signature and claims checked out; its ``jti`` not yet spent."""

    client_id: str
    jti: str
    expires_at: dt.datetime  # exp plus the leeway: until then it could be presented


def assertion_audiences(settings: Settings) -> frozenset[str]:
    """The ``aud`` values that name this broker (RFC 7523 §3 item 3)."""
    return frozenset([settings.issuer, *(f"{settings.issuer}{path}" for path in CLIENT_AUTH_PATHS)])


def _segment(token: str, index: int) -> Any:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def asserted_client_id(assertion: str) -> str:
    """The client an assertion claims to come from (its ``sub``), read before anything is
    verified, to know whose keys to verify it with; ``InvalidClient`` if it cannot be read."""
    try:
        if assertion.count(".") != 2:
            raise ValueError("not a JWS compact serialization")
        claims = _segment(assertion, 1)
    except (ValueError, UnicodeDecodeError, RecursionError):  # binascii.Error is a ValueError
        raise InvalidClient("the client assertion is not a JWT") from None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str) or not subject:
        raise InvalidClient("the client assertion has no sub")
    return subject


def _verification_key(client: ClientConfig, header: Any) -> tuple[RSAKey | ECKey, str]:
    """The client's key the header names, and the algorithm it allows; ``InvalidClient`` for an
    unknown ``kid`` or an algorithm the key (or the broker) does not accept."""
    key_set = client.key_set
    if key_set is None or not isinstance(header, dict):
        raise InvalidClient("the client assertion cannot be verified")
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ASSERTION_ALGORITHMS:
        raise InvalidClient(
            f"client assertions are signed with one of {', '.join(ASSERTION_ALGORITHMS)}"
        )
    if kid is None and len(key_set.keys) == 1:
        key = key_set.keys[0]
    else:
        try:
            key = key_set.get_by_kid(str(kid))
        except (JoseError, ValueError):
            raise InvalidClient(
                "the client assertion's kid names none of the client's keys"
            ) from None
    if not isinstance(key, RSAKey | ECKey) or alg not in key_algorithms(key):
        raise InvalidClient("the client assertion's alg does not match its key")
    return key, str(alg)


def verify_assertion(
    client: ClientConfig,
    assertion: str,
    *,
    audiences: Collection[str],
    now: dt.datetime,
    max_lifetime: int,
) -> VerifiedAssertion:
    """RFC 7523 §3: the assertion's signature and claims, or ``InvalidClient``; its ``exp`` at
    most ``max_lifetime`` seconds ahead."""
    try:
        header = _segment(assertion, 0)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidClient("the client assertion is not a JWT") from None
    key, alg = _verification_key(client, header)
    try:
        claims = jwt.decode(assertion, key, algorithms=[alg]).claims
    except (JoseError, ValueError, TypeError):
        raise InvalidClient("the client assertion's signature is invalid") from None
    epoch = int(now.timestamp())
    try:
        jwt.JWTClaimsRegistry(
            now=epoch,
            leeway=CLOCK_LEEWAY,
            iss={"essential": True, "value": client.id},
            sub={"essential": True, "value": client.id},
            aud={"essential": True, "values": sorted(audiences)},
            exp={"essential": True},
            jti={"essential": True},
        ).validate(claims)
    except JoseError as exc:
        raise InvalidClient(f"the client assertion is not valid: {exc.description}") from None
    exp, jti = claims["exp"], claims["jti"]
    if not isinstance(exp, int | float) or exp > epoch + max_lifetime + CLOCK_LEEWAY:
        raise InvalidClient(f"the client assertion must expire within {max_lifetime} seconds")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise InvalidClient(f"the client assertion's jti must be 1 to {MAX_JTI_LENGTH} characters")
    return VerifiedAssertion(
        client_id=client.id,
        jti=jti,
        expires_at=dt.datetime.fromtimestamp(int(exp) + CLOCK_LEEWAY, dt.UTC),
    )


def _jti_hash(client_id: str, jti: str) -> bytes:
    # NUL cannot occur in a client id (ClientConfig.id), so the pair is unambiguous.
    return hashlib.sha256(f"{client_id}\x00{jti}".encode("utf-8", "surrogatepass")).digest()


async def record_assertion(engine: AsyncEngine, assertion: VerifiedAssertion) -> None:
    """Spend the assertion's ``jti``: ``InvalidClient`` if this client presented it before.

    One insert, committed before the client is let in; on a conflict nothing is written and the
    assertion is refused (also when another replica took it a moment ago).
    """
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(CLIENT_ASSERTIONS)
        .values(
            jti_hash=_jti_hash(assertion.client_id, assertion.jti),
            client_id=assertion.client_id,
            expires_at=assertion.expires_at,
        )
        .on_conflict_do_nothing()
        .returning(CLIENT_ASSERTIONS.c.jti_hash)
    )
    async with engine.begin() as connection:
        inserted = (await connection.execute(statement)).first()
    if inserted is None:
        raise InvalidClient("the client assertion was already used (its jti is spent)")
