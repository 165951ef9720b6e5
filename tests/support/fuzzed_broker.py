"""A ``broker serve`` process to fuzz, and the credentials that get a request past its 401s.

The broker runs with the dev provider and two clients: ``web`` (public, allowed the ``admin``
scope) and ``backend`` (confidential: HTTP Basic at ``/token``, ``/revoke`` and
``/introspect``; it signs users in and gets service tokens too). Users sign in through the real
dev form over HTTP (``tests.support.flows``); the admin is made one with ``broker admins
grant``, as an operator would (the dev provider cannot name admins in the configuration), then
signs in again to get the ``admin`` scope.
"""

from __future__ import annotations

import asyncio
import base64
import os
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from shared.client_tls import client_tls_context
from shared.crypto.keyring import Keyring

from tests.support.cli import run_broker_cli_here
from tests.support.flows import authorize, exchange
from tests.support.processes import broker_process

WEB = ("web", "http://127.0.0.1:3000/callback")
BACKEND = ("backend", "backend-secret-at-least-32-characters")
BACKEND_REDIRECT = "http://127.0.0.1:4000/cb"
USER_SCOPE = "openid email profile groups offline_access"
FUZZ_BROKER_CONFIG = textwrap.dedent(
    f"""\
    providers:
      - {{id: dev, type: dev}}
    clients:
      - id: {WEB[0]}
        redirect_uris: ["{WEB[1]}"]
        scopes: [openid, email, profile, groups, offline_access, admin]
      - id: {BACKEND[0]}
        secret: {BACKEND[1]}
        redirect_uris: ["{BACKEND_REDIRECT}"]
        grant_types: [authorization_code, refresh_token, client_credentials]
        scopes: [openid, email, profile, groups, offline_access, reports.read]
    """
)


def basic(client_id: str, secret: str) -> str:
    """An HTTP Basic Authorization value (RFC 6749 §2.3.1; these ids need no escaping)."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def sign_in(
    issuer: str, email: str, *, scope: str = USER_SCOPE, confidential: bool = False
) -> dict[str, Any]:
    """The dev user ``email`` signs in to ``web`` (or ``backend``) over HTTP: the token response."""
    client_id, redirect_uri = (BACKEND[0], BACKEND_REDIRECT) if confidential else WEB

    async def flow() -> dict[str, Any]:
        tls = client_tls_context()
        async with httpx2.AsyncClient(base_url=issuer, timeout=30, verify=tls) as browser:
            result = await authorize(
                browser,
                client_id=client_id,
                redirect_uri=redirect_uri,
                provider="dev",
                scope=scope,
                dev_identity=(email, email.split("@")[0]),
            )
            assert "code" in result.params, result.location
            response = await exchange(
                browser,
                result,
                client_id=client_id,
                client_secret=BACKEND[1] if confidential else None,
                redirect_uri=redirect_uri,
            )
            assert response.status_code == 200, response.text
            tokens: dict[str, Any] = response.json()
            return tokens

    return asyncio.run(flow())


def user_id_of(issuer: str, access_token: str) -> str:
    response = httpx2.get(
        f"{issuer}/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=10
    )
    response.raise_for_status()
    user_id: str = response.json()["sub"]
    return user_id


@dataclass(frozen=True)
class FuzzedBroker:
    """A running broker, and live tokens of an ordinary user and of an admin."""

    issuer: str
    read_log: Callable[[], str]
    user: dict[str, Any]
    admin: dict[str, Any]

    def bearer(self, tokens: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    def leaving_user(self) -> dict[str, Any]:
        """A new session of a user of its own, for calls that end sessions (even ``all``)."""
        return sign_in(self.issuer, "leaving@example.com")


def _grant_admin(env: dict[str, str], user_id: str) -> None:
    """``broker admins grant`` against the same database (the CLI's ``main``, in this
    process)."""
    granted = run_broker_cli_here("admins", "grant", user_id, env={**os.environ, **env})
    assert granted.returncode == 0, granted.stderr


@contextmanager
def fuzzed_broker(
    directory: Path, *, database_url: str, keyring: Keyring, cwd: str
) -> Iterator[FuzzedBroker]:
    """``broker serve`` on a free port over ``database_url`` (migrated), users signed in."""
    config = directory / "broker.yaml"
    config.write_text(FUZZ_BROKER_CONFIG, encoding="utf-8")
    with broker_process(
        config,
        database_url=database_url,
        keyring=keyring,
        cwd=cwd,
        BROKER_DB_POOL_SIZE="2",
        BROKER_PERIODIC_JOBS="0",
        BROKER_LOG_FORMAT="json",
    ) as broker:
        issuer = broker.issuer
        user = sign_in(issuer, "user@example.com")
        first = sign_in(issuer, "admin@example.com")
        _grant_admin(broker.env, user_id_of(issuer, first["access_token"]))
        admin = sign_in(issuer, "admin@example.com", scope=f"{USER_SCOPE} admin")
        assert "admin" in admin["scope"].split(), admin["scope"]
        yield FuzzedBroker(issuer=issuer, read_log=broker.process.read_log, user=user, admin=admin)
