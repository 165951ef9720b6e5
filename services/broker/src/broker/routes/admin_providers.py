"""``/admin/oauth2/providers``: the configured providers with their state, health, links and
sign-ins; switching one off or on at runtime (``broker.admin.providers``,
``broker.admin.provider_switch``)."""

from __future__ import annotations

from shared.models.oauth2_token import LINK_STATES
from shared.models.provider_state import REASON_LENGTH
from shared.settings.base import ID_PATTERN
from shared.settings.providers import PROVIDER_TYPES
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.admin.pagination import refuse_unknown
from broker.admin.provider_switch import ProviderChange, switch_provider
from broker.admin.providers import provider_entry, providers_listing
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, Conflict, InvalidRequest, NotFound
from broker.http.forms import json_object
from broker.http.openapi import (
    ADMIN,
    COUNT,
    TIMESTAMP,
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


def _no_parameters(request: Request) -> None:
    refuse_unknown(request.query_params, ())


async def list_providers(request: Request) -> Response:
    await authenticated_admin(request)
    _no_parameters(request)
    body = await providers_listing(runtime_of(request))
    return JSONResponse(body, headers=NO_STORE)


async def get_provider(request: Request) -> Response:
    await authenticated_admin(request)
    _no_parameters(request)
    body = await provider_entry(runtime_of(request), request.path_params["provider_id"])
    return JSONResponse(body, headers=NO_STORE)


async def change_provider(request: Request) -> Response:
    admin = await authenticated_admin(request)
    _no_parameters(request)
    change = ProviderChange.parse(await json_object(request, empty_ok=False))
    body = await switch_provider(
        runtime_of(request), admin.user_id, request.path_params["provider_id"], change
    )
    return JSONResponse(body, headers=NO_STORE)


_TEXT: Schema = {"type": "string"}
_MAYBE_TEXT = nullable(_TEXT)
_MAYBE_TIME = nullable(TIMESTAMP)
_BOOLEAN: Schema = {"type": "boolean"}
_SOURCE: Schema = {"enum": ["config", "runtime"]}
_PROVIDER_ID = path_parameter(
    "provider_id", {"type": "string", "pattern": ID_PATTERN}, "a configured provider's id"
)

CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/admin/oauth2/providers",
            "admin_providers",
            "Every configured provider: state, health, links, sign-ins (never a secret)",
            "Admin API",
            answers=(
                json_answer(
                    200,
                    "the providers, in the configuration's order",
                    strict_object(
                        {"providers": {"type": "array", "items": ref("AdminProvider")}},
                        required=["providers"],
                    ),
                ),
            ),
            errors=(InvalidRequest,),
            security=ADMIN,
        ),
        Operation(
            "GET",
            "/admin/oauth2/providers/{provider_id}",
            "admin_provider",
            "One configured provider",
            "Admin API",
            parameters=(_PROVIDER_ID,),
            answers=(json_answer(200, "the provider", ref("AdminProvider")),),
            errors=(InvalidRequest, NotFound),
            security=ADMIN,
        ),
        Operation(
            "PATCH",
            "/admin/oauth2/providers/{provider_id}",
            "admin_switch_provider",
            "Switch a provider off or on at runtime, or back to the configuration's value",
            "Admin API",
            description=(
                "Disabling stops new sign-ins, callbacks in flight, links and the worker's "
                "refreshes and syncs through the provider at once on every replica; sessions "
                "it signed in keep working unless revoke_sessions ends them. A provider the "
                "configuration disables cannot be switched on here (409)."
            ),
            parameters=(_PROVIDER_ID,),
            body=Body(
                "application/json",
                strict_object(
                    {
                        "enabled": {
                            "type": ["boolean", "null"],
                            "description": "null: no override, the configuration decides",
                        },
                        "reason": nullable({"type": "string", "maxLength": REASON_LENGTH}),
                        "revoke_sessions": {
                            "type": "boolean",
                            "description": "with enabled: false, end every live session "
                            "signed in through the provider",
                        },
                    },
                    required=["enabled"],
                ),
            ),
            answers=(
                json_answer(
                    200,
                    "the provider's state now (changed: false when it already was)",
                    strict_object(
                        {
                            "id": _TEXT,
                            "enabled": _BOOLEAN,
                            "source": _SOURCE,
                            "changed": _BOOLEAN,
                            "revoked_sessions": COUNT,
                        },
                        required=["id", "enabled", "source", "changed", "revoked_sessions"],
                    ),
                ),
            ),
            errors=(InvalidRequest, NotFound, Conflict),
            security=ADMIN,
        ),
    ),
    schemas={
        "AdminProvider": strict_object(
            {
                "id": _TEXT,
                "type": {"enum": list(PROVIDER_TYPES)},
                "display_name": _TEXT,
                "upstream": _MAYBE_TEXT,
                "client_id": _MAYBE_TEXT,
                "scopes": {"type": "array", "items": _TEXT},
                "linking": strict_object(
                    {
                        "link_by_email": _BOOLEAN,
                        "on_upstream_revoked": nullable(
                            {"enum": ["revoke_sessions", "require_reauth"]}
                        ),
                    },
                    required=["link_by_email", "on_upstream_revoked"],
                ),
                "restrictions": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": _TEXT},
                },
                "enabled": _BOOLEAN,
                "source": _SOURCE,
                "configured_enabled": _BOOLEAN,
                "override": nullable(
                    strict_object(
                        {
                            "enabled": _BOOLEAN,
                            "reason": _MAYBE_TEXT,
                            "changed_by": _TEXT,
                            "changed_at": TIMESTAMP,
                        },
                        required=["enabled", "reason", "changed_by", "changed_at"],
                    )
                ),
                "health": nullable(
                    strict_object(
                        {
                            "reachable": _BOOLEAN,
                            "checked_at": TIMESTAMP,
                            "error": _MAYBE_TEXT,
                            "checks": {
                                "type": "array",
                                "items": strict_object(
                                    {
                                        "name": {"enum": ["discovery", "jwks", "api"]},
                                        "reachable": nullable(_BOOLEAN),
                                        "error": _MAYBE_TEXT,
                                    },
                                    required=["name", "reachable", "error"],
                                ),
                            },
                        },
                        required=["reachable", "checked_at", "error", "checks"],
                    )
                ),
                "last_error": nullable(
                    strict_object(
                        {
                            "error": _TEXT,
                            "at": TIMESTAMP,
                            "link_state": {"enum": list(LINK_STATES)},
                        },
                        required=["error", "at", "link_state"],
                    )
                ),
                "links": strict_object(
                    {
                        "total": COUNT,
                        "states": strict_object(
                            {state: COUNT for state in LINK_STATES}, required=list(LINK_STATES)
                        ),
                        "as_of": TIMESTAMP,
                    },
                    required=["total", "states", "as_of"],
                ),
                "sign_ins_24h": COUNT,
            },
            required=[
                "id",
                "type",
                "display_name",
                "upstream",
                "client_id",
                "scopes",
                "linking",
                "restrictions",
                "enabled",
                "source",
                "configured_enabled",
                "override",
                "health",
                "last_error",
                "links",
                "sign_ins_24h",
            ],
        ),
    },
)
