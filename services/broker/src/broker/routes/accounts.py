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
from shared.audit import record_audit_core
from shared.db.tables import LINKS, PROFILES, USERS
from shared.providers.errors import ProviderError
from shared.runtime import Runtime
from shared.upstream_tokens import unseal_upstream_token
from shared.user_claims import refresh_user_claims
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, Conflict, InvalidRequest, NotFound
from broker.http.forms import is_utf8, json_object
from broker.http.pages import error_page
from broker.login.linking import LinkNotAllowed, UnlinkRefused, link_start, unlink
from broker.oauth.callers import Caller, authenticated_caller
from broker.routes.authorize import authorize_link

log = structlog.get_logger("broker.accounts")

EDITABLE = ("display_name", "primary_email_provider", "primary_avatar_provider")
# What a provider asserts about the user: read-only here, refused by name (DESIGN §5).
PROVIDER_ASSERTED = (
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "picture",
    "avatar_url",
    "sub",
    "subject",
    "id",
    "status",
    "profiles",
)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def providers(request: Request) -> Response:
    runtime = runtime_of(request)
    linked: set[str] | None = None
    if request.headers.get("authorization"):
        caller = await authenticated_caller(request)
        async with runtime.engine.connect() as connection:
            linked = set(
                (
                    await connection.execute(
                        select(PROFILES.c.provider).where(PROFILES.c.user_id == caller.user_id)
                    )
                ).scalars()
            )
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


async def _profile_document(
    runtime: Runtime, connection: AsyncConnection, caller: Caller
) -> dict[str, Any]:
    user = (await connection.execute(select(USERS).where(USERS.c.id == caller.user_id))).one()
    rows = (
        await connection.execute(
            select(PROFILES, LINKS.c.state.label("link_state"))
            .outerjoin(LINKS, LINKS.c.profile_id == PROFILES.c.id)
            .where(PROFILES.c.user_id == caller.user_id)
            .order_by(PROFILES.c.created_at, PROFILES.c.id)
        )
    ).all()
    return {
        "user": {
            "id": str(user.id),
            "display_name": user.display_name,
            "custom_display_name": user.custom_display_name,
            "email": user.email,
            "email_verified": bool(user.email_verified),
            "picture": user.picture,
            "preferred_username": user.preferred_username,
            "primary_email_provider": user.primary_email_provider,
            "primary_avatar_provider": user.primary_avatar_provider,
            "status": user.status,
            "created_at": _iso(user.created_at),
            "last_login_at": _iso(user.last_login_at),
        },
        "profiles": [
            {
                "provider": row.provider,
                "provider_type": row.provider_type,
                "provider_configured": row.provider in runtime.providers,
                "subject": row.subject,
                "email": row.email,
                "email_verified": bool(row.email_verified),
                "name": row.name,
                "given_name": row.given_name,
                "family_name": row.family_name,
                "preferred_username": row.preferred_username,
                "picture": row.avatar_url,
                "link_state": row.link_state,
                "email_unverified_at": _iso(row.email_unverified_at),
                "linked_at": _iso(row.created_at),
                "last_login_at": _iso(row.last_login_at),
                "last_synced_at": _iso(row.last_synced_at),
            }
            for row in rows
        ],
    }


async def profile(request: Request) -> Response:
    runtime = runtime_of(request)
    caller = await authenticated_caller(request)
    if request.method == "PUT":
        await _edit_profile(request, runtime, caller)
    async with runtime.engine.connect() as connection:
        document = await _profile_document(runtime, connection, caller)
    return JSONResponse(document, headers=NO_STORE)


async def _edit_profile(request: Request, runtime: Runtime, caller: Caller) -> None:
    changes = await json_object(request, empty_ok=False)
    for name in changes:
        if name in PROVIDER_ASSERTED:
            raise InvalidRequest(f"{name} is asserted by the identity provider and read-only")
        if name not in EDITABLE:
            raise InvalidRequest(f"unknown field: {name}")
        value = changes[name]
        if value is not None and not (
            isinstance(value, str) and is_utf8(value) and "\x00" not in value
        ):
            raise InvalidRequest(f"{name} must be a string (without NUL) or null")
    values: dict[str, Any] = {}
    if "display_name" in changes:
        display_name = (changes["display_name"] or "").strip()
        if len(display_name) > 200:
            raise InvalidRequest("display_name is longer than 200 characters")
        values["custom_display_name"] = display_name or None
    now = runtime.clock.now()
    async with runtime.engine.begin() as connection:
        linked = set(
            (
                await connection.execute(
                    select(PROFILES.c.provider).where(PROFILES.c.user_id == caller.user_id)
                )
            ).scalars()
        )
        for name in ("primary_email_provider", "primary_avatar_provider"):
            if name in changes:
                if changes[name] is not None and changes[name] not in linked:
                    raise InvalidRequest(f"{name} must name a linked provider")
                values[name] = changes[name]
        await connection.execute(
            update(USERS).where(USERS.c.id == caller.user_id).values(**values, updated_at=now)
        )
        await refresh_user_claims(connection, caller.user_id, now)
        await record_audit_core(
            connection,
            action="profile.updated",
            actor=f"user:{caller.user_id}",
            subject=str(caller.user_id),
            data={"fields": sorted(changes)},
            now=now,
        )


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
        access_token, refresh_token = await _upstream_tokens_to_revoke(
            runtime, connection, caller, provider_id
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


async def _upstream_tokens_to_revoke(
    runtime: Runtime, connection: AsyncConnection, caller: Caller, provider_id: str
) -> tuple[str | None, str | None]:
    """The link's access and refresh tokens, decrypted, to revoke after unlinking."""
    row = (
        await connection.execute(
            select(
                LINKS.c.id,
                LINKS.c.access_token_enc,
                LINKS.c.refresh_token_enc,
            ).where(
                LINKS.c.user_id == caller.user_id,
                LINKS.c.provider == provider_id,
            )
        )
    ).first()
    if row is None:
        return None, None

    keyring = runtime.settings.keyring
    return (
        unseal_upstream_token(keyring, row.id, "access_token", row.access_token_enc),
        unseal_upstream_token(keyring, row.id, "refresh_token", row.refresh_token_enc),
    )
