"""``/admin/oauth2/clients``: the configured clients and their service tokens
(``broker.admin.clients``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.admin.callers import authenticated_admin
from broker.admin.clients import client_listing
from broker.http.context import runtime_of
from broker.http.errors import NO_STORE, InvalidRequest
from broker.http.openapi import (
    ADMIN,
    COUNT,
    TIMESTAMP,
    Contract,
    Operation,
    Schema,
    json_answer,
    nullable,
    query,
    ref,
    strict_object,
)
from broker.oauth.grant_types import GRANTS


async def list_clients(request: Request) -> Response:
    await authenticated_admin(request)
    body = await client_listing(runtime_of(request), request.query_params)
    return JSONResponse(body, headers=NO_STORE)


_NAMES: Schema = {"type": "array", "items": {"type": "string"}}

CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/admin/oauth2/clients",
            "admin_clients",
            "The configured clients (never a secret), with each service's token activity",
            "Admin API",
            parameters=(
                query("grant_type", {"enum": list(GRANTS)}, "only clients that may use it"),
            ),
            answers=(json_answer(200, "the clients", ref("ClientList")),),
            errors=(InvalidRequest,),
            security=ADMIN,
        ),
    ),
    schemas={
        "ClientList": strict_object(
            {"clients": {"type": "array", "items": ref("Client")}}, required=["clients"]
        ),
        "Client": strict_object(
            {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "public": {"type": "boolean"},
                "grant_types": _NAMES,
                "token_endpoint_auth_methods": _NAMES,
                "jwks_kids": _NAMES,
                "scopes": _NAMES,
                "audience": _NAMES,
                "redirect_uris": _NAMES,
                "post_logout_redirect_uris": _NAMES,
                "service_tokens": nullable(
                    strict_object(
                        {
                            "issued_24h": COUNT,
                            "issued_30d": COUNT,
                            "last_issued_at": nullable(TIMESTAMP),
                        },
                        required=["issued_24h", "issued_30d", "last_issued_at"],
                        description="client_credentials tokens issued (null for a client "
                        "that may not use the grant)",
                    )
                ),
            },
            required=[
                "id",
                "name",
                "public",
                "grant_types",
                "token_endpoint_auth_methods",
                "jwks_kids",
                "scopes",
                "audience",
                "redirect_uris",
                "post_logout_redirect_uris",
                "service_tokens",
            ],
        ),
    },
)
