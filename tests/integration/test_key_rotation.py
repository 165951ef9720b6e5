"""Signing-key rotation on PostgreSQL: the schedule, publish-before-sign, retirement, revocation,
racing replicas, and the ``broker keys`` commands (docs/security.md "JWKS and key rotation")."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from broker.app import create_app
from broker.oauth.tokens import TokenInvalid, verify_access_token
from shared.clock import FrozenClock
from shared.crypto.keyring import Keyring
from shared.db.database import create_engine
from shared.db.migrate import upgrade_to_head
from shared.key_rotation import KeySchedule, UnknownKey, maintain_keys, revoke_key
from shared.models import SigningKey
from shared.runtime import build_runtime
from shared.settings import Settings, make_settings
from shared.signing_keys import KeyStore
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from tests.conftest import BROKER_ISSUER, ROOT, broker_settings
from tests.support.cli import run_broker_cli_here
from tests.support.databases import fresh_database, postgres_server_url
from tests.support.flows import authorize, exchange, refresh
from tests.support.processes import cli_env, run_broker_cli

pytestmark = pytest.mark.integration

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = 86400


@pytest.fixture(scope="module")
def keys_database() -> Iterator[str]:
    """A database of this module's own: these tests create, rotate and revoke keys."""
    with postgres_server_url() as server, fresh_database(server) as url:
        upgrade_to_head(url)
        yield url


@pytest.fixture
async def engine(keys_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(keys_database, pool_size=12)
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(delete(SigningKey))  # every test starts with no keys
    yield engine
    await engine.dispose()


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "signing_key_rotation_interval": 30 * DAY,
        "signing_key_lead": DAY,
        "jwks_max_age": 600,
    }
    return make_settings(**(values | overrides))


KEYRING = Keyring.generate("rot")
SETTINGS = _settings()
SCHEDULE = KeySchedule.from_settings(SETTINGS)
ALGS = ("ES256", "RS256")


async def _maintain(engine: AsyncEngine, now: dt.datetime, **kwargs: object) -> KeyStore:
    rows = await maintain_keys(engine, KEYRING, SCHEDULE, ALGS, now, **kwargs)  # type: ignore[arg-type]
    store = KeyStore(KEYRING, FrozenClock(now), ALGS)
    store.install(rows)
    return store


def _published(store: KeyStore) -> set[str]:
    return {key.kid for key in store.snapshot.verification.keys if key.kid}


async def test_the_first_run_creates_one_signing_key_per_algorithm(engine):
    store = await _maintain(engine, START)
    assert set(store.snapshot.signing) == {"ES256", "RS256"}
    assert len(_published(store)) == 2
    again = await _maintain(engine, START + dt.timedelta(hours=1))
    assert _published(again) == _published(store)  # nothing new until the schedule says so


async def test_the_next_key_is_published_a_lead_before_it_signs_and_the_old_one_lingers(engine):
    first = await _maintain(engine, START)
    es_first = first.snapshot.signer("ES256").kid
    before_lead = await _maintain(engine, START + dt.timedelta(days=29) - dt.timedelta(seconds=1))
    assert len(_published(before_lead)) == 2
    at_lead = await _maintain(engine, START + dt.timedelta(days=29))
    assert len(_published(at_lead)) == 4  # the next ES256 and RS256 keys are in JWKS...
    assert at_lead.snapshot.signer("ES256").kid == es_first  # ...but do not sign yet
    switched = await _maintain(engine, START + dt.timedelta(days=30))
    es_next = switched.snapshot.signer("ES256").kid
    assert es_next != es_first
    assert es_first in _published(switched)  # retired, still verifying what it signed
    longest = max(SETTINGS.access_token_ttl, SETTINGS.id_token_ttl)
    still = await _maintain(engine, START + dt.timedelta(days=30, seconds=longest))
    assert es_first in _published(still)
    gone = await _maintain(engine, START + dt.timedelta(days=30, seconds=longest + 3600))
    assert es_first not in _published(gone)
    assert gone.snapshot.signer("ES256").kid == es_next
    assert len(_published(gone)) == 2


