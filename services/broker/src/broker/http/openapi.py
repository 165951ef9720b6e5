"""The vocabulary of the OpenAPI 3.1 document: operations, their answers and errors, security.

The document is never written by hand. Each route module that answers JSON declares its
operations (a :class:`Contract`) next to its handlers; ``broker.routes.openapi`` collects
them, names the routes left out on purpose, and serves the result at ``GET /openapi.json``.
This module only turns those small definitions into OpenAPI objects:

- an :class:`Operation` is one method on one path of the route table: parameters, a request
  body, its success answers, and the broker errors it can raise;
- errors come from the error classes themselves (``broker.http.errors``, one class per RFC
  code): each status an operation can answer gets one response whose ``error`` is one of the
  codes of the classes listed for it, as ``{"error", "error_description"}``;
- some errors go with a shape rather than a handler, so they are added here: a request body
  may meet the body cap (413, and 400 for a malformed ``Content-Length``), an endpoint that
  reads the database may find it down (503), and a path parameter holding a ``/`` reaches no
  route (404 ``not_found``, the router's);
- security schemes: client authentication (HTTP Basic, or ``client_id``/``client_secret`` or a
  ``client_assertion`` in the body, which OpenAPI cannot name as a scheme), a Bearer access
  token, and the broker's own OAuth 2.0 flow for the ``admin`` scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.http.errors import (
    AccessDenied,
    InsufficientScope,
    InvalidClient,
    InvalidRequest,
    InvalidToken,
    OAuthError,
    PayloadTooLarge,
    TemporarilyUnavailable,
    TooManyRequests,
)
from broker.http.forms import MAX_PARAM_LENGTH

Schema = dict[str, Any]
OPENAPI_VERSION = "3.1.0"

# The router's own answers (``broker.app``'s HTTPException handler): no OAuthError class.
ROUTE_NOT_FOUND = (404, "not_found")
METHOD_NOT_ALLOWED = (405, "method_not_allowed")

# Security scheme names, and the requirements operations use.
CLIENT_BASIC = "clientSecretBasic"
ACCESS_TOKEN = "accessToken"
ADMIN_OAUTH = "brokerOAuth2"
ADMIN_SCOPE = "admin"
Requirement = Mapping[str, list[str]]
NO_SECURITY: tuple[Requirement, ...] = ()
# HTTP Basic, or (the empty requirement) client_secret_post or a public client's client_id.
CLIENT_AUTHENTICATION: tuple[Requirement, ...] = ({CLIENT_BASIC: []}, {})
BEARER: tuple[Requirement, ...] = ({ACCESS_TOKEN: []},)
OPTIONAL_BEARER: tuple[Requirement, ...] = ({ACCESS_TOKEN: []}, {})
ADMIN: tuple[Requirement, ...] = ({ADMIN_OAUTH: [ADMIN_SCOPE]},)

ErrorSource = type[OAuthError] | tuple[int, str]


def ref(name: str) -> Schema:
    """A reference to a named schema of the document."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or JSON null."""
    return {"anyOf": [schema, {"type": "null"}]}


def strict_object(
    properties: Mapping[str, Schema], *, required: Iterable[str] = (), **extra: Any
) -> Schema:
    """An object with exactly these properties (``required`` among them)."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
        **extra,
    }


UUID: Schema = {"type": "string", "format": "uuid"}
COUNT: Schema = {"type": "integer", "minimum": 0}
# A form parameter: a string no longer than ``broker.http.forms`` reads.
FORM_PARAM: Schema = {"type": "string", "maxLength": MAX_PARAM_LENGTH}


def client_authentication_fields(value: Schema) -> dict[str, Schema]:
    """The body fields of client authentication, each a ``value``: ``client_secret_post`` (RFC
    6749 §2.3.1), ``private_key_jwt`` (RFC 7523 §2.2), or a public client's ``client_id``."""
    return {
        "client_id": {**value, "description": "client_secret_post, or a public client"},
        "client_secret": {**value, "description": "client_secret_post (never with HTTP Basic)"},
        "client_assertion_type": {
            **value,
            "description": "private_key_jwt: urn:ietf:params:oauth:client-assertion-type:"
            "jwt-bearer",
        },
        "client_assertion": {
            **value,
            "description": "private_key_jwt: a JWT signed with one of the client's keys",
        },
    }


