"""The servers ``make bench`` loads (``bench.servers``): the broker with the bench's config answers
its refresh grant, and the baseline app serves the broker's JWKS bytes and signs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx2
import pytest
from shared.db.migrate import upgrade_to_head

from bench.run import broker_config
from bench.seed import CLIENT_ID, seed_refresh_tokens
from bench.servers import start_baseline, start_broker
from tests.support.databases import ServiceUnavailable, fresh_database, postgres_server_url

pytestmark = pytest.mark.integration


@pytest.fixture
def bench_database_url() -> Iterator[str]:
    """A database of its own, as the bench has: the broker's keyring is not the tests' one."""
    try:
        with postgres_server_url() as server, fresh_database(server) as url:
            upgrade_to_head(url)
            yield url
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


async def test_the_bench_broker_and_its_baseline_start_and_answer(bench_database_url, tmp_path):
    (refresh_token,) = await seed_refresh_tokens(bench_database_url, 1)
    with contextlib.ExitStack() as stack:
        broker = start_broker(stack, tmp_path, bench_database_url, broker_config())
        assert broker.env["BROKER_ISSUER"] == broker.issuer
        jwks = httpx2.get(f"{broker.issuer}/.well-known/jwks.json", timeout=10)
        assert jwks.status_code == 200
        baseline = start_baseline(stack, tmp_path, broker.issuer, jwks.content)

        assert httpx2.get(f"{baseline}/jwks", timeout=10).content == jwks.content
        assert httpx2.post(f"{baseline}/sign", timeout=10).status_code == 200
        assert broker.access_token(refresh_token, CLIENT_ID).count(".") == 2
        assert broker.server.error_lines() == []
    assert broker.server.process.poll() is not None