async def test_replicas_maintaining_at_once_create_the_next_key_once(engine):
    await _maintain(engine, START)
    due = START + dt.timedelta(days=29, hours=1)
    await asyncio.gather(*(maintain_keys(engine, KEYRING, SCHEDULE, ALGS, due) for _ in range(10)))
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(select(SigningKey))).all()
    assert sorted(row.alg for row in rows) == ["ES256", "ES256", "RS256", "RS256"]


async def test_rotate_now_publishes_a_key_that_signs_after_one_jwks_max_age(engine):
    first = await _maintain(engine, START)
    await _maintain(engine, START + dt.timedelta(days=1), rotate_now=True, actor="cli")
    soon = START + dt.timedelta(days=1, seconds=SETTINGS.jwks_max_age)
    before = await _maintain(engine, soon - dt.timedelta(seconds=1))
    assert len(_published(before)) == 4
    assert before.snapshot.signer("ES256").kid == first.snapshot.signer("ES256").kid
    after = await _maintain(engine, soon)
    assert after.snapshot.signer("ES256").kid != first.snapshot.signer("ES256").kid


async def test_a_revoked_key_leaves_jwks_at_once_and_another_key_signs(engine):
    first = await _maintain(engine, START)
    es = first.snapshot.signer("ES256").kid
    rows = await revoke_key(engine, KEYRING, SCHEDULE, ALGS, es, START, actor="cli")
    store = KeyStore(KEYRING, FrozenClock(START), ALGS)
    store.install(rows)
    assert es not in _published(store)
    assert store.snapshot.signer("ES256").kid != es
    with pytest.raises(UnknownKey):
        await revoke_key(engine, KEYRING, SCHEDULE, ALGS, "nope", START, actor="cli")


async def test_revoking_the_signing_key_promotes_its_published_successor(engine):
    await _maintain(engine, START)
    lead = await _maintain(engine, START + dt.timedelta(days=29, hours=1))
    current = lead.snapshot.signer("ES256").kid
    async with AsyncSession(engine) as session:
        (successor,) = (
            await session.scalars(
                select(SigningKey.kid).where(
                    SigningKey.alg == "ES256",
                    SigningKey.activates_at > START + dt.timedelta(days=29),
                )
            )
        ).all()
    now = START + dt.timedelta(days=29, hours=2)
    rows = await revoke_key(engine, KEYRING, SCHEDULE, ALGS, current, now, actor="cli")
    store = KeyStore(KEYRING, FrozenClock(now), ALGS)
    store.install(rows)
    # The successor published a day ago (cached by every resource server) signs at once;
    # no new key appears.
    assert store.snapshot.signer("ES256").kid == successor
    assert current not in _published(store)
    assert len(_published(store)) == 3  # ES256 successor, RS256 current and next


async def test_tokens_of_a_revoked_key_are_refused_by_a_running_broker(
    keys_database, upstream_idp, idp
):
    settings = broker_settings(keys_database, upstream_idp, KEYRING, key_reload_interval=0.1)
    runtime = build_runtime(settings)
    await runtime.start()
    try:
        transport = httpx2.ASGITransport(app=create_app(runtime))
        async with httpx2.AsyncClient(transport=transport, base_url=BROKER_ISSUER) as broker:
            result = await authorize(broker, provider="dev")
            tokens = (await exchange(broker, result)).json()
            kid = runtime.keys.snapshot.signer("ES256").kid
            await revoke_key(
                runtime.engine,
                KEYRING,
                KeySchedule.from_settings(settings),
                ALGS,
                kid,
                runtime.clock.now(),
                actor="test",
            )
            await asyncio.sleep(0.5)  # the broker's key maintenance reloads within 0.1 s
            jwks = (await broker.get("/.well-known/jwks.json")).json()
            assert kid not in {key["kid"] for key in jwks["keys"]}
            info = await broker.get(
                "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
            )
            assert info.status_code == 401
            introspection = await broker.post(
                "/introspect",
                data={"token": tokens["access_token"]},
                auth=("backend", "backend-secret-at-least-32-characters"),
            )
            assert introspection.json() == {"active": False}
            fresh = await refresh(broker, tokens["refresh_token"])  # the session itself lives on
            assert fresh.status_code == 200
            with pytest.raises(TokenInvalid):
                verify_access_token(
                    tokens["access_token"], runtime.keys.snapshot, settings, runtime.clock.now()
                )
            verify_access_token(
                fresh.json()["access_token"], runtime.keys.snapshot, settings, runtime.clock.now()
            )
    finally:
        await runtime.stop()


