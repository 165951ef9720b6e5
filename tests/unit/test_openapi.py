"""The OpenAPI document and the route table stay in step, and the document is valid OpenAPI 3.1.

Every route of the broker's table (each of its methods; HEAD comes with GET and OPTIONS with
CORS) is either an operation of the document or one of ``broker.routes.openapi.EXCLUDED``,
with a reason; never both, and the document names nothing the broker does not serve. The
fuzzing against a running broker (tests/e2e/test_api_fuzzing.py) checks the answers themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx2
import jsonschema
import pytest
import schemathesis
from broker.admin import audit, stats, tokens, users
from broker.app import create_app
from broker.routes.openapi import EXCLUDED, build_document
from shared.runtime import build_runtime
from shared.settings import make_settings
from starlette.applications import Starlette

ISSUER = "http://127.0.0.1:8000"
IMPLIED_METHODS = {"HEAD", "OPTIONS"}
METHODS = {"get", "put", "post", "delete", "patch"}


def _routes_of(routes: Iterable[object]) -> Iterator[tuple[str, str]]:
    """(method, path) for each method of each route; a route without methods answers GET."""
    for route in routes:
        methods = getattr(route, "methods", None) or {"GET"}
        for method in sorted(set(methods) - IMPLIED_METHODS):
            yield method, route.path  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(build_runtime(make_settings(issuer=ISSUER)))


@pytest.fixture(scope="module")
def route_table(app: Any) -> set[tuple[str, str]]:
    inner = app
    while not isinstance(inner, Starlette):  # the observer, the body cap, the direct routes
        inner = inner.app
    table = set(_routes_of(inner.routes))
    assert len(table) > 40
    return table


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(make_settings(issuer=ISSUER))


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_in_the_document_or_excluded_with_a_reason(route_table, document) -> None:
    documented = _operations(document)
    neither = sorted(
        f"{method} {path}"
        for method, path in route_table
        if (method, path) not in documented and path not in EXCLUDED
    )
    assert neither == []


def test_the_document_names_only_what_the_route_table_serves(route_table, document) -> None:
    assert sorted(_operations(document) - route_table) == []


def test_excluded_routes_are_served_left_out_and_explained(route_table, document) -> None:
    served = {path for _, path in route_table}
    assert sorted(set(EXCLUDED) - served) == []
    assert sorted(set(EXCLUDED) & set(document["paths"])) == []
    assert all(len(reason) > 20 for reason in EXCLUDED.values())
    for path in EXCLUDED:  # the document says what it leaves out
        assert f"`{path}`" in document["info"]["description"]


def test_the_document_is_valid_openapi_3_1(document) -> None:
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every Schema Object in the document (under ``schema`` keys and components.schemas)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def test_every_schema_is_valid_json_schema_2020_12(document) -> None:
    schemas = [*_schemas(document["paths"]), *document["components"]["schemas"].values()]
    assert len(schemas) > 50
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)


def _parameters(document: dict[str, Any], method: str, path: str) -> set[str]:
    operation = document["paths"][path][method]
    return {parameter["name"] for parameter in operation.get("parameters", [])}


@pytest.mark.parametrize(
    ("path", "accepted"),
    [
        ("/admin/oauth2/users", users._FILTERS),
        ("/admin/oauth2/tokens", tokens._FILTERS),
        ("/admin/oauth2/stats", stats._FILTERS),
        ("/admin/oauth2/audit", audit._FILTERS),
    ],
)
def test_admin_listings_document_exactly_the_parameters_they_accept(
    document, path, accepted
) -> None:
    assert _parameters(document, "get", path) == set(accepted)


def test_admin_operations_need_the_admin_scope_and_client_endpoints_client_auth(
    document,
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["brokerOAuth2"]["flows"]["authorizationCode"]["scopes"]["admin"]
    assert schemes["clientSecretBasic"] == {**schemes["clientSecretBasic"], "scheme": "basic"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/admin/oauth2/"):
                assert operation["security"] == [{"brokerOAuth2": ["admin"]}], (method, path)
                assert {"401", "403"} <= set(operation["responses"])
    for path in ("/token", "/revoke", "/introspect", "/auth/oauth2/refresh"):
        operation = document["paths"][path]["post"]
        assert operation["security"] == [{"clientSecretBasic": []}, {}]
        assert {"401", "429"} <= set(operation["responses"])


def _error_codes(document: dict[str, Any], method: str, path: str, status: int) -> list[str]:
    response = document["paths"][path][method]["responses"][str(status)]
    codes: list[str] = response["content"]["application/json"]["schema"]["properties"]["error"][
        "enum"
    ]
    return codes


def test_errors_carry_the_codes_of_the_broker_error_classes(document) -> None:
    assert _error_codes(document, "post", "/token", 400) == [
        "invalid_grant",
        "invalid_request",
        "invalid_scope",
        "invalid_target",
        "unauthorized_client",
        "unsupported_grant_type",
    ]
    assert _error_codes(document, "post", "/token", 401) == ["invalid_client"]
    assert _error_codes(document, "post", "/token", 413) == ["invalid_request"]
    assert _error_codes(document, "post", "/token", 429) == ["temporarily_unavailable"]
    assert _error_codes(document, "post", "/token", 503) == ["temporarily_unavailable"]
    assert _error_codes(document, "get", "/admin/oauth2/users", 403) == [
        "access_denied",
        "insufficient_scope",
    ]
    assert _error_codes(document, "delete", "/auth/oauth2/links/{provider}", 404) == [
        "invalid_request",
        "not_found",
    ]
    assert _error_codes(document, "delete", "/auth/oauth2/links/{provider}", 409) == [
        "invalid_request"
    ]


async def _get(app: Any, path: str, method: str = "GET") -> httpx2.Response:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url=ISSUER) as client:
        return await client.request(method, path)


async def test_the_broker_serves_the_document_at_openapi_json(app, document) -> None:
    response = await _get(app, "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == document
    assert document["servers"] == [{"url": ISSUER}]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/nowhere", 404, "not_found"), ("PATCH", "/openapi.json", 405, "method_not_allowed")],
)
async def test_the_routers_own_errors_have_the_documented_shape(
    app, document, method, path, status, code
) -> None:
    response = await _get(app, path, method)
    assert response.status_code == status
    jsonschema.validate(response.json(), document["components"]["schemas"]["Error"])
    assert response.json()["error"] == code
    if status == 405:
        documented = document["components"]["responses"]["MethodNotAllowed"]
        assert documented["content"]["application/json"]["schema"]["properties"]["error"] == {
            "enum": [code]
        }
        assert "GET" in response.headers["allow"]