TIMESTAMP: Schema = {"type": "string", "format": "date-time"}


@dataclass(frozen=True)
class Parameter:
    """A query, path or header parameter."""

    name: str
    location: str  # query | path | header
    schema: Schema
    description: str
    required: bool = False

    def render(self) -> Schema:
        return {
            "name": self.name,
            "in": self.location,
            "description": self.description,
            "required": self.required or self.location == "path",
            "schema": self.schema,
        }


def query(name: str, schema: Schema, description: str) -> Parameter:
    return Parameter(name, "query", schema, description)


def path_parameter(name: str, schema: Schema, description: str) -> Parameter:
    return Parameter(name, "path", schema, description, required=True)


@dataclass(frozen=True)
class Body:
    """A request body: one media type and its schema."""

    media_type: str
    schema: Schema
    required: bool = True
    description: str = ""


def token_form() -> Body:
    """The form of ``POST /revoke`` (RFC 7009 §2.1) and ``POST /introspect`` (RFC 7662 §2.1):
    the ``token``, its optional ``token_type_hint``, and client authentication."""
    return Body(
        "application/x-www-form-urlencoded",
        {
            "type": "object",
            "properties": {
                "token": FORM_PARAM,
                "token_type_hint": FORM_PARAM,
                **client_authentication_fields(FORM_PARAM),
            },
            "required": ["token"],
            "additionalProperties": {"type": "string"},
        },
    )


@dataclass(frozen=True)
class Answer:
    """A response other than an error: its status, what it holds, and notable headers."""

    status: int
    description: str
    content: Mapping[str, Schema] = field(default_factory=dict)
    headers: Mapping[str, Schema] = field(default_factory=dict)

    def render(self) -> Schema:
        rendered: Schema = {"description": self.description}
        if self.content:
            rendered["content"] = {
                media_type: {"schema": schema} for media_type, schema in self.content.items()
            }
        if self.headers:
            rendered["headers"] = {
                name: {"schema": schema} for name, schema in self.headers.items()
            }
        return rendered


def json_answer(status: int, description: str, schema: Schema, **headers: Schema) -> Answer:
    return Answer(status, description, {"application/json": schema}, headers)


