"""``GET/POST /logout``: OpenID Connect RP-Initiated Logout 1.0.

With a valid ``id_token_hint`` (expired ones included, §2) the session named by its ``sid`` ends
at once. Without one, the user is asked first: a form posts back here with a CSRF token bound to
the browser-session cookie, and the confirmation ends the sessions this browser signed in (of
``client_id``, if given) — so no other site can sign a user out (docs/security.md "Logout needs
proof").

``post_logout_redirect_uri`` must exactly match one the client registered, and needs a known
client (from the hint's ``aud`` or ``client_id``); the redirect carries ``state`` back. Any
invalid parameter is a 400 page, never a redirect.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from shared.auth_sessions import revoke_browser_sessions, revoke_session
from shared.crypto.opaque import token_hash
from shared.db.tables import SESSIONS
from shared.revocations import Revocation
from shared.runtime import Runtime
from shared.settings import ClientConfig
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.http.context import runtime_of
from broker.http.errors import InvalidRequest
from broker.http.forms import form_params, single_params
from broker.http.pages import error_page, logout_confirm_page, redirect_sources, signed_out_page
from broker.login import browser_sessions
from broker.oauth.authorization import redirect_with
from broker.oauth.tokens import TokenInvalid, verify_id_token_hint


class LogoutRefused(Exception):
    """The logout request is invalid; shown as a 400 page."""


async def logout(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        if request.method == "POST":
            return await _confirmed(request, runtime, await form_params(request))
        params = single_params(list(request.query_params.multi_items()))
        return await _requested(request, runtime, params)
    except (LogoutRefused, InvalidRequest) as exc:
        return error_page("Sign-out failed", str(exc) or "The sign-out request is not valid.")


async def _requested(request: Request, runtime: Runtime, params: Mapping[str, str]) -> Response:
    hint: Mapping[str, Any] | None = None
    if params.get("id_token_hint"):
        try:
            hint = verify_id_token_hint(
                params["id_token_hint"], runtime.keys.snapshot, runtime.settings
            )
        except TokenInvalid:
            raise LogoutRefused("The id_token_hint is not an ID token of this service.") from None
    client = _client(runtime, params.get("client_id"), hint)
    redirect = _redirect_uri(client, params.get("post_logout_redirect_uri"))
    state = params.get("state")
    if hint is not None:
        revocations = await _end_hinted_session(runtime, hint)
        await runtime.revocations.publish(revocations)
        return _done(redirect, state)
    browser = browser_sessions.current(request, runtime)
    if browser is None:
        return _done(redirect, state)  # this browser signed nothing in: nothing to end
    fields = {"csrf": browser_sessions.csrf_token(runtime, browser)}
    fields |= {"client_id": client.id} if client is not None else {}
    fields |= {"post_logout_redirect_uri": redirect} if redirect is not None else {}
    fields |= {"state": state} if state is not None else {}
    client_name = (client.name or client.id) if client is not None else None
    targets = redirect_sources([redirect] if redirect is not None else [])
    return logout_confirm_page(f"{runtime.settings.issuer}/logout", fields, client_name, targets)


async def _confirmed(request: Request, runtime: Runtime, form: Mapping[str, str]) -> Response:
    browser = browser_sessions.current(request, runtime)
    if browser is None or not browser_sessions.csrf_matches(runtime, browser, form.get("csrf", "")):
        raise LogoutRefused("This sign-out form has expired. Start the sign-out again.")
    client = _client(runtime, form.get("client_id"), None)
    redirect = _redirect_uri(client, form.get("post_logout_redirect_uri"))
    async with runtime.engine.begin() as connection:
        revocations = await revoke_browser_sessions(
            connection,
            token_hash(browser),
            client_id=client.id if client is not None else None,
            now=runtime.clock.now(),
            reason="logout",
            actor="browser",
        )
    await runtime.revocations.publish(revocations)
    response = _done(redirect, form.get("state"))
    if client is None:
        browser_sessions.clear_cookie(response, runtime)  # every session of it has ended
    return response


def _client(
    runtime: Runtime, client_id: str | None, hint: Mapping[str, Any] | None
) -> ClientConfig | None:
    """The client the logout is for: ``client_id``, else the hint's audience; they must agree."""
    audience = hint.get("aud") if hint is not None else None
    audiences = [audience] if isinstance(audience, str) else list(audience or [])
    if client_id is None and len(audiences) == 1:
        client_id = str(audiences[0])
    if client_id is None:
        return None
    client = runtime.settings.client(client_id)
    if client is None:
        raise LogoutRefused("The application is not known to this service.")
    if hint is not None and client_id not in audiences:
        raise LogoutRefused("The id_token_hint was issued to another application.")
    return client


def _redirect_uri(client: ClientConfig | None, uri: str | None) -> str | None:
    """docs/security.md "Logout needs proof": an exact match of one the client registered (no open
    redirect)."""
    if uri is None:
        return None
    if client is None or uri not in client.post_logout_redirect_uris:
        raise LogoutRefused("The address to return to after sign-out is not registered.")
    return uri


async def _end_hinted_session(runtime: Runtime, hint: Mapping[str, Any]) -> list[Revocation]:
    try:
        session_id = uuid.UUID(str(hint["sid"]))
    except ValueError:
        return []
    async with runtime.engine.begin() as connection:
        owner = await connection.scalar(
            select(SESSIONS.c.user_id).where(SESSIONS.c.id == session_id)
        )
        if owner is None or str(owner) != str(hint["sub"]):
            return []
        revocation = await revoke_session(
            connection,
            session_id,
            now=runtime.clock.now(),
            reason="logout",
            actor=f"user:{owner}",
        )
    return [revocation] if revocation is not None else []


def _done(redirect: str | None, state: str | None) -> Response:
    if redirect is None:
        return signed_out_page()
    return RedirectResponse(redirect_with(redirect, {"state": state}), status_code=303)
