"""The caller of an admin endpoint: a live access token with the ``admin`` scope, of a user
who is an admin now (``broker.oauth.roles``)."""

from __future__ import annotations

from shared.settings import Settings
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request

from broker.http.context import runtime_of
from broker.http.errors import AccessDenied, InsufficientScope
from broker.oauth.callers import Caller, authenticated_caller
from broker.oauth.roles import ADMIN_SCOPE, is_admin_user


async def require_admin(connection: AsyncConnection, settings: Settings, caller: Caller) -> None:
    """403 ``access_denied`` for a signed-in user who is not an admin (any more)."""
    if not await is_admin_user(connection, settings, caller.user_id):
        raise AccessDenied("this needs an admin")


async def authenticated_admin(request: Request) -> Caller:
    """401 without a live token; 403 ``insufficient_scope`` for a token without the ``admin``
    scope (an admin's ordinary token from any relying party, RFC 6750 §3.1); 403
    ``access_denied`` unless the user is an admin at this moment."""
    runtime = runtime_of(request)
    caller = await authenticated_caller(request)
    if ADMIN_SCOPE not in str(caller.claims.get("scope", "")).split():
        raise InsufficientScope(
            "the admin API needs an access token with the admin scope", scope=ADMIN_SCOPE
        )
    async with runtime.engine.connect() as connection:
        await require_admin(connection, runtime.settings, caller)
    return caller