@dataclass(frozen=True)
class Operation:
    """One method on one path of the route table, as the document describes it."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    answers: tuple[Answer, ...]
    errors: tuple[ErrorSource, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    body: Body | None = None
    security: tuple[Requirement, ...] = NO_SECURITY
    description: str = ""
    reads_database: bool = True

    def error_codes(self) -> dict[int, set[str]]:
        """Every error status this operation can answer, with its possible ``error`` codes."""
        sources: list[ErrorSource] = list(self.errors)
        if self.body is not None:
            sources += [PayloadTooLarge, InvalidRequest]  # the cap; a malformed Content-Length
        if self.reads_database:
            sources.append(TemporarilyUnavailable)
        if any(parameter.location == "path" for parameter in self.parameters):
            sources.append(ROUTE_NOT_FOUND)
        if self.security == CLIENT_AUTHENTICATION:
            sources += [InvalidClient, TooManyRequests]
        if any(ACCESS_TOKEN in requirement for requirement in self.security):
            sources.append(InvalidToken)
        if self.security == ADMIN:
            sources += [InvalidToken, InsufficientScope, AccessDenied]
        codes: dict[int, set[str]] = {}
        for source in sources:
            status, code = (
                source if isinstance(source, tuple) else (source.status_code, source.error)
            )
            codes.setdefault(status, set()).add(code)
        return codes

    def render(self) -> Schema:
        responses = {str(answer.status): answer.render() for answer in self.answers}
        for status, codes in sorted(self.error_codes().items()):
            responses[str(status)] = error_response(status, codes)
        rendered: Schema = {
            "operationId": self.operation_id,
            "summary": self.summary,
            "tags": [self.tag],
            "security": [dict(requirement) for requirement in self.security],
            "responses": responses,
        }
        if self.description:
            rendered["description"] = self.description
        if self.parameters:
            rendered["parameters"] = [parameter.render() for parameter in self.parameters]
        if self.body is not None:
            rendered["requestBody"] = {
                "required": self.body.required,
                "content": {self.body.media_type: {"schema": self.body.schema}},
            }
            if self.body.description:
                rendered["requestBody"]["description"] = self.body.description
        return rendered


_ERROR_HEADERS: dict[int, dict[str, Schema]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Basic for client authentication (RFC 6749 §5.2), Bearer for an "
            "access token (RFC 6750 §3)",
            "schema": {"type": "string"},
        }
    },
    403: {
        "WWW-Authenticate": {
            "description": 'with insufficient_scope: Bearer error="insufficient_scope", '
            'scope="admin" (RFC 6750 §3.1)',
            "schema": {"type": "string"},
        }
    },
    405: {"Allow": {"description": "the methods the path answers", "schema": {"type": "string"}}},
    429: {
        "Retry-After": {"description": "seconds (RFC 9110 §10.2.3)", "schema": {"type": "string"}}
    },
    503: {
        "Retry-After": {"description": "seconds (RFC 9110 §10.2.3)", "schema": {"type": "string"}}
    },
}


def error_response(status: int, codes: Iterable[str]) -> Schema:
    """The response for one error status: the error object with these codes."""
    listed = sorted(codes)
    rendered: Schema = {
        "description": f"error: {', '.join(listed)}",
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [ref("Error")],
                    "properties": {"error": {"enum": listed}},
                }
            }
        },
    }
    headers = _ERROR_HEADERS.get(status)
    if headers:
        rendered["headers"] = headers
    return rendered


ERROR_SCHEMA = strict_object(
    {
        "error": {"type": "string", "description": "the RFC error code"},
        "error_description": {"type": "string", "description": "for people, not for programs"},
    },
    required=["error"],
    description="Every error the broker answers (RFC 6749 §5.2, RFC 6750 §3.1).",
)


def security_schemes(issuer: str, scopes: Mapping[str, str]) -> Schema:
    return {
        CLIENT_BASIC: {
            "type": "http",
            "scheme": "basic",
            "description": "client_secret_basic (RFC 6749 §2.3.1): the client id and secret, "
            "each form-urlencoded. client_secret_post sends client_id and client_secret in the "
            "body instead, private_key_jwt a client_assertion (RFC 7523 §2.2), each client the "
            "one way it registered (never two at once); a public client sends only client_id.",
        },
        ACCESS_TOKEN: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A live access token the broker issued to the user, whatever its "
            "aud (RFC 6750 §2.1).",
        },
        ADMIN_OAUTH: {
            "type": "oauth2",
            "description": "An access token with the admin scope, of a user who is an admin at "
            "the time of the call; granted only to clients whose configuration lists the "
            "scope. Sent as a Bearer token.",
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": f"{issuer}/authorize",
                    "tokenUrl": f"{issuer}/token",
                    "refreshUrl": f"{issuer}/token",
                    "scopes": dict(scopes),
                }
            },
        },
    }


@dataclass(frozen=True)
class Contract:
    """What one route module declares: its operations and the named schemas they use."""

    operations: tuple[Operation, ...]
    schemas: Mapping[str, Schema] = field(default_factory=dict)


def openapi_document(
    *,
    info: Schema,
    issuer: str,
    contracts: Iterable[Contract],
    tags: Iterable[Schema],
    scopes: Mapping[str, str],
) -> Schema:
    """The whole document; ``ValueError`` if two operations or two named schemas collide."""
    paths: dict[str, dict[str, Schema]] = {}
    schemas: dict[str, Schema] = {"Error": ERROR_SCHEMA}
    for contract in contracts:
        for name, schema in contract.schemas.items():
            if name in schemas:
                raise ValueError(f"schema {name} is defined twice")
            schemas[name] = schema
        for operation in contract.operations:
            item = paths.setdefault(operation.path, {})
            method = operation.method.lower()
            if method in item:
                raise ValueError(f"{operation.method} {operation.path} is defined twice")
            item[method] = operation.render()
    return {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "servers": [{"url": issuer}],
        "tags": list(tags),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": security_schemes(issuer, scopes),
            "responses": {
                "MethodNotAllowed": error_response(METHOD_NOT_ALLOWED[0], [METHOD_NOT_ALLOWED[1]])
            },
        },
    }
