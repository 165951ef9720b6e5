"""``POST /revoke`` (RFC 7009) and ``DELETE /auth/oauth2/revoke`` (the first-party API).

A user's access token cannot be revoked on its own (it is verified offline), so revoking either
kind of token revokes its session: the refresh-token family dies, and the session's access
tokens are refused at ``/userinfo`` and introspection at once and published on the revocation
stream (RFC 7009 §2.1 allows revoking the grant behind an access token). A service token
(``client_credentials``) has no session: it alone is revoked, by its ``jti``
(``broker.oauth.service_tokens``).
"""

from __future__ import annotations

import uuid

from shared.auth_sessions import revoke_session, revoke_user_sessions
from shared.revocations import Revocation
from shared.runtime import Runtime
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, InvalidRequest
from broker.http.forms import form_params, json_params
from broker.http.openapi import (
    BEARER,
    CLIENT_AUTHENTICATION,
    UUID,
    Answer,
    Body,
    Contract,
    Operation,
    json_answer,
    query,
    strict_object,
    token_form,
)
from broker.oauth import abuse_limits
from broker.oauth.callers import Caller, authenticated_caller
from broker.oauth.presented_tokens import ServiceToken, identify
from broker.oauth.service_tokens import revoke_service_token


async def revoke(request: Request) -> Response:
    """RFC 7009: client authentication first; 200 whether or not the token meant anything."""
    runtime = runtime_of(request)
    params = await form_params(request)
    client = await abuse_limits.authenticate(runtime, request, params)
    token = params.get("token")
    if not token:
        raise InvalidRequest("token is required")
    revocations: list[Revocation] = []
    async with runtime.engine.begin() as connection:
        presented = await identify(runtime, token, connection)
        now = runtime.clock.now()
        actor = f"client:{client.id}"
        if presented is None or presented.client_id != client.id:
            # §2.1: a client revokes only its own tokens; another client's token is left
            # alone and the answer is the same 200, so the caller learns nothing about it.
            pass
        elif isinstance(presented, ServiceToken):
            # A service token has no session: it alone is revoked (docs/security.md
            # "Service tokens").
            await revoke_service_token(connection, presented.claims, now=now, actor=actor)
        else:
            revocation = await revoke_session(
                connection, presented.session_id, now=now, reason="revoked_by_client", actor=actor
            )
            revocations += [revocation] if revocation else []
    await runtime.revocations.publish(revocations)
    return Response(status_code=200, headers=NO_STORE)


async def revoke_own(request: Request) -> Response:
    """The signed-in user ends their session, a token of theirs, or (``?all=true``) every session.

    Body (optional, JSON): ``{"token": "..."}``. Answers ``{"revoked_sessions": [sid, ...]}``.
    """
    runtime = runtime_of(request)
    caller = await authenticated_caller(request)
    every = request.query_params.get("all", "").lower()
    if every not in ("", "true", "false"):
        raise InvalidRequest("all must be true or false")
    document = await json_params(request)
    unknown = set(document) - {"token"}
    if unknown:
        raise InvalidRequest(f"unknown field: {sorted(unknown)[0]}")
    actor = f"user:{caller.user_id}"
    now = runtime.clock.now()
    revocations: list[Revocation] = []
    async with runtime.engine.begin() as connection:
        if every == "true":
            revocations = await revoke_user_sessions(
                connection, caller.user_id, now=now, reason="revoked_by_user", actor=actor
            )
        else:
            target = await _target_session(runtime, connection, caller, document.get("token"))
            if target is not None:
                revocation = await revoke_session(
                    connection, target, now=now, reason="revoked_by_user", actor=actor
                )
                revocations += [revocation] if revocation else []
    await runtime.revocations.publish(revocations)
    body = {"revoked_sessions": [str(revocation.session_id) for revocation in revocations]}
    return JSONResponse(body, headers=NO_STORE)


async def _target_session(
    runtime: Runtime, connection: AsyncConnection, caller: Caller, token: str | None
) -> uuid.UUID | None:
    """The session to end: the caller's own, or that of a token the caller's user holds."""
    if token is None:
        return caller.session_id
    presented = await identify(runtime, token, connection)
    if isinstance(presented, ServiceToken):
        return None  # no user's token: nothing of the caller's to end
    if presented is None or presented.user_id != str(caller.user_id):
        return None  # unknown, or someone else's: nothing is revoked and nothing is told
    return presented.session_id


CONTRACT = Contract(
    operations=(
        Operation(
            "POST",
            "/revoke",
            "revoke",
            "Token revocation (RFC 7009): the token's session (a service token: the token) ends; "
            "unknown tokens too get 200",
            "OAuth 2.0",
            body=token_form(),
            answers=(Answer(200, "revoked, or nothing to revoke (the same answer)"),),
            errors=(InvalidRequest,),
            security=CLIENT_AUTHENTICATION,
        ),
        Operation(
            "DELETE",
            "/auth/oauth2/revoke",
            "revoke_own",
            "End the caller's session, a session of one of their tokens, or all their sessions",
            "First-party API",
            parameters=(
                query(
                    "all",
                    {"enum": ["true", "false"]},
                    "true: every session of the user",
                ),
            ),
            body=Body(
                "application/json",
                strict_object({"token": {"type": "string"}}),
                required=False,
                description="a token of the caller's user whose session ends instead",
            ),
            answers=(
                json_answer(
                    200,
                    "the sessions ended",
                    strict_object(
                        {"revoked_sessions": {"type": "array", "items": UUID}},
                        required=["revoked_sessions"],
                    ),
                ),
            ),
            errors=(InvalidRequest,),
            security=BEARER,
        ),
    ),
)
