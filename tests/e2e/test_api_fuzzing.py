"""Fuzzing a running broker against its own OpenAPI document (Schemathesis).

Two real ``broker serve`` processes, over HTTP: the embedded default's SQLite and PostgreSQL.
Schemathesis sends every operation of the document generated requests, valid and invalid, and
the boundary cases of its coverage phase, with credentials that get past the 401s: the
confidential client's secret (HTTP Basic) where client authentication is asked for, a live
access token for ``/userinfo`` and ``/auth/oauth2/*``, an admin's token with the ``admin``
scope for ``/admin/oauth2/*``. Every answer must be no 5xx, a documented status with a
documented content type, a body that matches its schema, and no stack trace; and neither
process may log a stack trace.

``make test`` runs ``DEFAULT_EXAMPLES`` examples per operation and database, derandomised (the
same inputs on every run); ``make fuzz`` runs ``BROKER_FUZZ_EXAMPLES`` (500 by default), random.

The schema is the document the broker builds from its code, loaded at collection (the fixtures
check it equals what each process serves at ``/openapi.json``): Schemathesis's lazy loader
(``schemathesis.pytest.from_fixture``) fails under pytest 9 (it sets ``request.node._nodeid``),
and ``from_url`` at collection would need a broker running before any fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import schemathesis
from broker.routes.openapi import build_document
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from shared.crypto.keyring import Keyring
from shared.db.migrate import upgrade_to_head
from shared.settings import make_settings

from tests.conftest import ROOT
from tests.support.fuzzed_broker import (
    BACKEND,
    FuzzedBroker,
    basic,
    fuzzed_broker,
    sign_in,
    user_id_of,
)
from tests.support.jwts import session_of

pytestmark = pytest.mark.e2e

PLACEHOLDER = "http://127.0.0.1:8000"
DEFAULT_EXAMPLES = 10
EXAMPLES = int(os.environ.get("BROKER_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
# Bounded runs repeat the same inputs (a failure in CI is a failure locally); long ones explore.
DERANDOMIZE = EXAMPLES <= DEFAULT_EXAMPLES


def no_stack_trace(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No answer carries a Python stack trace (docs/http-api.md: never a stack trace)."""
    if "Traceback" in response.text:
        raise AssertionError("the body carries a stack trace")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    no_stack_trace,
]


def _served(directory: Path, database_url: str, keyring: Keyring) -> Iterator[FuzzedBroker]:
    with fuzzed_broker(
        directory, database_url=database_url, keyring=keyring, cwd=str(ROOT)
    ) as running:
        # What is fuzzed is what the broker serves.
        served = httpx2.get(f"{running.issuer}/openapi.json", timeout=10).json()
        assert served == build_document(make_settings(issuer=running.issuer))
        yield running
        # Nothing failed out of sight either (an unexpected error logs its stack).
        assert "Traceback" not in running.read_log()


@pytest.fixture(scope="module")
def sqlite_broker(
    tmp_path_factory: pytest.TempPathFactory, keyring: Keyring
) -> Iterator[FuzzedBroker]:
    """The embedded default's database: a SQLite file, migrated first."""
    directory = tmp_path_factory.mktemp("fuzz-sqlite")
    url = f"sqlite+aiosqlite:///{directory / 'broker.db'}"
    upgrade_to_head(url)
    yield from _served(directory, url, keyring)


@pytest.fixture(scope="module")
def postgresql_broker(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, keyring: Keyring
) -> Iterator[FuzzedBroker]:
    """The run's PostgreSQL database (tests/conftest.py)."""
    yield from _served(tmp_path_factory.mktemp("fuzz-postgresql"), database_url, keyring)


# Each test sends its requests to its running broker's issuer (base_url).
SCHEMA = schemathesis.openapi.from_dict(build_document(make_settings(issuer=PLACEHOLDER)))


def credentials(case: schemathesis.Case, broker: FuzzedBroker) -> dict[str, str]:
    """The Authorization header that gets this operation past its 401s (none if it needs none)."""
    security = case.operation.definition.raw.get("security", [])
    schemes = {name for requirement in security for name in requirement}
    if "clientSecretBasic" in schemes:
        return {"Authorization": basic(*BACKEND)}
    if "brokerOAuth2" in schemes:
        return broker.bearer(broker.admin)
    if (case.method, case.path) == ("DELETE", "/auth/oauth2/revoke"):
        # It ends the caller's session, or all of them: never those of the token used below.
        return broker.bearer(broker.leaving_user())
    if "accessToken" in schemes:
        return broker.bearer(broker.user)
    return {}


