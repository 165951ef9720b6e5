"""The runtime is built from settings without I/O and picks the job queue by configuration."""

from __future__ import annotations

from shared.client_tls import client_tls_context
from shared.jobs.queue import ArqJobQueue, InProcessJobQueue
from shared.runtime import build_runtime
from shared.settings import make_settings


async def test_embedded_default_runs_jobs_in_process():
    runtime = build_runtime(make_settings())
    try:
        assert isinstance(runtime.jobs, InProcessJobQueue)
        assert set(runtime.providers) == {"dev"}
        assert not runtime.keys.loaded  # nothing was read at construction
    finally:
        await runtime.stop()


async def test_redis_url_selects_the_arq_queue_without_connecting():
    # Port 1 answers nothing: construction must not try to connect.
    runtime = build_runtime(make_settings(redis_url="redis://127.0.0.1:1/0"))
    try:
        assert isinstance(runtime.jobs, ArqJobQueue)
    finally:
        await runtime.stop()


async def test_every_outbound_client_shares_the_process_tls_context():
    # Building a TLS context reads the whole CA bundle: one per process, not one per client.
    providers = [
        {"id": "corp", "type": "oidc", "issuer": "https://idp.example", "client_id": "b"},
        {"id": "gh", "type": "github", "client_id": "b", "client_secret": "s"},
    ]
    runtime = build_runtime(make_settings(providers=providers))
    try:
        clients = [runtime.http]
        clients += [provider._flow._transport._pool for provider in runtime.providers.values()]
        contexts = {id(client._transport._pool._ssl_context) for client in clients}
        assert contexts == {id(client_tls_context())}
    finally:
        await runtime.stop()
