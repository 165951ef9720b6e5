"""The signed-in user's account: providers, profile, links (DESIGN §5 ``/auth/oauth2/*``).

* ``GET /auth/oauth2/providers`` — every configured provider with its status; with a Bearer
  token also which ones the caller has linked.
* ``GET /auth/oauth2/profile`` / ``PUT`` — the user and each linked profile; the PUT edits only
  what the broker owns (display name, which link's email and avatar are primary) and refuses,
  by name, any field a provider asserts.
* ``GET /auth/oauth2/{provider}/link`` — the link flow (``broker.login.linking`` says who may; a
  Bearer token may not).
* ``DELETE /auth/oauth2/links/{provider}`` — unlink; never the last way to sign in.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from shared.providers.errors import ProviderError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, Conflict, InvalidRequest, NotFound
from broker.http.forms import json_object
from broker.http.pages import error_page
from broker.login.linking import (
    LinkNotAllowed,
    UnlinkRefused,
    link_start,
    unlink,
    upstream_tokens_to_revoke,
)
from broker.login.profile import edit_profile, linked_providers, profile_document
from broker.oauth.callers import authenticated_caller
from broker.routes.authorize import authorize_link

log = structlog.get_logger("broker.accounts")


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def providers(request: Request) -> Response:
    runtime = runtime_of(request)
    linked: set[str] | None = None
    if request.headers.get("authorization"):
        caller = await authenticated_caller(request)
        async with runtime.engine.connect() as connection:
            linked = await linked_providers(connection, caller.user_id)
    health = await runtime.provider_health.statuses()
    listed = []
    for config in runtime.settings.providers:
        probe = health.get(config.id)
        entry: dict[str, Any] = {
            "id": config.id,
            "type": config.type,
            "display_name": (
                runtime.providers[config.id].display_name
                if config.id in runtime.providers
                else config.title
            ),
            "status": (
                "disabled"
                if config.disabled
                else "reachable"
                if probe is not None and probe.reachable
                else "configured"
            ),
            "reachable": None if probe is None else probe.reachable,
            "checked_at": None if probe is None else _iso(probe.checked_at),
            "login_url": (
                None
                if config.disabled
                else f"{runtime.settings.issuer}/auth/oauth2/{config.id}/login"
            ),
        }
        if linked is not None:
            entry["linked"] = config.id in linked
        listed.append(entry)
    return JSONResponse({"providers": listed}, headers=NO_STORE)


async def profile(request: Request) -> Response:
    runtime = runtime_of(request)
    caller = await authenticated_caller(request)
    if request.method == "PUT":
        await edit_profile(runtime, caller, await json_object(request, empty_ok=False))
    async with runtime.engine.connect() as connection:
        document = await profile_document(runtime, connection, caller)
    return JSONResponse(document, headers=NO_STORE)


async def link(request: Request) -> Response:
    runtime = runtime_of(request)
    provider_id = request.path_params["provider"]
    if request.headers.get("authorization"):
        # docs/security.md "Linking needs a fresh browser sign-in": a Bearer token (a leaked
        # one, say) never starts a link; only the signed-in browser does.
        raise InvalidRequest(
            "a link starts from the browser signed in to the broker (a plain navigation with "
            "its session cookie), never from an access token"
        )
    if provider_id not in runtime.providers:
        return error_page("Unknown provider", "There is no such identity provider here.", 404)
    try:
        start = await link_start(request, runtime)
    except LinkNotAllowed as exc:
        return error_page("Cannot link", f"{exc}.", 400)
    return await authorize_link(request, provider_id, start)


async def remove_link(request: Request) -> Response:
    runtime = runtime_of(request)
    caller = await authenticated_caller(request)
    provider_id = request.path_params["provider"]
    now = runtime.clock.now()
    async with runtime.engine.begin() as connection:
        access_token, refresh_token = await upstream_tokens_to_revoke(
            connection, runtime.settings.keyring, caller.user_id, provider_id
        )
        try:
            unlinked = await unlink(
                connection,
                user_id=caller.user_id,
                provider_id=provider_id,
                login_providers=frozenset(runtime.providers),
                now=now,
            )
        except UnlinkRefused as exc:
            if exc.reason == "not_linked":
                raise NotFound(exc.description) from None
            raise Conflict(exc.description) from None
    await runtime.revocations.publish(unlinked.revocations)
    provider = runtime.providers.get(provider_id)
    if provider is not None and (access_token or refresh_token):
        try:
            # Best effort: the link is gone either way.
            await provider.revoke(access_token=access_token, refresh_token=refresh_token)
        except ProviderError as exc:
            log.info("link.upstream_revoke_failed", provider=provider_id, reason=str(exc))
    body = {
        "unlinked": provider_id,
        "revoked_sessions": [str(revocation.session_id) for revocation in unlinked.revocations],
    }
    return JSONResponse(body, headers=NO_STORE)
