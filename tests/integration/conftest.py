"""Fixtures for the integration tests: a broker with settings overrides, control clients of
each stand-in (reset per test), a broker configured with every provider type, and a host for
the pictures of avatar tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from shared.client_tls import client_tls_context
from shared.clock import Clock
from shared.crypto.keyring import Keyring
from shared.runtime import Runtime, build_runtime

from tests.conftest import broker_settings
from tests.support.accounts import Admin, corp_profile, sign_in
from tests.support.pictures import PNG
from tests.support.processes import free_port
from tests.support.provider_broker import provider_settings, running_broker, serving


@pytest.fixture
def broker_with(database_url: str, upstream_idp: str, keyring: Keyring) -> Callable[..., Any]:
    """``async with broker_with(clock=None, **settings) as (client, runtime)``: a broker with
    overrides (and a clock of the test's)."""

    @asynccontextmanager
    async def start(
        clock: Clock | None = None, **overrides: object
    ) -> AsyncIterator[tuple[httpx2.AsyncClient, Runtime]]:
        settings = broker_settings(database_url, upstream_idp, keyring, **overrides)
        runtime = build_runtime(settings, clock=clock)
        async with serving(runtime) as client:
            yield client, runtime

    return start


async def _control(base_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=base_url, verify=client_tls_context()) as client:
        await client.post("/_control/reset")
        yield client


@pytest.fixture
async def gh(github_upstream: str) -> AsyncIterator[httpx2.AsyncClient]:
    async for client in _control(github_upstream):
        yield client


@pytest.fixture
async def ms(microsoft_upstream: str) -> AsyncIterator[httpx2.AsyncClient]:
    async for client in _control(microsoft_upstream):
        yield client


@pytest.fixture
async def google(google_upstream: str) -> AsyncIterator[httpx2.AsyncClient]:
    async for client in _control(google_upstream):
        yield client


@pytest.fixture
async def provider_broker(
    database_url: str,
    keyring: Keyring,
    upstream_idp: str,
    github_upstream: str,
    microsoft_upstream: str,
    google_upstream: str,
) -> AsyncIterator[tuple[Runtime, httpx2.AsyncClient]]:
    """`corp` (the OIDC double), `dev`, two GitHub, Microsoft (common, two tenants), two Google
    and a disabled provider; see tests/support/provider_broker.py."""
    settings = provider_settings(
        database_url,
        keyring,
        corp=upstream_idp,
        github=github_upstream,
        microsoft=microsoft_upstream,
        google=google_upstream,
    )
    async with running_broker(settings) as running:
        yield running


@pytest.fixture
async def admin(
    database_url: str, upstream_idp: str, keyring: Keyring, idp: httpx2.AsyncClient
) -> AsyncIterator[Admin]:
    """A broker whose admin is ``corp:<admin subject>``, and that admin signed in."""
    admin_subject = f"admin-{uuid.uuid4().hex[:10]}"
    settings = broker_settings(
        database_url, upstream_idp, keyring, admins=[f"corp:{admin_subject}"]
    )
    async with running_broker(settings) as (runtime, broker):
        _subject, headers = await sign_in(broker, idp, sub=admin_subject, admin_scope=True)
        admin_id = (await corp_profile(broker, headers))["user"]["id"]
        yield runtime, broker, headers, admin_id


@pytest.fixture
async def picture_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A plain HTTP server on 127.0.0.1 serving a PNG at /alice.png; the paths it was asked."""
    asked: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        asked.append(request.split(b" ")[1].decode())
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {len(PNG)}\r\nConnection: close\r\n\r\n".encode()
            + PNG
        )
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}", asked
    finally:
        server.close()
        await server.wait_closed()
