"""Keyring rotation: every sealed column re-encrypted under the newest key, nothing lost, a
concurrent writer never overwritten, and the old key removable afterwards (docs/security.md
"Encryption at rest")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx2
import psycopg
import pytest
from broker.app import create_app
from shared.crypto.keyring import Keyring
from shared.crypto.reencryption import reencrypt_all
from shared.crypto.sealed_columns import SEALED_COLUMNS, UPSTREAM_ACCESS_TOKEN
from shared.db.base import Base
from shared.db.migrate import upgrade_to_head
from shared.runtime import build_runtime
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from tests.conftest import BROKER_ISSUER, broker_settings
from tests.support.databases import fresh_database, postgres_server_url
from tests.support.flows import login, refresh

pytestmark = pytest.mark.integration

OLD = Keyring.generate("old")
NEW_FIRST = Keyring((Keyring.generate("new").keys[0], OLD.keys[0]))
NEW_ONLY = Keyring((NEW_FIRST.keys[0],))


@pytest.fixture
def database() -> Iterator[str]:
    with postgres_server_url() as server, fresh_database(server) as url:
        upgrade_to_head(url)
        yield url


async def _key_ids(runtime, keyring: Keyring) -> dict[str, set[str]]:
    """The key ids under which each sealed column's values are encrypted."""
    found: dict[str, set[str]] = {}
    async with runtime.engine.connect() as connection:
        for sealed in SEALED_COLUMNS:
            column = Base.metadata.tables[sealed.table].c[sealed.column]
            values = (await connection.execute(select(column).where(column.is_not(None)))).scalars()
            found[f"{sealed.table}.{sealed.column}"] = {keyring.key_id_of(v) for v in values}
    return found


async def _broker(database: str, upstream: str, keyring: Keyring):
    runtime = build_runtime(broker_settings(database, upstream, keyring))
    await runtime.start()
    client = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)), base_url=BROKER_ISSUER
    )
    return runtime, client


async def test_rotation_reencrypts_everything_and_the_old_key_can_go(database, upstream_idp, idp):
    runtime, broker = await _broker(database, upstream_idp, OLD)
    try:
        tokens = await login(broker)  # upstream tokens sealed under "old"
        assert set().union(*(await _key_ids(runtime, OLD)).values()) == {"old"}
    finally:
        await broker.aclose()
        await runtime.stop()

    runtime, broker = await _broker(database, upstream_idp, NEW_FIRST)  # "new" encrypts now
    try:
        reports = await reencrypt_all(
            runtime.engine, NEW_FIRST, now=dt.datetime.now(dt.UTC), actor="test"
        )
        moved = {f"{r.column.table}.{r.column.column}": r.reencrypted for r in reports}
        assert moved["signing_keys.private_key_enc"] == 2
        assert moved["oauth2_tokens.access_token_enc"] >= 1
        assert all(report.remaining == 0 for report in reports)
        assert set().union(*(await _key_ids(runtime, NEW_FIRST)).values()) == {"new"}
        again = await reencrypt_all(
            runtime.engine, NEW_FIRST, now=dt.datetime.now(dt.UTC), actor="t"
        )
        assert sum(report.reencrypted for report in again) == 0  # idempotent
        audit = Base.metadata.tables["audit_actions"]
        async with runtime.engine.connect() as connection:
            events = await connection.scalar(
                select(func.count()).where(audit.c.action == "keyring.reencrypted")
            )
        assert events == 2
    finally:
        await broker.aclose()
        await runtime.stop()

    # Without the old key at all: the signing keys load, the session refreshes, the upstream
    # tokens decrypt.
    runtime, broker = await _broker(database, upstream_idp, NEW_ONLY)
    try:
        assert runtime.keys.loaded
        assert (await refresh(broker, tokens["refresh_token"])).status_code == 200
        table = Base.metadata.tables["oauth2_tokens"]
        async with runtime.engine.connect() as connection:
            row_id, sealed = (
                await connection.execute(select(table.c.id, table.c.access_token_enc))
            ).first()
        assert NEW_ONLY.decrypt(sealed, UPSTREAM_ACCESS_TOKEN.aad(row_id))
    finally:
        await broker.aclose()
        await runtime.stop()


async def test_a_value_written_meanwhile_is_not_overwritten(database, upstream_idp, idp):
    runtime, broker = await _broker(database, upstream_idp, OLD)
    try:
        await login(broker)
    finally:
        await broker.aclose()
        await runtime.stop()
    runtime = build_runtime(broker_settings(database, upstream_idp, NEW_FIRST))
    table = Base.metadata.tables["oauth2_tokens"]
    async with runtime.engine.connect() as connection:
        row_id = await connection.scalar(select(table.c.id))
    fresh = NEW_FIRST.encrypt(b"written by the worker", UPSTREAM_ACCESS_TOKEN.aad(row_id))
    libpq = make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)
    written = []

    def worker_writes_first(conn, cursor, statement, parameters, context, executemany):
        # Between the walk's read of the row and its write, "the worker" stores a new token.
        if statement.startswith("UPDATE oauth2_tokens") and not written:
            with psycopg.connect(libpq, autocommit=True) as other:
                other.execute(
                    "UPDATE oauth2_tokens SET access_token_enc = %s WHERE id = %s", (fresh, row_id)
                )
            written.append(True)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", worker_writes_first)
    try:
        reports = await reencrypt_all(
            runtime.engine,
            NEW_FIRST,
            now=dt.datetime.now(dt.UTC),
            actor="t",
            columns=[UPSTREAM_ACCESS_TOKEN],
        )
        async with runtime.engine.connect() as connection:
            stored = await connection.scalar(select(table.c.access_token_enc))
    finally:
        await runtime.engine.dispose()
    assert written
    assert stored == fresh  # the worker's value survived
    assert reports[0].remaining == 1 and reports[0].reencrypted == 0