bounded = settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZE,
    deadline=None,
    database=None,  # nothing written under .hypothesis/
    suppress_health_check=list(HealthCheck),
)


@SCHEMA.parametrize()
@bounded
def test_the_sqlite_broker_keeps_its_contract(
    case: schemathesis.Case, sqlite_broker: FuzzedBroker
) -> None:
    case.call_and_validate(
        base_url=sqlite_broker.issuer,
        headers=credentials(case, sqlite_broker),
        checks=CHECKS,
        timeout=30,
    )


@SCHEMA.parametrize()
@bounded
def test_the_postgresql_broker_keeps_its_contract(
    case: schemathesis.Case, postgresql_broker: FuzzedBroker
) -> None:
    case.call_and_validate(
        base_url=postgresql_broker.issuer,
        headers=credentials(case, postgresql_broker),
        checks=CHECKS,
        timeout=30,
    )


DEV = {"provider_id": "dev"}


@pytest.mark.parametrize("backend", ["sqlite_broker", "postgresql_broker"])
def test_live_credentials_get_successful_answers_in_their_documented_shape(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """What random input rarely reaches: each grant, an active introspection, an admin's
    changes. The same checks as the fuzzing, and each answer a success."""
    broker: FuzzedBroker = request.getfixturevalue(backend)
    web = broker.leaving_user()
    service = sign_in(broker.issuer, "service@example.com", confidential=True)
    target = sign_in(broker.issuer, "target@example.com")
    target_id = user_id_of(broker.issuer, target["access_token"])
    client = {"Authorization": basic(*BACKEND)}
    admin = broker.bearer(broker.admin)
    service_token = httpx2.post(
        f"{broker.issuer}/token",
        data={"grant_type": "client_credentials"},
        headers=client,
        timeout=10,
    ).json()["access_token"]
    calls: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("POST", "/introspect", {"body": {"token": web["access_token"]}}, client),
        ("POST", "/introspect", {"body": {"token": service_token}}, client),
        ("POST", "/token", {"body": {"grant_type": "client_credentials"}}, client),
        ("POST", "/revoke", {"body": {"token": service_token}}, client),
        ("GET", "/admin/oauth2/clients", {}, admin),
        ("POST", "/introspect", {"body": {"token": service["refresh_token"]}}, client),
        (
            "POST",
            "/token",
            {"body": {"grant_type": "refresh_token", "refresh_token": service["refresh_token"]}},
            client,
        ),
        (
            "POST",
            "/auth/oauth2/refresh",
            {"body": {"refresh_token": web["refresh_token"], "client_id": "web"}},
            {},
        ),
        ("POST", "/userinfo", {"body": {"access_token": web["access_token"]}}, {}),
        ("PUT", "/auth/oauth2/profile", {"body": {"display_name": "Fuzzed"}}, broker.bearer(web)),
        ("POST", "/revoke", {"body": {"token": service["access_token"]}}, client),
        (
            "DELETE",
            "/auth/oauth2/revoke",
            {"body": {"token": web["access_token"]}},
            broker.bearer(web),
        ),
        (
            "DELETE",
            "/admin/oauth2/tokens/{token_id}",
            {"path_parameters": {"token_id": str(session_of(target["access_token"]))}},
            admin,
        ),
        (
            "POST",
            "/admin/oauth2/users/{user_id}/disable",
            {"path_parameters": {"user_id": target_id}},
            admin,
        ),
        (
            "POST",
            "/admin/oauth2/users/{user_id}/enable",
            {"path_parameters": {"user_id": target_id}},
            admin,
        ),
        ("GET", "/admin/oauth2/providers", {}, admin),
        ("GET", "/admin/oauth2/providers/{provider_id}", {"path_parameters": DEV}, admin),
        # Switched on explicitly, then back to the configuration: dev stays enabled (the
        # PostgreSQL broker shares the run's database with every other test).
        (
            "PATCH",
            "/admin/oauth2/providers/{provider_id}",
            {"path_parameters": DEV, "body": {"enabled": True, "reason": "fuzzed"}},
            admin,
        ),
        (
            "PATCH",
            "/admin/oauth2/providers/{provider_id}",
            {"path_parameters": DEV, "body": {"enabled": None}},
            admin,
        ),
    ]
    for method, path, values, headers in calls:
        case = SCHEMA[path][method].Case(**values)
        response = case.call_and_validate(
            base_url=broker.issuer, headers=headers, checks=CHECKS, timeout=30
        )
        assert response.status_code == 200, (method, path, response.text)
        if path == "/introspect":
            assert response.json()["active"] is True, response.text
