"""The ``client_credentials`` grant (RFC 6749 §4.4): a service's token for itself.

A confidential client whose ``grant_types`` list ``client_credentials`` gets an RFC 9068 access
token whose ``sub`` is its own id: no user, so no ``sid``, no refresh token and no ID token
(docs/security.md "Service tokens").

- ``scope``: the requested subset of the client's service scopes (its ``scopes`` without the
  user scopes ``openid``, ``email``, ``profile``, ``groups``, ``offline_access`` and ``admin``,
  which describe or act for a signed-in user); a user scope or one the client may not have is
  ``invalid_scope``. Without ``scope``, every service scope of the client (RFC 6749 §3.3 lets
  the server apply a registered default), possibly none.
- ``audience`` (space-separated, as Ory Hydra takes it) and ``resource`` (RFC 8707, one absolute
  URI): the token's ``aud``, each value among the client's ``audience`` (default the broker-wide
  ``BROKER_ACCESS_TOKEN_AUDIENCE``); anything else is ``invalid_target`` (RFC 8707 §2). Without
  either, every audience the client has.

Each token is audited ``token.issued`` (actor and subject ``client:<id>``, with the grant type,
scope, audience and ``jti``) in its own transaction before it is signed; the admin API counts
these rows (``broker.admin.clients``).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.audit import record_audit_core
from shared.runtime import Runtime
from shared.settings import ClientConfig
from shared.settings.clients import USER_SCOPES

from broker.http.context import RequestMeta
from broker.http.errors import InvalidScope, InvalidTarget, UnauthorizedClient
from broker.oauth.grants import IssuedTokens
from broker.oauth.tokens import service_token_claims, sign_service_token

GRANT_TYPE = "client_credentials"


def client_actor(client_id: str) -> str:
    """How audit rows name a client acting on its own behalf."""
    return f"client:{client_id}"


def granted_scope(client: ClientConfig, requested: str | None) -> str:
    """The scope of the token: the requested service scopes, or all of the client's."""
    allowed = client.service_scopes
    if requested is None:
        return " ".join(allowed)
    wanted = list(dict.fromkeys(requested.split()))
    for scope in wanted:
        if scope in USER_SCOPES:
            raise InvalidScope(
                f"scope {scope!r} is for signing users in; a service token has no user"
            )
        if scope not in allowed:
            raise InvalidScope(f"scope {scope!r} is not allowed for this client")
    return " ".join(wanted)


def granted_audience(
    client: ClientConfig, default_audience: str, params: Mapping[str, str]
) -> tuple[str, ...]:
    """The token's ``aud`` values: those asked for (``audience``, ``resource``), or all the
    client may have."""
    allowed = client.audience or (default_audience,)
    wanted = params.get("audience", "").split()
    resource = params.get("resource")
    if resource is not None:
        wanted.append(resource)
    if not wanted:
        return allowed
    for value in wanted:
        if value not in allowed:
            raise InvalidTarget(f"the audience {value!r} is not allowed for this client")
    return tuple(dict.fromkeys(wanted))


async def client_credentials_grant(
    runtime: Runtime, client: ClientConfig, params: Mapping[str, str], meta: RequestMeta
) -> IssuedTokens:
    """RFC 6749 §4.4.3: an access token for the authenticated client itself (§4.4.3: no
    refresh token)."""
    if client.is_public:  # the configuration refuses this; never issue one regardless
        raise UnauthorizedClient("client_credentials needs a confidential client")
    settings = runtime.settings
    scope = granted_scope(client, params.get("scope"))
    audience = granted_audience(client, settings.audience, params)
    now = runtime.clock.now()
    claims = service_token_claims(settings, client=client, scope=scope, audience=audience, now=now)
    actor = client_actor(client.id)
    async with runtime.engine.begin() as connection:
        await record_audit_core(
            connection,
            action="token.issued",
            actor=actor,
            subject=actor,
            client_id=client.id,
            ip=meta.ip,
            data={
                "grant_type": GRANT_TYPE,
                "scope": scope,
                "aud": list(audience),
                "jti": claims["jti"],
            },
            now=now,
        )
    body = {
        "access_token": sign_service_token(runtime.keys.snapshot, settings, claims),
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl,
        "scope": scope,
    }
    return IssuedTokens(body=body, user_id=None, provider="")