def _cli(
    database_url: str, *args: str, keyring: Keyring = KEYRING
) -> subprocess.CompletedProcess[str]:
    """``broker keys ARGS`` through the CLI's ``main`` in this process."""
    env = cli_env(database_url=database_url, keyring=keyring)
    return run_broker_cli_here("keys", *args, env=env)


def _console_script(
    database_url: str, *args: str, keyring: Keyring = KEYRING
) -> subprocess.CompletedProcess[str]:
    """``broker keys ARGS`` as an operator runs it: the console script, a process."""
    env = cli_env(database_url=database_url, keyring=keyring)
    return run_broker_cli("keys", *args, env=env, cwd=ROOT)


async def test_the_keys_commands_rotate_list_and_revoke(keys_database, engine):
    await _maintain(engine, dt.datetime.now(dt.UTC))
    rotated = _cli(keys_database, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.count(" next ") == 2
    assert rotated.stdout.count(" signing ") == 2
    listed = _cli(keys_database, "list")
    kid = next(line.split()[0] for line in listed.stdout.splitlines() if " signing " in line)
    revoked = _cli(keys_database, "revoke", kid)
    assert revoked.returncode == 0, revoked.stderr
    assert f"{kid}" in revoked.stdout
    line = next(line for line in revoked.stdout.splitlines() if line.startswith(kid))
    assert " revoked " in line
    unknown = _cli(keys_database, "revoke", "no-such-kid")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "broker: no signing key has kid 'no-such-kid'"
    assert unknown.stdout == ""


async def test_rotate_encryption_moves_the_private_keys_to_the_new_key(keys_database, engine):
    await _maintain(engine, dt.datetime.now(dt.UTC))
    rotated = Keyring((Keyring.generate("next").keys[0], *KEYRING.keys))
    result = _console_script(keys_database, "rotate-encryption", keyring=rotated)
    assert result.returncode == 0, result.stderr
    assert "re-encrypted under key 'next'" in result.stdout
    line = next(
        line for line in result.stdout.splitlines() if "signing_keys.private_key_enc" in line
    )
    assert line.split()[-1] == "2"
    # The old key can leave the keyring now: the private keys decrypt with the new one alone.
    async with AsyncSession(engine) as session:
        rows = list((await session.scalars(select(SigningKey))).all())
    only_new = Keyring((rotated.keys[0],))
    store = KeyStore(only_new, FrozenClock(dt.datetime.now(dt.UTC)), ALGS)
    store.install(rows)
    assert store.loaded


def test_jwks_max_age_longer_than_the_lead_is_refused_at_startup(tmp_path, monkeypatch):
    from shared.config_file import ConfigError
    from shared.settings import load_settings

    monkeypatch.chdir(tmp_path)  # without a keyring the settings make the dev one in ./var

    with pytest.raises(ConfigError, match="BROKER_JWKS_MAX_AGE"):
        load_settings({"BROKER_JWKS_MAX_AGE": "7200", "BROKER_SIGNING_KEY_LEAD": "3600"})
    with pytest.raises(ConfigError, match="BROKER_SIGNING_KEY_LEAD"):
        load_settings(
            {"BROKER_SIGNING_KEY_LEAD": "100", "BROKER_SIGNING_KEY_ROTATION_INTERVAL": "100"}
        )
