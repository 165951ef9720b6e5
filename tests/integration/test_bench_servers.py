"""The servers ``make bench`` loads (``bench.servers``): the broker with the bench's config answers
its refresh grant, and the baseline app serves the broker's JWKS bytes, signs, and answers what the
broker's refresh grant answers (the same-tokens baseline, which must not drift from the broker)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from joserfc import jws, jwt
from joserfc.jwk import KeySet
from shared.crypto.opaque import new_opaque_token
from shared.db.migrate import upgrade_to_head
from shared.providers.oidc import at_hash

from bench.broker_keys import signing_jwks
from bench.run import broker_config
from bench.seed import CLIENT_ID, seed_refresh_tokens
from bench.servers import Baseline, Broker, start_baseline, start_broker
from tests.support.databases import ServiceUnavailable, fresh_database, postgres_server_url

pytestmark = pytest.mark.integration

# Sizes may differ by this share at most (the same claims, keys and user: in practice not at all).
SIZE_MARGIN = 0.02
TOKENS = ("access_token", "id_token")


@pytest.fixture
def bench_database_url() -> Iterator[str]:
    """A database of its own, as the bench has: the broker's keyring is not the tests' one."""
    try:
        with postgres_server_url() as server, fresh_database(server) as url:
            upgrade_to_head(url)
            yield url
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


async def _start_both(
    stack: contextlib.ExitStack, tmp_path: Any, database_url: str, sample_token: str
) -> tuple[Broker, Baseline, bytes]:
    """The broker, and the baseline wired as ``bench.run`` wires it; the broker's JWKS bytes."""
    broker = start_broker(stack, tmp_path, database_url, broker_config())
    jwks = httpx2.get(f"{broker.issuer}/.well-known/jwks.json", timeout=10)
    assert jwks.status_code == 200
    baseline = start_baseline(
        stack,
        tmp_path,
        jwks_body=jwks.content,
        signing_jwks=await signing_jwks(broker.env),
        sample_response=broker.refresh(sample_token, CLIENT_ID),
    )
    return broker, baseline, jwks.content


def _refresh(url: str, refresh_token: str) -> httpx2.Response:
    """A refresh grant's request, as ``bench/refresh.lua`` sends it."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT_ID}
    response = httpx2.post(f"{url}/token", data=form, timeout=10)
    assert response.status_code == 200, response.text
    return response


def _header(token: str) -> dict[str, Any]:
    return dict(jws.extract_compact(token.encode("ascii")).protected)


def _within_margin(measured: int, expected: int) -> bool:
    return abs(measured - expected) <= SIZE_MARGIN * expected


async def test_the_bench_broker_and_its_baseline_start_and_answer(bench_database_url, tmp_path):
    sample_token, refresh_token = await seed_refresh_tokens(bench_database_url, 2)
    with contextlib.ExitStack() as stack:
        broker, baseline, jwks = await _start_both(
            stack, tmp_path, bench_database_url, sample_token
        )
        assert broker.env["BROKER_ISSUER"] == broker.issuer

        assert httpx2.get(f"{baseline.url}/jwks", timeout=10).content == jwks
        assert httpx2.post(f"{baseline.url}/sign", timeout=10).status_code == 200
        assert broker.access_token(refresh_token, CLIENT_ID).count(".") == 2
        assert broker.server.error_lines() == []
    assert broker.server.process.poll() is not None
    assert baseline.server.process.poll() is not None


async def test_the_same_tokens_baseline_answers_what_the_broker_refresh_grant_answers(
    bench_database_url, tmp_path
):
    sample_token, refresh_token = await seed_refresh_tokens(bench_database_url, 2)
    with contextlib.ExitStack() as stack:
        broker, baseline, jwks = await _start_both(
            stack, tmp_path, bench_database_url, sample_token
        )
        # Another rotation than the sample the baseline copies.
        real = _refresh(broker.issuer, refresh_token)
        copied = _refresh(baseline.url, new_opaque_token())
        again = _refresh(baseline.url, new_opaque_token())
        refused = httpx2.post(
            f"{baseline.url}/token", data={"grant_type": "client_credentials"}, timeout=10
        )
    keys = KeySet.import_key_set(json.loads(jwks))

    body, real_body = copied.json(), real.json()
    assert list(body) == list(real_body)  # the same fields, in the same order
    for name in ("content-type", "cache-control", "pragma"):
        assert copied.headers[name] == real.headers[name], name
    assert copied.headers["cache-control"] == "no-store"
    assert (body["token_type"], body["expires_in"], body["scope"]) == (
        real_body["token_type"],
        real_body["expires_in"],
        real_body["scope"],
    )
    assert len(body["refresh_token"]) == len(real_body["refresh_token"])
    assert _within_margin(len(copied.content), len(real.content))

    for name in TOKENS:
        token, real_token = body[name], real_body[name]
        assert _header(token) == _header(real_token), name  # alg, typ and kid
        decoded = jwt.decode(token, keys, algorithms=[_header(real_token)["alg"]])
        real_claims = jwt.decode(real_token, keys, algorithms=[_header(real_token)["alg"]]).claims
        assert list(decoded.claims) == list(real_claims), name
        assert _within_margin(len(token), len(real_token)), name
    assert _header(body["access_token"])["alg"] == "ES256"
    assert _header(body["id_token"])["alg"] == "RS256"  # the bench's client keeps the default
    id_claims = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    assert id_claims["at_hash"] == at_hash(body["access_token"], "RS256")
    assert "nonce" not in id_claims

    # Made fresh per response: the refresh token, the access token's jti, and so at_hash.
    fresh = again.json()
    assert fresh["refresh_token"] != body["refresh_token"]
    assert (
        jwt.decode(fresh["access_token"], keys).claims["jti"]
        != jwt.decode(body["access_token"], keys).claims["jti"]
    )
    # Not a refresh grant: a 400, as the broker would answer (no tokens minted).
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_request"}
