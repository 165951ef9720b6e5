"""``GET/POST /userinfo`` (OIDC Core §5.3): claims of the access token's user, per its scope."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.http.errors import NO_STORE
from broker.oauth.callers import authenticated_caller
from broker.oauth.tokens import UserClaims


async def userinfo(request: Request) -> Response:
    caller = await authenticated_caller(request, allow_form=True)
    user_claims = UserClaims.from_row(str(caller.user_id), caller.user)
    scopes = set(str(caller.claims.get("scope", "")).split())
    return JSONResponse(user_claims.for_scopes(scopes), headers=NO_STORE)
