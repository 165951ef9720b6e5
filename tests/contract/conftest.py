"""Fixtures of the provider contract suite: the contract broker, and the driver of the provider
type under test (its stand-in reset first). ``driver`` is parametrised indirectly with a type."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from shared.client_tls import client_tls_context
from shared.crypto.keyring import Keyring

from tests.contract.drivers import DRIVERS, Driver
from tests.contract.harness import Contract, contract_settings, running_contract


@pytest.fixture
async def contract(
    database_url: str,
    keyring: Keyring,
    upstream_idp: str,
    google_upstream: str,
    github_upstream: str,
    microsoft_upstream: str,
) -> AsyncIterator[Contract]:
    upstreams = {
        "oidc": upstream_idp,
        "google": google_upstream,
        "github": github_upstream,
        "microsoft": microsoft_upstream,
    }
    async with running_contract(contract_settings(database_url, keyring, upstreams)) as running:
        yield running


@pytest.fixture
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
    provider_type: str = request.param
    if provider_type == "dev":
        yield DRIVERS["dev"](None)
        return
    fixture = {"oidc": "upstream_idp"}.get(provider_type, f"{provider_type}_upstream")
    control = httpx2.AsyncClient(
        base_url=request.getfixturevalue(fixture), verify=client_tls_context()
    )
    async with control:
        assert (await control.post("/_control/reset")).status_code == 200
        yield DRIVERS[provider_type](control)
