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
import re
from typing import Any

import structlog
from shared.models.oauth2_token import LINK_STATES
from shared.provider_states import switched_off
from shared.providers.errors import ProviderError
from shared.settings.base import ID_PATTERN
from shared.settings.providers import PROVIDER_TYPES
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, Conflict, InvalidRequest, NotFound
from broker.http.forms import json_object
from broker.http.openapi import (
    BEARER,
    OPTIONAL_BEARER,
    TIMESTAMP,
    UUID,
    Body,
    Contract,
    Operation,
    Schema,
    json_answer,
    nullable,
    path_parameter,
    ref,
    strict_object,
)
from broker.http.pages import error_page
from broker.login.linking import (
    LinkNotAllowed,
    UnlinkRefused,
    link_start,
    unlink,
    upstream_tokens_to_revoke,
)
from broker.login.profile import EDITABLE, edit_profile, linked_providers, profile_document
from broker.oauth.callers import authenticated_caller
from broker.routes.authorize import authorize_link

log = structlog.get_logger("broker.accounts")


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def providers(request: Request) -> Response:
    runtime = runtime_of(request)
    caller = None
    if request.headers.get("authorization"):
        caller = await authenticated_caller(request)
    linked: set[str] | None = None
    async with runtime.engine.connect() as connection:
        # Disabled in the YAML or by an admin now (docs/security.md "Switching a provider off").
        paused = await switched_off(connection)
        if caller is not None:
            linked = await linked_providers(connection, caller.user_id)
    health = await runtime.provider_health.statuses()
    listed = []
    for config in runtime.settings.providers:
        probe = health.get(config.id)
        disabled = config.disabled or config.id in paused
        entry: dict[str, Any] = {
            "id": config.id,
            "type": config.type,
            "display_name": config.title,
            "status": (
                "disabled"
                if disabled
                else "reachable"
                if probe is not None and probe.reachable
                else "configured"
            ),
            "reachable": None if probe is None else probe.reachable,
            "checked_at": None if probe is None else _iso(probe.checked_at),
            "login_url": (
                None if disabled else f"{runtime.settings.issuer}/auth/oauth2/{config.id}/login"
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
    if not re.fullmatch(ID_PATTERN, provider_id):
        # Never a provider id, so never linked (and PostgreSQL could not even compare a NUL).
        raise NotFound(f"no link to {provider_id!r}")
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


_TEXT: Schema = {"type": "string"}
_MAYBE_TEXT = nullable(_TEXT)
_MAYBE_TIME = nullable(TIMESTAMP)
_PROVIDER_ID: Schema = {"type": "string", "pattern": ID_PATTERN}
_LINK_STATE = nullable({"enum": list(LINK_STATES)})
_PROFILE_ANSWER = json_answer(200, "the user and each linked profile", ref("Profile"))

CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/auth/oauth2/providers",
            "providers",
            "Every configured provider with its status; with a token, which ones are linked",
            "First-party API",
            answers=(
                json_answer(
                    200,
                    "the providers",
                    strict_object(
                        {"providers": {"type": "array", "items": ref("Provider")}},
                        required=["providers"],
                    ),
                ),
            ),
            security=OPTIONAL_BEARER,
        ),
        Operation(
            "GET",
            "/auth/oauth2/profile",
            "profile",
            "The signed-in user and each linked provider profile",
            "First-party API",
            answers=(_PROFILE_ANSWER,),
            security=BEARER,
        ),
        Operation(
            "PUT",
            "/auth/oauth2/profile",
            "edit_profile",
            "Edit what the broker owns; a provider-asserted field is a 400 naming it",
            "First-party API",
            body=Body(
                "application/json",
                strict_object(
                    {
                        "display_name": nullable({"type": "string", "maxLength": 200}),
                        "primary_email_provider": nullable(_PROVIDER_ID),
                        "primary_avatar_provider": nullable(_PROVIDER_ID),
                    },
                    description=f"any of {', '.join(EDITABLE)}; null restores the default",
                ),
            ),
            answers=(_PROFILE_ANSWER,),
            errors=(InvalidRequest,),
            security=BEARER,
        ),
        Operation(
            "DELETE",
            "/auth/oauth2/links/{provider}",
            "unlink",
            "Unlink a provider; never the last way to sign in (409)",
            "First-party API",
            parameters=(path_parameter("provider", _PROVIDER_ID, "a provider id"),),
            answers=(
                json_answer(
                    200,
                    "unlinked; the sessions signed in through it ended",
                    strict_object(
                        {
                            "unlinked": _TEXT,
                            "revoked_sessions": {"type": "array", "items": UUID},
                        },
                        required=["unlinked", "revoked_sessions"],
                    ),
                ),
            ),
            errors=(NotFound, Conflict),
            security=BEARER,
        ),
    ),
    schemas={
        "Provider": strict_object(
            {
                "id": _TEXT,
                "type": {"enum": list(PROVIDER_TYPES)},
                "display_name": _TEXT,
                "status": {"enum": ["configured", "reachable", "disabled"]},
                "reachable": nullable({"type": "boolean"}),
                "checked_at": _MAYBE_TIME,
                "login_url": nullable({"type": "string", "format": "uri"}),
                "linked": {"type": "boolean", "description": "with a Bearer token only"},
            },
            required=[
                "id",
                "type",
                "display_name",
                "status",
                "reachable",
                "checked_at",
                "login_url",
            ],
        ),
        "Profile": strict_object(
            {
                "user": strict_object(
                    {
                        "id": UUID,
                        "display_name": _MAYBE_TEXT,
                        "custom_display_name": _MAYBE_TEXT,
                        "email": _MAYBE_TEXT,
                        "email_verified": {"type": "boolean"},
                        "picture": _MAYBE_TEXT,
                        "preferred_username": _MAYBE_TEXT,
                        "primary_email_provider": _MAYBE_TEXT,
                        "primary_avatar_provider": _MAYBE_TEXT,
                        "status": {"enum": ["active", "disabled"]},
                        "created_at": TIMESTAMP,
                        "last_login_at": _MAYBE_TIME,
                    },
                    required=["id", "email", "email_verified", "status", "created_at"],
                ),
                "profiles": {"type": "array", "items": ref("LinkedProfile")},
            },
            required=["user", "profiles"],
        ),
        "LinkedProfile": strict_object(
            {
                "provider": _TEXT,
                "provider_type": _TEXT,
                "provider_configured": {"type": "boolean"},
                "subject": _TEXT,
                "email": _MAYBE_TEXT,
                "email_verified": {"type": "boolean"},
                "name": _MAYBE_TEXT,
                "given_name": _MAYBE_TEXT,
                "family_name": _MAYBE_TEXT,
                "preferred_username": _MAYBE_TEXT,
                "picture": _MAYBE_TEXT,
                "link_state": _LINK_STATE,
                "email_unverified_at": _MAYBE_TIME,
                "linked_at": TIMESTAMP,
                "last_login_at": _MAYBE_TIME,
                "last_synced_at": _MAYBE_TIME,
            },
            required=["provider", "subject", "email_verified", "link_state", "linked_at"],
        ),
    },
)
