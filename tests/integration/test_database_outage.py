"""A database that goes away and comes back: the broker answers 503 meanwhile, then recovers.

The broker reaches PostgreSQL through a TCP proxy that the test stops and starts again, as a
failover or a network partition would look to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from broker.app import create_app
from shared.crypto.keyring import Keyring
from shared.runtime import build_runtime
from sqlalchemy.engine import make_url

from tests.conftest import BROKER_ISSUER, broker_settings
from tests.support.flows import authorize, exchange, refresh
from tests.support.tcp_proxy import CuttingProxy, cutting_proxy

pytestmark = pytest.mark.integration


@pytest.fixture
async def proxied(
    database_url: str, upstream_idp: str, keyring: Keyring
) -> AsyncIterator[tuple[httpx2.AsyncClient, CuttingProxy]]:
    url = make_url(database_url)
    async with cutting_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
        runtime = build_runtime(broker_settings(through_proxy, upstream_idp, keyring))
        await runtime.start()
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as client:
            yield client, proxy
        await proxy.start()  # let the runtime close its connections cleanly
        await runtime.stop()


async def test_refresh_and_userinfo_answer_503_while_the_database_is_away_then_recover(proxied):
    broker, proxy = proxied
    result = await authorize(broker, provider="dev")
    tokens = (await exchange(broker, result)).json()
    rotated = await refresh(broker, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text

    await proxy.stop()
    away = await refresh(broker, rotated.json()["refresh_token"])
    assert away.status_code == 503
    assert away.json()["error"] == "temporarily_unavailable"
    assert away.headers["retry-after"] == "1"
    assert "Traceback" not in away.text
    info = await broker.get(
        "/userinfo", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
    )
    assert info.status_code == 503
    assert info.json()["error"] == "temporarily_unavailable"

    await proxy.start()
    # The refresh that failed rotated nothing: the same token works, and nothing was revoked.
    back = await refresh(broker, rotated.json()["refresh_token"])
    assert back.status_code == 200, back.text
    assert (await refresh(broker, back.json()["refresh_token"])).status_code == 200
